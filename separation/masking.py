"""Mixture-consistent output: turn decoded target/residual estimates into a ratio mask on the mixture.

The codec's decoded tracks only shape a mask on the mixture's STFT, so the two outputs keep the
mixture's phase and add up to the mixture exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-8


def stft(wav: Tensor, n_fft: int, hop: int, window: Tensor | None = None) -> Tensor:
    """Complex STFT with a Hann window. Shape: ``(..., N)`` -> ``(..., F, frames)``."""
    if window is None:
        window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    shape = wav.shape
    spec = torch.stft(wav.reshape(-1, shape[-1]), n_fft, hop, window=window, return_complex=True, center=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: Tensor, n_fft: int, hop: int, length: int) -> Tensor:
    """Inverse of :func:`stft`. Shape: ``(..., F, frames)`` -> ``(..., length)``."""
    window = torch.hann_window(n_fft, device=spec.device)
    wav = torch.istft(spec.reshape(-1, *spec.shape[-2:]), n_fft, hop, window=window, center=True, length=length)
    return wav.reshape(*spec.shape[:-2], length)


def ratio_mask(target_mag: Tensor, residual_mag: Tensor, power: float) -> Tensor:
    """``|T|^p / (|T|^p + |R|^p)`` of two magnitude spectrograms (same shape in and out), in [0, 1]."""
    t_pow, r_pow = target_mag.pow(power), residual_mag.pow(power)
    return t_pow / (t_pow + r_pow + EPS)


def share_masks(masks: Tensor) -> Tensor:
    """Scale the masks of P prompts ``(P, F, frames)`` so that they sum to at most one in every bin."""
    return masks / masks.sum(0, keepdim=True).clamp(min=1.0)


def floor_masks(masks: Tensor, floor: float) -> Tensor:
    """Raise P prompts' masks ``(P, F, frames)`` (summing to at most one) to at least ``floor`` each, as
    ``floor + (1 - P * floor) * m``, so they still sum to at most one. A target then never drops more
    than ``-20 log10(floor)`` dB below the mixture (a noise suppressor's attenuation limit); ``floor`` is
    capped at ``1 / P``. 0 leaves the masks as they are."""
    if floor <= 0:
        return masks
    floor = min(float(floor), 1.0 / masks.shape[0])
    return floor + (1.0 - masks.shape[0] * floor) * masks


def prompt_masks(targets: Tensor, residuals: Tensor, n_fft: int, hop: int, power: float) -> Tensor:
    """Ratio masks of P prompts from decoded estimates, scaled so that they sum to at most one.

    Shape:
        targets, residuals ``(P, N)`` -> masks ``(P, F, frames)`` in [0, 1] with ``sum_p <= 1``.
    """
    return share_masks(ratio_mask(stft(targets, n_fft, hop).abs(), stft(residuals, n_fft, hop).abs(), power))


def carry_masks(masks: Tensor, n_bins: int, n_frames: int) -> Tensor:
    """Carry masks made at the model rate onto another rate's STFT grid with the same bin spacing in Hz.

    Bins below the model's Nyquist map one to one, bins above it take the top bin's value, and time
    is linearly interpolated to ``n_frames``.

    Shape:
        ``(P, F, T)`` -> ``(P, n_bins, n_frames)``.
    """
    if masks.shape[-1] != n_frames:
        masks = torch.nn.functional.interpolate(masks, size=n_frames, mode="linear", align_corners=True)
    bins = masks.shape[1]
    if n_bins <= bins:
        return masks[:, :n_bins]
    return torch.cat([masks, masks[:, -1:].expand(-1, n_bins - bins, -1)], dim=1)


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
    # one prompt: the mask of prompt_masks, never rescaled since a single ratio mask is <= 1
    mask = prompt_masks(target_est[None], residual_est[None], n_fft, hop, power)[0]
    target = istft(stft(mixture, n_fft, hop) * mask, n_fft, hop, mixture.shape[-1])
    return target, mixture - target

