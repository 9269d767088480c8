"""Mixture-consistent output: turn decoded target/residual estimates into a ratio mask on the mixture.

The codec's decoded tracks only shape a mask on the mixture's STFT, so the two outputs keep the
mixture's phase and add up to the mixture exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-8


def _stft(wav: Tensor, n_fft: int, hop: int, window: Tensor) -> Tensor:
    """``(..., N)`` -> complex ``(..., F, frames)``."""
    shape = wav.shape
    spec = torch.stft(wav.reshape(-1, shape[-1]), n_fft, hop, window=window, return_complex=True, center=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def ratio_mask_separate(
    mixture: Tensor,
    target_est: Tensor,
    residual_est: Tensor,
    n_fft: int = 1024,
    hop: int = 256,
    power: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Split ``mixture`` with the ratio mask ``|T|^p / (|T|^p + |R|^p)`` of two estimates.

    The target is ``istft(mask * STFT(mixture))`` and the residual is ``mixture - target``, so
    ``target + residual == mixture`` exactly (up to float rounding).

    Shape:
        mixture, target_est, residual_est: ``(..., N)`` (same shape, e.g. ``(B, C, N)``)
        returns target, residual: ``(..., N)``
    """
    if not (mixture.shape == target_est.shape == residual_est.shape):
        raise ValueError(
            f"ratio_mask_separate: shapes differ {tuple(mixture.shape)}, "
            f"{tuple(target_est.shape)}, {tuple(residual_est.shape)}"
        )
    length = mixture.shape[-1]
    window = torch.hann_window(n_fft, device=mixture.device, dtype=mixture.dtype)
    mix_spec = _stft(mixture, n_fft, hop, window)
    target_mag = _stft(target_est, n_fft, hop, window).abs().pow(power)
    residual_mag = _stft(residual_est, n_fft, hop, window).abs().pow(power)
    mask = target_mag / (target_mag + residual_mag + EPS)
    masked = (mix_spec * mask).reshape(-1, *mix_spec.shape[-2:])
    target = torch.istft(masked, n_fft, hop, window=window, center=True, length=length)
    target = target.reshape(mixture.shape)
    return target, mixture - target


def ideal_ratio_mask_separate(
    mixture: Tensor, target: Tensor, residual: Tensor, n_fft: int = 1024, hop: int = 256
) -> tuple[Tensor, Tensor]:
    """Oracle: :func:`ratio_mask_separate` with the true target and residual. Shapes as there."""
    return ratio_mask_separate(mixture, target, residual, n_fft, hop)
