"""The splitter: a small class-agnostic two-output separator whose masks sharpen promptsep's.

promptsep's masks come from a codec at 25 latent frames per second and a prompt it may only half recognise; a
waveform-domain separator that knows nothing of prompts (asteroid's ConvTasNet, 2 outputs, trained with PIT on the
data engine's mixtures: the benchmark's ``convtasnet`` baseline trained on, grown to 8 blocks per repeat, 167 CPU
minutes in all) splits the mixture far more sharply in time but cannot say which of its two outputs is the prompted
sound. Together: each prompt takes the output whose ratio mask is closest to its own (power-weighted squared
difference over the mixture's STFT), and the two masks are joined as a weighted geometric mean,
``m_prompt^(1-w) * m_split^w``. A bin stays in the target only where both agree.

Chosen on val among 0.3 and 0.5, then confirmed on test (benchmarks/RESULTS.md, "The splitter"): ``w = 0.5``, scaled down per prompt
and chunk when the pick is unclear (``soft``); raised to 0.7 in session 40 after three test draws each gained a little.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from encoders.errors import WeightsError
from separation.masking import stft


class Splitter:
    """A two-output separator (``(1, N)`` -> ``(1, 2, N)``) at ``sample_rate``, read as two ratio masks.

    ``model`` may be a zero-argument function that builds it: it is then called at the first use (see
    :meth:`from_pretrained`).
    """

    def __init__(self, model: torch.nn.Module | Callable[[], torch.nn.Module], sample_rate: int) -> None:
        self._model = model.eval() if isinstance(model, torch.nn.Module) else None
        self._build = None if self._model is not None else model
        self.sample_rate = int(sample_rate)
        self.device = torch.device("cpu")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Splitter":
        """A folder written by :func:`separation.baselines.save_baseline` for ``convtasnet`` (``config.json`` +
        ``model.safetensors``, fp16 or fp32). Only the config is read here; the weights load at the first use,
        since importing asteroid takes about a second that a Separator run with ``splitter_weight`` 0 should not
        pay."""
        config_file = Path(path) / "config.json"
        if not config_file.is_file():
            raise WeightsError(f"splitter file {config_file} is missing")
        config = json.loads(config_file.read_text())
        if config.get("which") != "convtasnet":
            raise WeightsError(f"{path}: a splitter is a two-output ConvTasNet, not {config.get('which')!r}")

        def build() -> torch.nn.Module:
            from separation.baselines import load_baseline

            return load_baseline(path).model.float()

        return cls(build, config["model"]["sample_rate"])

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self._build().eval().to(self.device)
        return self._model

    def load(self) -> "Splitter":
        """Load the weights now instead of at the first use (a benchmark times separation without the loading)."""
        _ = self.model
        return self

    def to(self, device: str | torch.device) -> "Splitter":
        self.device = torch.device(device)
        if self._model is not None:
            self._model.to(self.device)
        return self

    @torch.no_grad()
    def masks(self, mixture: Tensor, n_fft: int, hop: int) -> tuple[Tensor, Tensor]:
        """The two outputs' ratio masks on the STFT of ``mixture`` and that STFT's power.

        Shape:
            mixture ``(N,)`` mono at :attr:`sample_rate` -> masks ``(2, F, frames)`` summing to one (where the
            outputs have any energy), power ``(F, frames)``.
        """
        outputs = self.model(mixture.to(self.device)[None].float())[0][:, : mixture.shape[-1]].cpu()
        magnitudes = stft(outputs, n_fft, hop).abs()
        masks = magnitudes / magnitudes.sum(0, keepdim=True).clamp(min=1e-8)
        return masks, stft(mixture.cpu().float(), n_fft, hop).abs().square()


def fuse_masks(masks: Tensor, split: Tensor, power: Tensor, weight: float, soft: bool = False) -> Tensor:
    """Each prompt's mask joined with the splitter's closest output: ``masks^(1 - w) * split_k^w``.

    ``w`` is ``weight``, or with ``soft`` ``weight * (1 - d_near / d_far)``: the less clearly one output is nearer
    (``d`` the power-weighted squared distances to the two), the less the splitter counts.

    Shape:
        masks ``(P, F, frames)`` promptsep's, in ``[0, 1]``; split ``(2, F, frames)`` the splitter's; power
        ``(F, frames)`` the mixture's STFT power (weights the choice) -> ``(P, F, frames)``.
    """
    if weight <= 0:
        return masks
    distance = ((split[None] - masks[:, None]).square() * power).flatten(2).sum(-1)  # (P, 2)
    near, far = distance.min(dim=1), distance.max(dim=1).values
    chosen = split[near.indices]
    w = weight * (1.0 - near.values / far.clamp(min=1e-12)) if soft else torch.full_like(far, weight)
    w = w[:, None, None]
    return masks.clamp(min=0).pow(1.0 - w) * chosen.pow(w)
