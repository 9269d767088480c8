"""Training objectives of the separator and the matching samplers.

Two ways to produce [target | residual] latents from the mixture and the prompt:

- **regression**: one forward pass predicts the normalised latents; trained with an L1 loss on
  latents (plus an optional waveform loss through the frozen codec decoder, see ``separation/train.py``).
- **flow matching** (as SAM-Audio): a straight path from Gaussian noise ``x0`` to the data ``x1``,
  ``x_t = (1 - t) x0 + t x1``; the network predicts the velocity ``x1 - x0``; an ODE solver with a
  configurable step count integrates it at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from separation.model import SeparatorModel

SOLVERS = ("euler", "midpoint")


@dataclass
class Conditioning:
    """Everything the separator is conditioned on, batched.

    Shape:
        cond ``(B, E)`` or None; tokens ``(B, L, H)``; token_mask ``(B, L)``; visual ``(B, T, V)``;
        spans ``(B, T)``.
    """

    cond: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    visual: torch.Tensor | None = None
    spans: torch.Tensor | None = None

    def as_kwargs(self) -> dict:
        return {
            "cond": self.cond,
            "tokens": self.tokens,
            "token_mask": self.token_mask,
            "visual": self.visual,
            "spans": self.spans,
        }


def regression_loss(
    model: SeparatorModel, mixture: torch.Tensor, sources: torch.Tensor, conditioning: Conditioning
) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 between predicted and true normalised [target | residual] latents.

    Shape:
        mixture ``(B, T, D)``, sources ``(B, T, 2D)`` (both normalised) -> (scalar loss, prediction ``(B, T, 2D)``).
    """
    prediction = model(mixture, **conditioning.as_kwargs())
    return F.l1_loss(prediction, sources), prediction


def flow_matching_loss(
    model: SeparatorModel,
    mixture: torch.Tensor,
    sources: torch.Tensor,
    conditioning: Conditioning,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional flow matching with straight paths (rectified flow).

    Returns the MSE of the predicted velocity and the one-step estimate of ``x1``
    (``x_t + (1 - t) v``), which a waveform loss may use.
    """
    batch = mixture.shape[0]
    noise = torch.randn(sources.shape, generator=generator, device=sources.device, dtype=sources.dtype)
    time = torch.rand(batch, generator=generator, device=sources.device, dtype=sources.dtype)
    t = time[:, None, None]
    state = (1 - t) * noise + t * sources
    velocity = model(mixture, state=state, time=time, **conditioning.as_kwargs())
    loss = F.mse_loss(velocity, sources - noise)
    return loss, state + (1 - t) * velocity


@torch.no_grad()
def sample_flow(
    model: SeparatorModel,
    mixture: torch.Tensor,
    conditioning: Conditioning,
    steps: int = 8,
    solver: str = "midpoint",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integrate the learned velocity field from noise (t=0) to data (t=1).

    Shape:
        mixture ``(B, T, D)`` -> ``(B, T, 2D)`` normalised [target | residual] latents.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown ODE solver {solver!r}; choose one of {SOLVERS}")
    if steps < 1:
        raise ValueError("the ODE solver needs at least one step")
    batch, frames, dim = mixture.shape
    x = torch.randn(batch, frames, 2 * dim, generator=generator, device=mixture.device, dtype=mixture.dtype)
    kwargs = conditioning.as_kwargs()
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((batch,), i * dt, device=mixture.device, dtype=mixture.dtype)
        v = model(mixture, state=x, time=t, **kwargs)
        if solver == "midpoint":
            v = model(mixture, state=x + 0.5 * dt * v, time=t + 0.5 * dt, **kwargs)
        x = x + dt * v
    return x


@torch.no_grad()
def predict_sources(
    model: SeparatorModel,
    mixture: torch.Tensor,
    conditioning: Conditioning,
    steps: int = 8,
    solver: str = "midpoint",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised [target | residual] latents by the model's own objective.

    Shape:
        mixture ``(B, T, D)`` normalised -> ``(B, T, 2D)``.
    """
    if model.config.objective == "flow":
        return sample_flow(model, mixture, conditioning, steps=steps, solver=solver, generator=generator)
    return model(mixture, **conditioning.as_kwargs())
