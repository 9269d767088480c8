"""Per-clip audio processing of the data engine: mono, resample, trim, segment, loudness.

Waveforms here are float32 numpy arrays of shape ``(N,)`` (mono) unless stated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio

TARGET_LUFS = -23.0
TARGET_RMS_DB = -23.0
MIN_LOUDNESS_SECONDS = 0.5
FRAME_SECONDS = 0.02


@dataclass(frozen=True)
class ProcessConfig:
    """How raw source audio becomes library clips."""

    rate: int = 16_000
    max_seconds: float = 10.0
    max_segments: int = 6
    min_seconds: float = 0.3
    trim_db: float = 45.0
    target_lufs: float = TARGET_LUFS


def decode(blob: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode an in-memory audio file (wav, ogg, flac...) to mono float32 ``(N,)``."""
    data, rate = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def read_file(path: str) -> tuple[np.ndarray, int]:
    """Read an audio file on disk to mono float32 ``(N,)`` (soundfile; PyAV as a fallback)."""
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        return data.mean(axis=1), int(rate)
    except (sf.LibsndfileError, RuntimeError):
        from encoders.audio_io import load_audio

        wav, rate = load_audio(path)
        return wav.mean(dim=0).numpy().astype(np.float32), int(rate)


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample ``(N,)`` from ``rate`` to ``target`` Hz with torchaudio."""
    if rate == target:
        return wav.astype(np.float32)
    out = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), rate, target)
    return out.numpy()


def frame_db(wav: np.ndarray, rate: int, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """Frame energies in dB, one per ``frame_seconds`` frame. Shape ``(F,)``."""
    hop = max(1, int(rate * frame_seconds))
    frames = len(wav) // hop
    if frames == 0:
        return np.full(1, 10 * np.log10(np.mean(wav**2) + 1e-12))
    power = (wav[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1)
    return 10 * np.log10(power + 1e-12)


def trim_silence(wav: np.ndarray, rate: int, threshold_db: float = 45.0) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``threshold_db`` below the loudest frame."""
    energies = frame_db(wav, rate)
    active = np.flatnonzero(energies > energies.max() - threshold_db)
    if energies.max() < -80 or len(active) == 0:
        return wav[:0]
    hop = max(1, int(rate * FRAME_SECONDS))
    return wav[active[0] * hop : min(len(wav), (active[-1] + 1) * hop)]


def active_spans(wav: np.ndarray, rate: int, threshold_db: float = 35.0, min_gap: float = 0.2,
                 min_length: float = 0.05) -> list[list[float]]:
    """Time spans ``[[start, end], ...]`` (seconds) where ``wav`` is within ``threshold_db`` of its peak frame."""
    energies = frame_db(wav, rate)
    if energies.max() < -80:
        return []
    active = energies > energies.max() - threshold_db
    spans: list[list[float]] = []
    start = None
    for index, on in enumerate(np.append(active, False)):
        if on and start is None:
            start = index
        elif not on and start is not None:
            spans.append([start * FRAME_SECONDS, index * FRAME_SECONDS])
            start = None
    merged: list[list[float]] = []
    for span in spans:
        if merged and span[0] - merged[-1][1] < min_gap:
            merged[-1][1] = span[1]
        else:
            merged.append(span)
    duration = len(wav) / rate
    return [[round(s, 3), round(min(e, duration), 3)] for s, e in merged if e - s >= min_length]


def normalise_loudness(wav: np.ndarray, rate: int, target_lufs: float = TARGET_LUFS) -> np.ndarray:
    """Scale to ``target_lufs`` (pyloudnorm BS.1770) or, for short clips, to the same RMS level; peak <= 0.99."""
    gain_db = None
    if len(wav) >= MIN_LOUDNESS_SECONDS * rate:
        try:
            import pyloudnorm

            loudness = pyloudnorm.Meter(rate).integrated_loudness(wav.astype(np.float64))
            if np.isfinite(loudness):
                gain_db = target_lufs - loudness
        except ImportError:
            pass
    if gain_db is None:
        rms_db = 10 * np.log10(np.mean(wav**2) + 1e-12)
        gain_db = TARGET_RMS_DB - rms_db
    out = wav * np.float32(10 ** (gain_db / 20))
    peak = np.abs(out).max()
    if peak > 0.99:
        out = out * np.float32(0.99 / peak)
    return out.astype(np.float32)


def process(wav: np.ndarray, rate: int, config: ProcessConfig) -> list[np.ndarray]:
    """Turn one raw mono recording into library segments at ``config.rate``.

    Resample, trim silence, cut into at most ``config.max_segments`` pieces of at most
    ``config.max_seconds`` (each trimmed again), drop pieces shorter than ``config.min_seconds``
    and normalise loudness. Returns a list of ``(N_i,)`` arrays.
    """
    if wav.size == 0 or not np.isfinite(wav).all():
        return []
    wav = resample(wav - wav.mean(), rate, config.rate)
    wav = trim_silence(wav, config.rate, config.trim_db)
    length = int(config.max_seconds * config.rate)
    segments = []
    for index in range(config.max_segments):
        piece = wav[index * length : (index + 1) * length]
        if len(piece) == 0:
            break
        piece = trim_silence(piece, config.rate, config.trim_db)
        if len(piece) < config.min_seconds * config.rate:
            continue
        segments.append(normalise_loudness(piece, config.rate, config.target_lufs))
    return segments
