"""Audio I/O used by every package: load, resample, channel helpers and atomic save.

Waveforms are float32 tensors of shape ``(C, N)`` (channels, samples). Files are read with
``soundfile`` (wav, flac, ogg, mp3) and, for video containers, with PyAV (the soundtrack).
Resampling uses ``torchaudio.functional.resample``. Every failure a user can cause raises
:class:`~encoders.errors.AudioError` naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from encoders.errors import AudioError
from encoders.files import staged

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".m4a", ".aac"}
SAVE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def _check_rate(path: Path | str, sample_rate: int) -> None:
    if not (MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise AudioError(
            f"{path}: absurd sample rate {sample_rate} Hz (expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})"
        )


def _check_samples(path: Path | str, wav: np.ndarray) -> None:
    if wav.size == 0 or wav.shape[-1] == 0:
        raise AudioError(f"{path}: zero-length audio (no samples)")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: audio contains NaN or Inf samples")


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError as error:
        message = str(error).split(":")[-1].strip() or "unreadable"
        raise AudioError(f"{path}: cannot decode audio ({message}); corrupt, truncated or unsupported format") from None
    except (RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"{path}: cannot decode audio ({error})") from None
    return data.T.copy(), int(sample_rate)


def _read_video_soundtrack(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: the video has no soundtrack")
            stream = container.streams.audio[0]
            chunks = []
            sample_rate = stream.rate
            for frame in container.decode(stream):
                array = frame.to_ndarray().astype(np.float32)
                if frame.format.is_planar:
                    chunks.append(array)
                else:  # interleaved: (1, N * C)
                    chunks.append(array.reshape(-1, len(frame.layout.channels)).T)
                sample_rate = frame.sample_rate
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as error:
        raise AudioError(f"{path}: cannot decode the soundtrack ({error})") from None
    if not chunks:
        raise AudioError(f"{path}: zero-length soundtrack")
    wav = np.concatenate(chunks, axis=1)
    if np.issubdtype(wav.dtype, np.integer):
        wav = wav / float(np.iinfo(wav.dtype).max)
    return wav.astype(np.float32), int(sample_rate)


def load_audio(
    path: str | os.PathLike, sample_rate: int | None = None, channels: int | None = None
) -> tuple[torch.Tensor, int]:
    """Load an audio file, or the soundtrack of a video, as float32.

    Args:
        path: wav/flac/ogg/mp3 (soundfile) or a video container (PyAV).
        sample_rate: resample to this rate when given; else keep the file's rate.
        channels: 1 for mono (mean of channels), 2 for stereo (mono is duplicated); else keep.

    Returns:
        ``(wav, rate)`` with ``wav`` of shape ``(C, N)``.

    Raises:
        AudioError: missing, empty, zero-length, corrupt or unsupported file, NaN/Inf samples,
            absurd sample rate.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        data, rate = _read_video_soundtrack(path)
    else:
        data, rate = _read_soundfile(path)
    _check_rate(path, rate)
    _check_samples(path, data)
    wav = torch.from_numpy(data)
    if channels is not None:
        wav = set_channels(wav, channels)
    if sample_rate is not None and sample_rate != rate:
        wav = resample(wav, rate, sample_rate)
        rate = sample_rate
    return wav, rate


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample with torchaudio's windowed-sinc resampler.

    Shape:
        ``(..., N)`` -> ``(..., round(N * new_rate / orig_rate))``.
    """
    if orig_rate == new_rate:
        return wav
    _check_rate("<tensor>", orig_rate)
    _check_rate("<tensor>", new_rate)
    return torchaudio.functional.resample(wav, orig_rate, new_rate)


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """Average channels. Shape: ``(C, N)`` -> ``(1, N)``."""
    return wav.mean(dim=-2, keepdim=True)


def set_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """Return ``wav`` with ``channels`` channels: down-mix to mono, or repeat mono to many.

    Shape:
        ``(C, N)`` -> ``(channels, N)``.
    """
    current = wav.shape[-2]
    if current == channels:
        return wav
    if channels == 1:
        return to_mono(wav)
    if current == 1:
        return wav.expand(*wav.shape[:-2], channels, wav.shape[-1]).clone()
    raise AudioError(f"cannot map {current} channels to {channels}")


def save_audio(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write ``wav`` ``(C, N)`` (or ``(N,)``) atomically: a temp file in the same folder, then rename.

    A crash or a bad input never leaves a half-written file at ``path``.
    """
    path = Path(path)
    fmt = SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write format {path.suffix!r} (use {', '.join(SAVE_FORMATS)})")
    _check_rate(path, sample_rate)
    array = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    if array.ndim == 1:
        array = array[None]
    _check_samples(path, array)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        sf.write(tmp, array.T, sample_rate, format=fmt, subtype="FLOAT" if fmt == "WAV" else None)
    return path
