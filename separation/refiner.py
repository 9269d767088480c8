"""Mask refiner: sharpen the mixture-consistent ratio mask beyond what the codec's decoded tracks give.

The mixture-consistent output masks the mixture's STFT with ``|T|/(|T|+|R|)`` of the decoded target and
residual estimates. A small CPU-trained codec blurs magnitudes, so even the true latents only reach a
fraction of the ideal ratio mask's quality (the codec-mask oracle). The refiner looks at the mixture's
spectrogram beside the two decoded spectrograms and that first mask, and corrects the mask in the logit
domain. Its last layer starts at zero, so an untrained refiner returns the plain ratio mask (within 1e-4).

By default it is prompt-agnostic: the prompt already shaped the decoded estimates (``cond_dim`` > 0 adds
FiLM from the pooled prompt embedding; measured worse so far, see "The mask refiner" in benchmarks/HISTORY.md). The network treats the
frequency bins of a frame as channels and convolves over time (dilated residual blocks), so it costs
about 0.3 G multiply-adds per second of audio. Inputs are scaled by the mixture's RMS, so it is level-invariant.

That bins-as-channels branch sees a whole frame at once but squeezes its 257 bins through ``channels`` features,
so it cannot draw a correction finer than the codec's blur along frequency. ``tf_channels`` > 0 adds a second,
time-frequency branch: small 2-D convolutions over (frequency, time) with the same four features per bin, whose
zero-initialised output is added to the first branch's logit correction. A trained bins-only refiner therefore
loads into a two-branch one unchanged (``init_from``) and starts exactly where it was. With 16 channels and
three blocks the branch adds about 0.27 G multiply-adds per second of audio, as much again as the first.

Its blocks are dilated along time only, so each point sees 9 frequency bins (about 280 Hz at 16 kHz).
``tf_freq_layers`` > 0 appends blocks dilated along frequency (2, 4, 8, ... bins) to widen that view; their
pointwise output starts at zero, so each is the identity when added and a trained refiner grows them
(``init_from``) starting exactly where it was.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from encoders.errors import WeightsError
from encoders.files import save_tensors
from separation.masking import istft, ratio_mask, stft

MAG_FLOOR = 1e-5  # magnitude floor (relative to a unit-RMS mixture) of the log features
LOGIT_CLAMP = 1e-4  # the first mask is clamped to [c, 1 - c] before its logit


@dataclass
class RefinerConfig:
    """Hyper-parameters of :class:`MaskRefiner`; serialised to ``config.json``."""

    n_fft: int = 512
    hop: int = 128
    channels: int = 256
    layers: int = 4
    power: float = 1.0  # of the first ratio mask |T|^p / (|T|^p + |R|^p)
    cond_dim: int = 0  # > 0: every block is modulated (FiLM) by the pooled prompt embedding of this size
    tf_channels: int = 0  # > 0: add the time-frequency branch with this many channels
    tf_layers: int = 3  # its residual blocks (time dilations 1, 2, 4, ...)
    tf_freq_layers: int = 0  # then this many blocks dilated along frequency (2, 4, 8, ... bins), zero-initialised
    sample_rate: int = 16000  # of the audio it was trained on: n_fft and hop are in samples, so it fits one rate

    @classmethod
    def from_json(cls, path: Path) -> "RefinerConfig":
        data = json.loads(Path(path).read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def grown(self, tf_channels: int, tf_layers: int, tf_freq_layers: int) -> "RefinerConfig":
        """These settings with the time-frequency branch that a trained refiner can grow at zero: the whole branch
        when it has none, else more frequency-dilated blocks when more are asked for (never fewer)."""
        if not self.tf_channels:
            return replace(self, tf_channels=tf_channels, tf_layers=tf_layers, tf_freq_layers=tf_freq_layers)
        return replace(self, tf_freq_layers=max(self.tf_freq_layers, tf_freq_layers))


class _ChannelNorm(nn.LayerNorm):
    """Layer norm over the channels (dim 1) of each frame of ``(B, C, T)`` or each point of ``(B, C, F, T)`` (no
    statistics across time, so a frame's output depends only on its receptive field, not on the chunk's length)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class _Block(nn.Module):
    """Pre-norm residual block: dilated temporal conv, GELU, pointwise conv; the norm's output is scaled and
    shifted by the prompt embedding when ``cond_dim`` > 0 (zero-initialised, so it starts unconditioned)."""

    def __init__(self, channels: int, dilation: int, cond_dim: int = 0) -> None:
        super().__init__()
        self.norm = _ChannelNorm(channels)
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)
        self.film = nn.Linear(cond_dim, 2 * channels) if cond_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.norm(x)
        if self.film is not None and cond is not None:
            scale, shift = self.film(cond)[..., None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return x + self.mix(F.gelu(self.conv(h)))


class _TFBlock(nn.Module):
    """Pre-norm residual block over (frequency, time): a 3x3 conv dilated along time (or frequency), GELU, a
    pointwise conv (zero-initialised when ``identity``, so the block starts as the identity)."""

    def __init__(self, channels: int, dilation: int, freq_dilation: int = 1, identity: bool = False) -> None:
        super().__init__()
        self.norm = _ChannelNorm(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=(freq_dilation, dilation), dilation=(freq_dilation, dilation))
        self.mix = nn.Conv2d(channels, channels, 1)
        if identity:
            nn.init.zeros_(self.mix.weight)
            nn.init.zeros_(self.mix.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(F.gelu(self.conv(self.norm(x))))


class _TFBranch(nn.Module):
    """Per-bin logit correction from the ``(B, 4, F, T)`` features; its output starts at zero."""

    def __init__(self, channels: int, layers: int, freq_layers: int = 0) -> None:
        super().__init__()
        self.input = nn.Conv2d(4, channels, 3, padding=1)
        self.blocks = nn.Sequential(
            *(_TFBlock(channels, 2**i) for i in range(layers)),
            *(_TFBlock(channels, 1, freq_dilation=2 ** (i + 1), identity=True) for i in range(freq_layers)),
        )
        self.norm = _ChannelNorm(channels)
        self.output = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, features: Tensor) -> Tensor:
        # channels-last keeps each point's channels adjacent: the per-point norms then read contiguous memory instead
        # of copying, and oneDNN's convolutions run faster (about 1.3x for this branch on CPU, same values)
        features = features.contiguous(memory_format=torch.channels_last)
        return self.output(F.gelu(self.norm(self.blocks(self.input(features))))).squeeze(1)


class MaskRefiner(nn.Module):
    """Refines the ratio mask of decoded target / residual estimates on the mixture's STFT."""

    def __init__(self, config: RefinerConfig | None = None) -> None:
        super().__init__()
        self.config = config or RefinerConfig()
        bins = self.config.n_fft // 2 + 1
        width = self.config.channels
        self.input = nn.Conv1d(4 * bins, width, 5, padding=2)
        self.blocks = nn.ModuleList(_Block(width, 2**i, self.config.cond_dim) for i in range(self.config.layers))
        self.norm = _ChannelNorm(width)
        self.output = nn.Conv1d(width, bins, 1)
        nn.init.zeros_(self.output.weight)  # starts as the identity: the plain ratio mask
        nn.init.zeros_(self.output.bias)
        cfg = self.config
        self.tf = _TFBranch(cfg.tf_channels, cfg.tf_layers, cfg.tf_freq_layers) if cfg.tf_channels else None

    def masks(self, mixture: Tensor, targets: Tensor, residuals: Tensor, cond: Tensor | None = None) -> Tensor:
        """Refined masks of each estimate pair on the mixture's STFT grid (``config.n_fft`` / ``hop``).

        Shape:
            mixture ``(N,)`` shared or ``(B, N)`` one per pair; targets, residuals ``(B, N)``; cond ``(B, E)``
            pooled prompt embeddings (used when ``config.cond_dim`` > 0) -> masks ``(B, F, frames)`` in (0, 1).
        """
        cfg = self.config
        if mixture.dim() == 1:
            mixture = mixture.expand_as(targets)
        scale = mixture.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)  # (B, 1)
        mags = stft(torch.stack([mixture, targets, residuals]) / scale, cfg.n_fft, cfg.hop).abs()  # (3, B, F, T)
        first = ratio_mask(mags[1], mags[2], cfg.power)
        logs = torch.log(mags + MAG_FLOOR)
        features = torch.stack([logs[0], logs[1], logs[2], 2 * first - 1], dim=1)  # (B, 4, F, T)
        x = self.input(features.flatten(1, 2))  # the bins of a frame as channels: (B, 4F, T)
        for block in self.blocks:
            x = block(x, cond)
        delta = self.output(F.gelu(self.norm(x)))
        if self.tf is not None:
            delta = delta + self.tf(features)
        return torch.sigmoid(torch.logit(first.clamp(LOGIT_CLAMP, 1 - LOGIT_CLAMP)) + delta)

    def separate(self, mixture: Tensor, targets: Tensor, residuals: Tensor, cond: Tensor | None = None) -> Tensor:
        """Mixture-consistent targets with the refined masks. Shape: as :meth:`masks` -> ``(B, N)``."""
        cfg = self.config
        if mixture.dim() == 1:
            mixture = mixture.expand_as(targets)
        spec = stft(mixture, cfg.n_fft, cfg.hop)
        return istft(self.masks(mixture, targets, residuals, cond) * spec, cfg.n_fft, cfg.hop, mixture.shape[-1])

    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
        """Write ``config.json`` and ``model.safetensors`` (weights cast to ``dtype``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        save_tensors({k: v.to(dtype).contiguous() for k, v in self.state_dict().items()}, path / "model.safetensors")

    def init_from(self, other: "MaskRefiner") -> "MaskRefiner":
        """Copy a trained refiner's weights into this one. Its settings must equal this refiner's, except that it
        may lack the time-frequency branch, or some of its frequency-dilated blocks; those keep their zero start (so
        the result computes exactly what ``other`` did). Raises WeightsError otherwise."""
        mine = self.config
        if other.config.grown(mine.tf_channels, mine.tf_layers, mine.tf_freq_layers) != mine:
            raise WeightsError(f"refiner settings {asdict(other.config)} cannot start {asdict(mine)}")
        self.load_state_dict(other.state_dict(), strict=False)  # settings match: only the grown blocks are missing
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "MaskRefiner":
        """Load a folder written by :meth:`save_pretrained`; a missing or mismatched file raises WeightsError."""
        path = Path(path)
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise WeightsError(f"refiner weights incomplete: {path / name} is missing")
        model = cls(RefinerConfig.from_json(path / "config.json"))
        state = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsError(f"{path}: refiner weights do not match (missing {missing}, unexpected {unexpected})")
        return model.eval()
