"""Picture probes: a split's mixtures re-prompted with pictures from outside the data engine's own styles.

The data engine's picture prompts are emoji and Tux Paint stamps, and the visual tower learnt from those styles. A
probe keeps every line of a manifest whose category has a probe picture (its audio, text and everything else) and
swaps its picture for one of them, so picture results on the probe sit beside the same mixtures' text results and
their own pictures' results. :mod:`dataengine.clipart` (Open Clip Art) and :mod:`dataengine.gcompris` (GCompris
photos and drawings) supply the pictures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dataengine.images import copy_picture
from dataengine.manifest import read_manifest
from dataengine.seeding import keyed_rng
from encoders.files import staged


@dataclass(frozen=True)
class ProbePicture:
    """One picture a probe can use: where it comes from (a file, or the bytes of an archive entry) and the file name
    it gets under the probe's folder (unique within the probe)."""

    source: Path | bytes
    name: str


def reprompt(manifest: str | Path, out: str | Path, pictures: dict[str, list[ProbePicture]], folder: str,
             salt: str, seed: int = 0) -> dict:
    """Write ``out`` (JSONL): the lines of ``manifest`` whose category has ``pictures``, each with one of them (chosen
    per mixture from ``seed``, ``salt`` and the line's id, so reruns agree) as ``image`` and no ``video``. Pictures
    are cut to their drawing (opaque pixels), fitted on white and copied beside the manifest under
    ``images/<folder>/``; the line's paths stay relative as written. Nothing is written when the manifest cannot be
    read.

    Returns counts: lines read, lines written, categories and distinct pictures used.
    """
    manifest, out = Path(manifest), Path(out)
    rows = read_manifest(manifest, resolve=False)  # the lines as written: the probe keeps their relative paths
    written, used = [], set()
    for row in rows:
        choices = pictures.get(row.get("category"))
        if not choices:
            continue
        picture = choices[int(keyed_rng(seed, salt, row["id"]).integers(len(choices)))]
        relative = Path("images") / folder / picture.name
        copy_picture(picture.source, manifest.parent / relative, crop=True)
        used.add(relative)
        written.append({**row, "image": str(relative), "video": None})
    with staged(out) as temp:
        Path(temp).write_text("".join(json.dumps(row) + "\n" for row in written))
    categories = sorted({row["category"] for row in written})
    return {"read": len(rows), "written": len(written), "categories": len(categories), "pictures": len(used)}
