"""A picture-style probe: the split's mixtures prompted with Open Clip Art pictures instead of the data engine's own.

The data engine's picture prompts are emoji and Tux Paint stamps, and the visual tower learnt from those styles. How
picture prompts fare on a picture drawn by someone else (a user's photo or drawing) is measured here: every mixture of
a split whose target category has Open Clip Art pictures (Debian's ``openclipart-png``, public domain) gets one of them
as its picture, and the rest of its line stays as it was, so the probe's picture results sit beside the same mixtures'
text results. No picture of the library is trained on.

Matching is by file name within a folder of the collection (English and Italian names; the table below is curated by
hand: a category only gets pictures whose name says what they show).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dataengine.images import copy_picture
from dataengine.manifest import read_manifest
from dataengine.seeding import keyed_rng
from encoders.errors import PromptsepError
from encoders.files import staged

CLIPART_ROOT = "usr/share/openclipart/png"
FOLDER = "openclipart"  # under the data folder's images/

# category -> (folders of the collection searched, regular expression on the lower-case file name)
CLIPART_TABLE: dict[str, tuple[tuple[str, ...], str]] = {
    "dog": (("animals",), r"^(dog|puppy|cane)[_.-]|[_-]dog[_.-]"),
    "cat": (("animals",), r"^(cat|kitten|gatto)[_.-]|[_-](cat|gatto)[_.-]"),
    "cow": (("animals",), r"^(cow|mucca)[_.-]|^mucca"),
    "horse": (("animals",), r"^(horse|cavallo)[_.-]|[_-]horse[_.-]"),
    "pig": (("animals",), r"^(a_simple_)?pig[_.-]|maiale"),
    "sheep": (("animals",), r"sheep|pecora|^lamb[_.-]"),
    "chicken": (("animals",), r"^(hen|chicken|rooster|gallina|gallo)[_.-]"),
    "duck": (("animals",), r"^(duck|anatra)[_.-]|[_-]duck[_.-]"),
    "owl": (("animals",), r"^(owl|gufo)[_.-]"),
    "frog": (("animals",), r"^(frog|rana)[_.-]|[_-]frog[_.-]"),
    "elephant": (("animals",), r"elephant|elefante"),
    "monkey": (("animals",), r"monkey|scimmia|gorilla|chimp"),
    "wolf": (("animals",), r"(^|[_-])(wolf|lupo)[_.-]"),
    "big cat": (("animals",), r"^(lion|tiger|leone|tigre)|[_-](tiger|lion)[_.-]"),
    "insect": (("animals",), r"^(bee|fly|wasp|cricket|mosquito)[_.-]|[_-](wasp|bee)[_.-]"),
    "sea mammal": (("animals",), r"whale|dolphin|balena|delfino"),
    "piano": (("recreation/music",), r"piano"),
    "guitar": (("recreation/music",), r"guitar|chitarra"),
    "drums": (("recreation/music",), r"drum"),
    "brass": (("recreation/music",), r"trumpet|tromba|trombone|tuba"),
    "strings": (("recreation/music",), r"violin|violino|cello"),
    "clock": (("signs_and_symbols/clocks",), r"clock|orologio"),
    "aircraft": (("transportation",), r"airplane|aeroplane|aircraft|aereo|helicopter"),
    "thunder": (("signs_and_symbols/weather",), r"lightning|thunder|fulmine"),
    "typing": (("computer/hardware",), r"keyboard"),
}


# pictures whose name matches but which show something else
EXCLUDED = frozenset({"jonathon_s_duck_01.png"})  # a "linked image not found" placeholder


def list_clipart(root: str | Path) -> dict[str, list[Path]]:
    """Category -> its Open Clip Art pictures (sorted), for the categories of :data:`CLIPART_TABLE` that have any."""
    base = Path(root) / CLIPART_ROOT
    found: dict[str, list[Path]] = {}
    for category, (folders, pattern) in CLIPART_TABLE.items():
        expression = re.compile(pattern)
        paths = {p for folder in folders for p in (base / folder).rglob("*.png") if expression.search(p.name.lower()) and p.name not in EXCLUDED}
        if paths:
            found[category] = sorted(paths)
    return found


HALVES = ("probe", "train")


def half_of(pictures: dict[str, list[Path]], half: str) -> dict[str, list[Path]]:
    """Every other picture of each category's sorted list: ``"probe"`` the 1st, 3rd, ... (so every category keeps
    one), ``"train"`` the 2nd, 4th, ... The halves share no picture, though neighbours in a list are often one
    artist's series."""
    if half not in HALVES:
        raise PromptsepError(f"unknown clip-art half {half!r}; expected one of {HALVES}")
    start = HALVES.index(half)
    return {c: paths[start::2] for c, paths in pictures.items() if paths[start::2]}


def build_clipart_probe(
    manifest: str | Path, out: str | Path, root: str | Path = "/", seed: int = 0, half: str = "probe"
) -> dict:
    """Write ``out`` (JSONL): the lines of ``manifest`` whose category has clip art in ``half`` (:func:`half_of`),
    each with one of those pictures (chosen per mixture, reproducibly from ``seed``), copied beside the manifest under
    ``images/openclipart``. The probe half re-prompts val/test mixtures; the train half gives
    ``train encoders --extra-pictures`` pictures no probe uses.

    Returns counts: lines read, lines written, categories and distinct pictures used.

    Raises:
        PromptsepError: the manifest is missing, or no clip art is installed under ``root``.
    """
    manifest, out = Path(manifest), Path(out)
    rows = read_manifest(manifest, resolve=False)  # the lines as written: the probe keeps their relative paths
    everything = list_clipart(root)
    if not everything:
        raise PromptsepError(
            f"no Open Clip Art pictures under {Path(root) / CLIPART_ROOT} (install the Debian package openclipart-png)"
        )
    pictures = half_of(everything, half)
    written, used = [], set()
    for row in rows:
        choices = pictures.get(row.get("category"))
        if not choices:
            continue
        source = choices[int(keyed_rng(seed, "clipart", row["id"]).integers(len(choices)))]
        relative = Path("images") / FOLDER / f"{row['category'].replace(' ', '-')}_{everything[row['category']].index(source)}.png"
        copy_picture(source, manifest.parent / relative, crop=True)
        used.add(relative)
        written.append({**row, "image": str(relative), "video": None})
    with staged(out) as temp:
        Path(temp).write_text("".join(json.dumps(row) + "\n" for row in written))
    categories = sorted({row["category"] for row in written})
    return {"read": len(rows), "written": len(written), "categories": len(categories), "pictures": len(used)}
