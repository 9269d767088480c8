"""Mixtures of library clips: 2-4 sources of different categories, target vs the rest.

The same :func:`make_mixture` writes the fixed val/test/train manifests and feeds training
on the fly through :class:`MixtureSampler`. The target is scaled so that its SNR against the
sum of the other sources lies in ``snr_db``; ``mixture = target + residual`` exactly (float32).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from dataengine.audio import active_spans, resample
from dataengine.augment import AugmentConfig, add_noise, augment_source
from dataengine.library import Clip, load_library
from dataengine.vocabulary import paraphrase
from encoders.errors import PromptsepError

SNR_RANGE_DB = (-5.0, 5.0)
LEVEL_DB = -20.0
TRAIN_LEVEL_RANGE_DB = (-30.0, -14.0)
PEAK = 0.95
REPEAT_PROBABILITY = 0.4
MIN_SOURCES, MAX_SOURCES = 2, 4


@dataclass
class Mixture:
    """One training/evaluation example. Waveforms are float32 ``(N,)`` at the sampler's rate."""

    mixture: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    prompt: str
    category: str
    group: str
    image: Path | None
    spans: list[list[float]]
    sources: list[dict] = field(default_factory=list)
    snr_db: float = 0.0


def place(wav: np.ndarray, length: int, rng: np.random.Generator, allow_repeat: bool = True) -> np.ndarray:
    """Fit a clip into a window of ``length`` samples: a random crop of a long clip (preferring a
    non-silent one), or a short clip at a random offset, sometimes repeated at random intervals."""
    if len(wav) >= length:
        best, best_power = None, -1.0
        for _ in range(3):
            start = int(rng.integers(0, len(wav) - length + 1))
            crop = wav[start : start + length]
            power = float(np.mean(crop**2))
            if power > best_power:
                best, best_power = crop, power
            if power > 1e-5:
                break
        return best.astype(np.float32)
    out = np.zeros(length, dtype=np.float32)
    if allow_repeat and len(wav) < length // 2 and rng.random() < REPEAT_PROBABILITY:
        position = int(rng.integers(0, length // 4 + 1))
        while position + len(wav) <= length:
            out[position : position + len(wav)] += wav
            position += len(wav) + int(rng.integers(0, max(1, len(wav))))
        return out
    offset = int(rng.integers(0, length - len(wav) + 1))
    out[offset : offset + len(wav)] = wav
    return out


def _rms(wav: np.ndarray) -> float:
    return float(np.sqrt(np.mean(wav.astype(np.float64) ** 2) + 1e-12))


def make_mixture(
    by_category: dict[str, list[Clip]],
    rng: np.random.Generator,
    load: Callable[[Clip], np.ndarray],
    seconds: float = 4.0,
    rate: int = 16_000,
    augment: AugmentConfig | None = None,
    snr_db: tuple[float, float] = SNR_RANGE_DB,
) -> Mixture:
    """Draw a target category and clip, 1-3 other clips of other categories, and mix them.

    ``by_category`` maps category -> clips (at least two categories); ``load`` returns a clip's
    mono waveform ``(N,)`` at ``rate``.
    """
    categories = sorted(c for c, clips in by_category.items() if clips)
    if len(categories) < MIN_SOURCES:
        raise PromptsepError(f"need clips of at least {MIN_SOURCES} categories to mix, got {categories}")
    length = int(round(seconds * rate))
    target_category = categories[int(rng.integers(len(categories)))]
    others = [c for c in categories if c != target_category]
    count = int(rng.integers(MIN_SOURCES - 1, min(MAX_SOURCES - 1, len(others)) + 1))
    other_categories = [others[i] for i in rng.choice(len(others), size=count, replace=False)]
    chosen: list[Clip] = []
    for name in [target_category, *other_categories]:
        clips = by_category[name]
        chosen.append(clips[int(rng.integers(len(clips)))])

    placed = []
    for clip in chosen:
        wav = place(load(clip), length, rng)
        if augment is not None:
            wav = augment_source(wav, rng, rate, augment)
        placed.append(wav)

    target = placed[0] / _rms(placed[0])
    residual = np.zeros(length, dtype=np.float64)
    gains = [0.0]
    for wav in placed[1:]:
        gain = float(rng.uniform(-6.0, 6.0))
        gains.append(gain)
        residual += wav / _rms(wav) * 10 ** (gain / 20)
    if augment is not None and rng.random() < augment.noise_p:
        residual = add_noise(residual.astype(np.float32), rng, augment).astype(np.float64)
    snr = float(rng.uniform(*snr_db))
    target = target * (_rms(residual) / _rms(target)) * 10 ** (snr / 20)
    level = float(rng.uniform(*TRAIN_LEVEL_RANGE_DB)) if augment is not None else LEVEL_DB
    scale = 10 ** (level / 20) / _rms(target + residual)
    peak = np.abs(target + residual).max() * scale
    if peak > PEAK:
        scale *= PEAK / peak
    target32 = (target * scale).astype(np.float32)
    residual32 = (residual * scale).astype(np.float32)
    mixture32 = target32 + residual32
    head = chosen[0]
    return Mixture(
        mixture=mixture32,
        target=target32,
        residual=residual32,
        prompt=paraphrase(target_category, rng),
        category=target_category,
        group=head.group,
        image=head.image,
        spans=active_spans(target32, rate),
        sources=[{"id": c.id, "category": c.category, "gain_db": round(g, 2)} for c, g in zip(chosen, gains, strict=True)],
        snr_db=snr,
    )


class ClipCache:
    """Loads clips as float32 ``(N,)`` at ``rate``, keeping the most recent ``size`` in memory."""

    def __init__(self, rate: int, size: int = 4096) -> None:
        self.rate = rate
        self.size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, clip: Clip) -> np.ndarray:
        if clip.id in self._cache:
            self._cache.move_to_end(clip.id)
            return self._cache[clip.id]
        data, file_rate = sf.read(str(clip.path), dtype="float32", always_2d=True)
        wav = resample(data.mean(axis=1), int(file_rate), self.rate)
        self._cache[clip.id] = wav
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return wav


def group_by_category(clips: list[Clip]) -> dict[str, list[Clip]]:
    result: dict[str, list[Clip]] = {}
    for clip in sorted(clips, key=lambda c: c.id):
        result.setdefault(clip.category, []).append(clip)
    return result


class MixtureSampler:
    """Endless on-the-fly training mixtures from a built library.

    ``sample(rng)`` draws one :class:`Mixture`; iterating yields mixtures from an internal
    generator seeded with ``seed``. With ``augment`` the sources get reverb/EQ/speed/gain and
    the residual sometimes background noise; the level varies too. ``augment`` is ``True`` (the default
    :class:`AugmentConfig`), ``False`` (none) or an :class:`AugmentConfig` of one's own.
    """

    def __init__(self, library_dir: Path | str, split: str = "train", seed: int = 0, seconds: float = 4.0,
                 rate: int = 16_000, augment: bool | AugmentConfig = True) -> None:
        self.library_dir = Path(library_dir)
        self.split = split
        self.seconds = seconds
        self.rate = rate
        if isinstance(augment, AugmentConfig):
            self.augment: AugmentConfig | None = augment
        else:
            self.augment = AugmentConfig() if augment else None
        self.clips = [c for c in load_library(self.library_dir) if c.split == split]
        self.by_category = group_by_category(self.clips)
        if len(self.by_category) < MIN_SOURCES:
            raise PromptsepError(f"{self.library_dir}: split {split!r} has clips of {len(self.by_category)} "
                                 f"categories; at least {MIN_SOURCES} are needed to mix")
        self.load = ClipCache(rate)
        self.rng = np.random.default_rng(seed)

    def sample(self, rng: np.random.Generator) -> Mixture:
        return make_mixture(self.by_category, rng, self.load, self.seconds, self.rate, self.augment)

    def __iter__(self) -> Iterator[Mixture]:
        while True:
            yield self.sample(self.rng)

    def __len__(self) -> int:
        """Number of clips available to draw from (mixtures themselves are endless)."""
        return len(self.clips)
