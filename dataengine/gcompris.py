"""Picture probes (:mod:`dataengine.reprompt`) from GCompris (Debian's ``gcompris-qt-data``, read from its ``.rcc``
archives): **photos**, the Wikimedia Commons photographs of the explore-animals activities (public domain / CC0 /
CC-BY-SA), the nearest thing on this machine to a user's snapshot of the source; and **drawings**, the Arts4Apps
cartoons of the vocabulary activity's sample words (CC-BY-SA-3.0). The data engine draws its sounds from the same
package but none of its pictures, so no tower has trained on these.

The table is curated by hand from the archives' file names: a category only gets a picture that shows it.
"""

from __future__ import annotations

from pathlib import Path

from dataengine.rcc import RccArchive, RccError
from dataengine.reprompt import ProbePicture, reprompt
from encoders.errors import PromptsepError

RCC_ROOT = "usr/share/gcompris-qt/rcc"
FARM = tuple((stem, stem) for stem in ("cat", "chicken", "cow", "dog", "duck", "horse", "owl", "pig", "sheep"))
# style -> ((archive, ((picture stem, category), ...)), ...)
PICTURE_TABLE: dict[str, tuple[tuple[str, tuple[tuple[str, str], ...]], ...]] = {
    "photos": (
        ("explore_farm_animals", FARM),
        ("explore_world_animals", (("scarlet_macaw", "bird"), ("jaguar", "big cat"), ("narwhal", "sea mammal"))),
    ),
    "drawings": (
        ("lang", FARM + (
            ("bull", "cow"), ("bird", "bird"), ("wolf", "wolf"), ("frog", "frog"), ("gorilla", "monkey"),
            ("bee", "insect"), ("mosquito", "insect"), ("flies", "insect"), ("beetle", "insect"), ("bug", "insect"),
            ("dolphin", "sea mammal"), ("whale", "sea mammal"),
        )),
    ),
}
STYLES = tuple(PICTURE_TABLE)


def list_gcompris_pictures(root: str | Path, style: str) -> dict[str, list[ProbePicture]]:
    """Category -> its GCompris pictures of ``style`` (in table order), read from the archives installed under
    ``root``; archives or pictures that are missing are skipped."""
    if style not in PICTURE_TABLE:
        raise PromptsepError(f"unknown GCompris picture style {style!r}; expected one of {STYLES}")
    found: dict[str, list[ProbePicture]] = {}
    for archive_name, pictures in PICTURE_TABLE[style]:
        path = Path(root) / RCC_ROOT / f"{archive_name}.rcc"
        try:
            archive = RccArchive.open(path)
        except (OSError, RccError):
            continue
        by_stem = {Path(e.path).stem: e for e in archive.entries if e.path.lower().endswith(".webp")}
        for stem, category in pictures:
            if stem in by_stem:
                name = f"{category.replace(' ', '-')}_{stem}.png"
                found.setdefault(category, []).append(ProbePicture(archive.read(by_stem[stem]), name))
    return found


def build_gcompris_probe(manifest: str | Path, out: str | Path, style: str = "photos", root: str | Path = "/",
                         seed: int = 0) -> dict:
    """Write ``out`` (JSONL): the lines of ``manifest`` whose category has a GCompris picture of ``style``, each with
    one of them (under ``images/gcompris-<style>``). Returns the counts of :func:`dataengine.reprompt.reprompt`.

    Raises:
        PromptsepError: unknown style, the manifest is missing, or no GCompris picture is installed under ``root``.
    """
    pictures = list_gcompris_pictures(root, style)
    if not pictures:
        raise PromptsepError(
            f"no GCompris {style} under {Path(root) / RCC_ROOT} (install the Debian package gcompris-qt-data)"
        )
    return reprompt(manifest, out, pictures, f"gcompris-{style}", salt=f"gcompris-{style}", seed=seed)
