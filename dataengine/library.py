"""The source library written by the builder: ``DIR/library.jsonl`` and ``DIR/library/**.wav``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from encoders.errors import PromptsepError


@dataclass(frozen=True)
class Clip:
    """One library clip (mono, library sample rate, loudness normalised).

    ``path`` and ``image`` are absolute; ``split`` is ``train | val | test`` (by source file).
    """

    id: str
    path: Path
    category: str
    group: str
    captions: tuple[str, ...]
    visual_caption: str
    av_caption: str
    image: Path | None
    split: str
    source: str
    duration: float


def load_library(dir: Path | str) -> list[Clip]:
    """Read ``dir/library.jsonl`` into :class:`Clip` records (paths resolved against ``dir``)."""
    folder = Path(dir)
    manifest = folder / "library.jsonl"
    if not manifest.is_file():
        raise PromptsepError(f"{manifest}: no data-engine library here; build it with `promptsep data build --out {folder}`")
    clips = []
    with manifest.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            clips.append(
                Clip(
                    id=record["id"],
                    path=folder / record["audio"],
                    category=record["category"],
                    group=record["group"],
                    captions=tuple(record["captions"]),
                    visual_caption=record["visual_caption"],
                    av_caption=record["av_caption"],
                    image=folder / record["image"] if record.get("image") else None,
                    split=record["split"],
                    source=record["source"],
                    duration=float(record["duration"]),
                )
            )
    return clips
