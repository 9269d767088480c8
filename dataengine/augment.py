"""On-the-fly augmentation of training sources (never applied to val/test sets).

All functions take and return float32 numpy waveforms of shape ``(N,)`` and keep the length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation."""

    reverb_p: float = 0.4
    rt60: tuple[float, float] = (0.15, 1.2)
    wet: tuple[float, float] = (0.1, 0.6)
    eq_p: float = 0.5
    eq_gain_db: tuple[float, float] = (-9.0, 9.0)
    eq_freq: tuple[float, float] = (150.0, 5000.0)
    speed_p: float = 0.3
    speed: tuple[float, float] = (0.92, 1.08)
    gain_db: tuple[float, float] = (-3.0, 3.0)
    noise_p: float = 0.3
    noise_snr_db: tuple[float, float] = (15.0, 40.0)


def synthetic_rir(rng: np.random.Generator, rate: int, rt60: float) -> np.ndarray:
    """Exponentially decaying noise impulse response with reverberation time ``rt60`` (s), unit energy.
    Shape ``(L,)``. Its first tap is small (about ``1 / L`` of the energy): it is the reverberant tail, and
    :func:`reverb` supplies the direct path by mixing the dry signal back in."""
    length = max(1, int(rt60 * rate))
    t = np.arange(length) / rate
    decay = np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    rir = rng.standard_normal(length) * decay
    rir[0] = 1.0 / max(1e-3, np.sqrt(np.sum(rir[1:] ** 2)))
    return (rir / np.sqrt(np.sum(rir**2))).astype(np.float32)


def reverb(wav: np.ndarray, rng: np.random.Generator, rate: int, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Convolve with a synthetic room impulse response and mix wet/dry; RMS preserved."""
    from scipy.signal import fftconvolve

    rir = synthetic_rir(rng, rate, float(rng.uniform(*config.rt60)))
    wet = fftconvolve(wav, rir)[: len(wav)].astype(np.float32)
    amount = float(rng.uniform(*config.wet))
    out = (1 - amount) * wav + amount * wet
    return _match_rms(out, wav)


def equalize(wav: np.ndarray, rng: np.random.Generator, rate: int, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Random peaking biquad (torchaudio ``equalizer_biquad``), then a random low/high shelf-ish pass."""
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    freq = float(np.exp(rng.uniform(np.log(config.eq_freq[0]), np.log(config.eq_freq[1]))))
    x = torchaudio.functional.equalizer_biquad(x, rate, freq, float(rng.uniform(*config.eq_gain_db)), Q=float(rng.uniform(0.5, 2.0)))
    if rng.random() < 0.3:
        x = torchaudio.functional.lowpass_biquad(x, rate, float(rng.uniform(2500, rate / 2 - 500)))
    elif rng.random() < 0.3:
        x = torchaudio.functional.highpass_biquad(x, rate, float(rng.uniform(40, 400)))
    out = x.numpy()
    if not np.isfinite(out).all():
        return wav
    return _match_rms(out, wav)


def change_speed(wav: np.ndarray, rng: np.random.Generator, rate: int, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Small joint pitch/tempo change by resampling (the resample trick); length kept by crop/pad."""
    factor = float(rng.uniform(*config.speed))
    new_rate = int(round(rate * factor / 100)) * 100
    if new_rate == rate:
        return wav
    out = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), new_rate, rate).numpy()
    return _fit(out, len(wav))


def add_noise(wav: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Add coloured (white/pink/brown) background noise at a random SNR."""
    noise = rng.standard_normal(len(wav)).astype(np.float32)
    colour = rng.integers(3)
    if colour > 0:
        spectrum = np.fft.rfft(noise)
        freqs = np.arange(len(spectrum)) + 1.0
        spectrum /= freqs ** (0.5 * colour)
        noise = np.fft.irfft(spectrum, n=len(wav)).astype(np.float32)
    power = np.mean(wav**2) + 1e-10
    snr = float(rng.uniform(*config.noise_snr_db))
    noise *= np.sqrt(power / (np.mean(noise**2) + 1e-12) / 10 ** (snr / 10))
    return (wav + noise).astype(np.float32)


def augment_source(wav: np.ndarray, rng: np.random.Generator, rate: int, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """The per-source training chain: speed, EQ, reverb, gain (each with its probability)."""
    if rng.random() < config.speed_p:
        wav = change_speed(wav, rng, rate, config)
    if rng.random() < config.eq_p:
        wav = equalize(wav, rng, rate, config)
    if rng.random() < config.reverb_p:
        wav = reverb(wav, rng, rate, config)
    return (wav * np.float32(10 ** (rng.uniform(*config.gain_db) / 20))).astype(np.float32)


def _match_rms(out: np.ndarray, reference: np.ndarray) -> np.ndarray:
    scale = np.sqrt((np.mean(reference**2) + 1e-12) / (np.mean(out**2) + 1e-12))
    return (out * scale).astype(np.float32)


def _fit(wav: np.ndarray, length: int) -> np.ndarray:
    if len(wav) >= length:
        return wav[:length]
    return np.pad(wav, (0, length - len(wav)))
