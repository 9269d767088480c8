"""A picture-style probe (:mod:`dataengine.reprompt`) with Open Clip Art pictures (Debian's ``openclipart-png``,
public domain): drawings by many hands, none of them in the data engine's emoji and stamp styles. Every mixture of a
split whose target category has clip art gets one of them as its picture. No picture of the library is trained on.

Matching is by file name within a folder of the collection (English and Italian names; the table below is curated by
hand: a category only gets pictures whose name says what they show).
"""

from __future__ import annotations

import re
from pathlib import Path

from dataengine.reprompt import ProbePicture, reprompt
from encoders.errors import PromptsepError

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
    each with one of those pictures (:func:`dataengine.reprompt.reprompt`, under ``images/openclipart``). The probe
    half re-prompts val/test mixtures; the train half gives ``train encoders --extra-pictures`` pictures no probe uses.

    Returns counts: lines read, lines written, categories and distinct pictures used.

    Raises:
        PromptsepError: the manifest is missing, or no clip art is installed under ``root``.
    """
    everything = list_clipart(root)
    if not everything:
        raise PromptsepError(
            f"no Open Clip Art pictures under {Path(root) / CLIPART_ROOT} (install the Debian package openclipart-png)"
        )
    pictures = {
        category: [ProbePicture(path, f"{category.replace(' ', '-')}_{everything[category].index(path)}.png") for path in paths]
        for category, paths in half_of(everything, half).items()
    }
    return reprompt(manifest, out, pictures, FOLDER, salt="clipart", seed=seed)
