"""Separation metrics: SI-SDR and its improvement (asteroid), SDR/SIR/SAR (museval, BSSEval v4).

Nothing here reimplements what the libraries compute; these are typed wrappers that fix the
shapes and conventions used across promptsep (a target estimate against the true target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from asteroid.losses.sdr import SingleSrcNegSDR

_neg_sisdr = SingleSrcNegSDR("sisdr", reduction="none")


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB (asteroid's definition, zero-mean).

    Shape:
        estimate, reference: ``(B, N)`` or ``(N,)`` -> ``(B,)`` or scalar.
    """
    single = estimate.dim() == 1
    est = estimate.reshape(-1, estimate.shape[-1]).double()
    ref = reference.reshape(-1, reference.shape[-1]).double()
    value = -_neg_sisdr(est, ref)
    return value[0] if single else value


def si_sdri(estimate: torch.Tensor, reference: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """SI-SDR improvement of ``estimate`` over the unprocessed ``mixture``, in dB.

    Shape:
        all inputs ``(B, N)`` or ``(N,)`` -> ``(B,)`` or scalar.
    """
    return si_sdr(estimate, reference) - si_sdr(mixture, reference)


@dataclass
class BssScores:
    """Median over frames of museval's BSSEval v4 image metrics for the target."""

    sdr: float
    sir: float
    sar: float


def bss_eval(
    target_estimate: np.ndarray,
    residual_estimate: np.ndarray,
    target: np.ndarray,
    residual: np.ndarray,
    sample_rate: int,
    window_s: float = 1.0,
) -> BssScores:
    """SDR/SIR/SAR of the target estimate with museval (two sources: target and residual).

    Shape:
        every array ``(N,)`` mono or ``(N, C)``.
    """
    import museval

    def stack(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a2 = a[:, None] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        return np.stack([a2, b2]).astype(np.float64)

    win = int(window_s * sample_rate)
    sdr, _isr, sir, sar = museval.evaluate(
        stack(target, residual), stack(target_estimate, residual_estimate), win=win, hop=win
    )

    def med(values: np.ndarray) -> float:
        finite = values[0][np.isfinite(values[0])]
        return float(np.median(finite)) if finite.size else float("nan")

    return BssScores(sdr=med(sdr), sir=med(sir), sar=med(sar))
