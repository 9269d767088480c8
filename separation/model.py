"""The separator: a DiT-style transformer over codec latent frames, conditioned on PE-AV prompts.

Inputs per latent frame (25 frames/s): the mixture latents and, for flow matching, the noisy state
of the [target, residual] latents. Conditioning:

- the pooled PE-AV prompt embedding (plus the flow time) modulates every block through adaptive
  RMSNorm (shift, scale, gate; DiT's adaLN-zero);
- per-token text states (or per-frame visual states) are read by cross-attention;
- visual frame features aligned to the latent frames enter through a gated projection;
- span anchors (one per frame: unknown / the target is on / the target is off) are embedded and added.

Outputs, per frame: target latents and residual latents (or their flow velocity).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file
from torch import nn

from encoders.errors import WeightsError
from encoders.files import save_tensors

SPAN_UNKNOWN, SPAN_ON, SPAN_OFF = 0, 1, 2


@dataclass
class SeparatorConfig:
    """Hyper-parameters of :class:`SeparatorModel`; serialised to ``config.json``."""

    latent_dim: int = 64
    cond_dim: int = 384
    token_dim: int = 384
    visual_dim: int = 384
    hidden_dim: int = 256
    num_layers: int = 6
    num_heads: int = 4
    mlp_ratio: float = 2.5
    rope_theta: float = 10000.0
    objective: str = "regression"  # "regression" or "flow"
    dropout: float = 0.0  # on each block's attention, cross-attention and MLP branch (training only)

    @classmethod
    def from_json(cls, path: Path) -> "SeparatorConfig":
        data = json.loads(Path(path).read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class RMSNorm(nn.Module):
    """Root-mean-square norm without a learned gain (the gain comes from adaptive modulation)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rope_tables(length: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables of rotary position embeddings. Shape: ``(T, head_dim / 2)`` each."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels. Shape: ``x (B, H, T, Dh)``, tables ``(T, Dh/2)``."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(rearrange(y, "b h t d -> b t (h d)"))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q = rearrange(self.q(x), "b t (h d) -> b h t d", h=self.heads)
        k, v = rearrange(self.kv(context), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        attn_mask = None if mask is None else rearrange(mask.bool(), "b l -> b 1 1 l")
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(rearrange(y, "b h t d -> b t (h d)"))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Self-attention, cross-attention to prompt tokens, SwiGLU; adaLN-zero modulation from the prompt."""

    def __init__(self, config: SeparatorConfig) -> None:
        super().__init__()
        dim = config.hidden_dim
        self.norm = RMSNorm()
        self.attn = SelfAttention(dim, config.num_heads)
        self.cross = CrossAttention(dim, config.token_dim, config.num_heads)
        self.mlp = SwiGLU(dim, int(dim * config.mlp_ratio))
        self.modulation = nn.Linear(dim, 9 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.config = config  # the model's own config object, so set_dropout reaches every block

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.config.dropout, self.training) if self.config.dropout else x

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        tokens: torch.Tensor | None,
        token_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        mods = rearrange(self.modulation(F.silu(cond)), "b (n d) -> n b 1 d", n=9)
        shift_a, scale_a, gate_a, shift_c, scale_c, gate_c, shift_m, scale_m, gate_m = mods
        x = x + (1 + gate_a) * self.drop(self.attn(self.norm(x) * (1 + scale_a) + shift_a, *rope))
        if tokens is not None:
            x = x + (1 + gate_c) * self.drop(self.cross(self.norm(x) * (1 + scale_c) + shift_c, tokens, token_mask))
        return x + (1 + gate_m) * self.drop(self.mlp(self.norm(x) * (1 + scale_m) + shift_m))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow time ``t`` in [0, 1]. Shape: ``(B,) -> (B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class SeparatorModel(nn.Module):
    """Predicts target and residual latents from mixture latents and a prompt.

    Shape:
        mixture ``(B, T, D)``; output ``(B, T, 2 * D)`` = [target | residual] (normalised latents,
        or their velocity under the flow objective).
    """

    def __init__(self, config: SeparatorConfig) -> None:
        super().__init__()
        self.config = config
        dim, latent = config.hidden_dim, config.latent_dim
        self.input_proj = nn.Linear(3 * latent, dim)  # mixture, noisy target, noisy residual
        self.cond_proj = nn.Sequential(nn.Linear(config.cond_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_proj = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null_cond = nn.Parameter(torch.zeros(config.cond_dim))
        self.span_embed = nn.Embedding(3, dim)
        nn.init.zeros_(self.span_embed.weight)
        self.visual_proj = nn.Linear(config.visual_dim, dim)
        self.visual_gate = nn.Parameter(torch.zeros(1))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_norm = RMSNorm()
        self.final_modulation = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.final_modulation.weight)
        nn.init.zeros_(self.final_modulation.bias)
        self.output_proj = nn.Linear(dim, 2 * latent)
        # Per-channel statistics of codec latents, set from training data; outputs live in this space.
        self.register_buffer("latent_mean", torch.zeros(latent))
        self.register_buffer("latent_std", torch.ones(latent))

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Codec latents ``(B, T, D)`` -> zero-mean unit-variance channels."""
        return (latents - self.latent_mean) / self.latent_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`; works on ``(..., D)``."""
        return latents * self.latent_std + self.latent_mean

    def forward(
        self,
        mixture: torch.Tensor,
        cond: torch.Tensor | None,
        tokens: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        visual: torch.Tensor | None = None,
        spans: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the network on normalised latents.

        Args:
            mixture: normalised mixture latents ``(B, T, D)``.
            cond: pooled prompt embedding ``(B, E)``; ``None`` uses the learned null prompt.
            tokens, token_mask: prompt token states ``(B, L, H)`` and validity ``(B, L)`` for cross-attention.
            visual: visual features aligned to latent frames ``(B, T, V)``.
            spans: span anchors per frame ``(B, T)`` with values SPAN_UNKNOWN / SPAN_ON / SPAN_OFF.
            state: flow-matching state of [target | residual] ``(B, T, 2D)``; zeros for regression.
            time: flow time ``(B,)`` in [0, 1]; zeros for regression.

        Returns:
            ``(B, T, 2D)``: [target | residual] latents (regression) or velocity (flow).
        """
        batch, frames, _ = mixture.shape
        if state is None:
            state = mixture.new_zeros(batch, frames, 2 * self.config.latent_dim)
        if time is None:
            time = mixture.new_zeros(batch)
        if cond is None:
            cond = self.null_cond.expand(batch, -1)
        x = self.input_proj(torch.cat([mixture, state], dim=-1))
        if spans is not None:
            x = x + self.span_embed(spans.long())
        if visual is not None:
            x = x + torch.tanh(self.visual_gate) * self.visual_proj(visual)
        c = self.cond_proj(cond) + self.time_proj(timestep_embedding(time, self.config.hidden_dim))
        head_dim = self.config.hidden_dim // self.config.num_heads
        rope = rope_tables(frames, head_dim, self.config.rope_theta, mixture.device)
        for block in self.blocks:
            x = block(x, c, tokens, token_mask, rope)
        shift, scale = rearrange(self.final_modulation(F.silu(c)), "b (n d) -> n b 1 d", n=2)
        return self.output_proj(self.final_norm(x) * (1 + scale) + shift)

    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
        """Write ``config.json`` and ``model.safetensors`` (floating weights cast to ``dtype``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in self.state_dict().items()}
        save_tensors(state, path / "model.safetensors")

    def set_dropout(self, p: float) -> None:
        """Dropout on every block's branches from now on (recorded in the config); active in train mode only."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.config.dropout = p  # the blocks read it from the shared config

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "SeparatorModel":
        """Load a folder written by :meth:`save_pretrained`; a missing file raises WeightsError."""
        path = Path(path)
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise WeightsError(f"separator weights incomplete: {path / name} is missing")
        model = cls(SeparatorConfig.from_json(path / "config.json"))
        state = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsError(f"{path}: separator weights do not match (missing {missing}, unexpected {unexpected})")
        return model.eval()


def average_separators(paths: Sequence[str | Path], weights: Sequence[float] | None = None) -> SeparatorModel:
    """One separator whose weights are the (weighted) mean of several saved separators of one architecture
    (e.g. a run and the run it was resumed from). Raises ``ValueError`` when the configurations differ."""
    if not paths:
        raise ValueError("average_separators: no separators given")
    weights = [1.0 / len(paths)] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"average_separators: {len(paths)} separators need as many weights summing to 1, got {weights}")
    models = [SeparatorModel.from_pretrained(path) for path in paths]
    for path, model in zip(paths[1:], models[1:], strict=True):
        if asdict(model.config) != asdict(models[0].config):
            raise ValueError(f"average_separators: {path} has another configuration than {paths[0]}")
    states = [m.state_dict() for m in models]
    mean = {
        key: sum(w * state[key].float() for w, state in zip(weights, states, strict=True)) if value.is_floating_point() else value
        for key, value in states[0].items()
    }
    models[0].load_state_dict(mean)
    return models[0]
