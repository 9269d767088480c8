"""A picture of a separation: the mixture, each target and the residual as mel spectrograms, one above the other.

The tracks are read from the written files a column at a time, so a recording of an hour costs no more memory than
one of ten seconds: the picture has at most ``width`` columns, and each column is the mean power spectrum of the
stretch of audio it covers. The mixture is the sum of the tracks (exactly the input for the mixture-consistent output).
All panels share one colour scale, so a sound that moved from the residual into a target reads as such.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from encoders.errors import AudioError
from encoders.files import staged

WIDTH = 1000  # columns at most (one per STFT frame for short recordings)
MELS = 80
DYNAMIC_RANGE_DB = 80.0
WINDOW_SECONDS = 0.064  # STFT window; 80 mel bands then each cover at least one bin, down to 8 kHz audio


@dataclass
class Spectra:
    """Mel power in dB, ``db (tracks, mels, columns)``, the mixture first, then the tracks in the order given."""

    db: np.ndarray
    labels: list[str]
    sample_rate: int
    duration: float

    @property
    def top_hz(self) -> float:
        return self.sample_rate / 2


def _window(rate: int) -> int:
    return 1 << max(6, round(np.log2(WINDOW_SECONDS * rate)))


def separation_spectra(tracks: Sequence[str | os.PathLike], labels: Sequence[str], width: int = WIDTH) -> Spectra:
    """Mel spectrograms of the mixture (the tracks' sum) and of each track, read column by column.

    ``tracks`` are audio files of one sample rate and length (the targets, then the residual); ``labels`` name them.

    Raises:
        AudioError: no tracks, a label count that differs, or files of different rates or lengths.
    """
    paths = [Path(t) for t in tracks]
    if not paths or len(labels) != len(paths):
        raise AudioError(f"give one label per track ({len(paths)} tracks, {len(labels)} labels)")
    infos = [sf.info(str(p)) for p in paths]
    rate, frames = infos[0].samplerate, infos[0].frames
    for path, info in zip(paths, infos, strict=True):
        if (info.samplerate, info.frames) != (rate, frames):
            raise AudioError(
                f"{path.name}: {info.frames} samples at {info.samplerate} Hz, unlike {paths[0].name} "
                f"({frames} at {rate} Hz); the tracks of one separation share rate and length"
            )
    n_fft = _window(rate)
    hop = n_fft // 2
    columns = max(1, min(width, frames // hop))
    edges = np.linspace(0, frames, columns + 1).round().astype(int)
    window = torch.hann_window(n_fft)
    fbank = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, rate / 2, MELS, rate, norm="slaney", mel_scale="htk")
    power = np.zeros((len(paths) + 1, MELS, columns), np.float32)
    handles = [sf.SoundFile(str(p)) for p in paths]
    try:
        for column in range(columns):
            # at least one window, kept inside the file where it is that long (zeros past the end would smear the
            # last column's spectrum); a file shorter than a window is zero-padded to one
            start = max(0, min(int(edges[column]), frames - n_fft))
            stop = max(int(edges[column + 1]), start + n_fft)
            pieces = []
            for handle in handles:
                handle.seek(start)
                piece = handle.read(stop - start, dtype="float32", always_2d=True).mean(axis=1)
                pieces.append(np.pad(piece, (0, stop - start - piece.shape[0])))
            signals = torch.from_numpy(np.stack([np.sum(pieces, axis=0), *pieces]))
            spec = torch.stft(signals, n_fft, hop, window=window, center=False, return_complex=True).abs().pow(2)
            power[:, :, column] = (spec.mean(-1) @ fbank).numpy()  # (tracks + 1, mels)
    finally:
        for handle in handles:
            handle.close()
    db = 10 * np.log10(power + 1e-12)
    return Spectra(db=db, labels=["mixture", *labels], sample_rate=rate, duration=frames / rate)


def plot_separation(tracks: Sequence[str | os.PathLike], labels: Sequence[str], out: str | os.PathLike, width: int = WIDTH) -> Path:
    """Write the picture of :func:`separation_spectra` as a PNG at ``out`` (atomically: a complete file or none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectra = separation_spectra(tracks, labels, width)
    top = float(spectra.db.max())
    rows = len(spectra.labels)
    figure, axes = plt.subplots(rows, 1, figsize=(10, 1.5 * rows + 0.5), sharex=True, squeeze=False, layout="constrained"
    )
    mel_top = _hz_to_mel(spectra.top_hz)
    for axis, db, label in zip(axes[:, 0], spectra.db, spectra.labels, strict=True):
        image = axis.imshow(
            db, origin="lower", aspect="auto", cmap="magma", vmin=top - DYNAMIC_RANGE_DB, vmax=top,
            extent=(0.0, spectra.duration, 0.0, mel_top), interpolation="nearest",
        )
        ticks = [hz for hz in (100, 500, 1000, 2000, 4000, 8000, 16000) if hz < spectra.top_hz]
        axis.set_yticks([_hz_to_mel(hz) for hz in ticks], [f"{hz / 1000:g}k" if hz >= 1000 else str(hz) for hz in ticks])
        axis.set_ylabel("Hz", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.set_title(label, loc="left", fontsize=9)
    axes[-1, 0].set_xlabel("seconds")
    figure.colorbar(image, ax=axes[:, 0].tolist(), label="dB", pad=0.01, fraction=0.03, aspect=40)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staged(out) as temp:
            figure.savefig(temp, format="png", dpi=100)
    finally:
        plt.close(figure)
    return out


def _hz_to_mel(hz: float) -> float:
    """The HTK mel scale, as the filter bank uses."""
    return 2595.0 * float(np.log10(1.0 + hz / 700.0))
