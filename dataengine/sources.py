"""Source extractors: which installed files become library clips, with which category.

Every source reads installed files only, below a ``root`` folder (``/`` normally; tests point
it at a fake tree). A source lists :class:`RawItem` records cheaply; the builder then loads
each item with a named loader (in worker processes) and processes the audio.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from dataengine import speech
from dataengine.audio import decode, read_file
from dataengine.rcc import RccArchive
from dataengine.vocabulary import categorize

AUDIO_SUFFIXES = (".wav", ".ogg", ".mp3", ".flac", ".aiff", ".aif")


@dataclass
class RawItem:
    """One source recording (or synthesis/render job) before processing.

    ``key`` is the split unit (the source file); ``category`` may be ``None`` when the loader
    decides per stem (music rendering).
    """

    source: str
    key: str
    name: str
    category: str | None
    loader: str
    args: dict
    detail: str | None = None
    image: str | None = None


@dataclass
class Stem:
    """Loaded audio of one item (an item may yield several stems, e.g. score parts)."""

    suffix: str
    category: str | None
    wav: np.ndarray
    rate: int
    detail: str | None = None


@dataclass
class Source:
    """A data source: which packages provide it and how to list its items."""

    name: str
    packages: tuple[str, ...]
    paths: tuple[str, ...]
    lister: Callable[[Path, bool, int], list[RawItem]]
    license: str
    tools: tuple[tuple[str, str], ...] = ()  # (executable, apt package)
    pip: tuple[tuple[str, str], ...] = ()  # (import name, pip package)
    version: int = 1
    description: str = ""
    extra_paths: tuple[tuple[str, str], ...] = field(default=())  # (path, apt package) needed too
    uses_rules: bool = True  # categories come from the vocabulary's keyword rules (cache key includes them)
    cohort: int = 0  # sources added later split apart from earlier ones (see build.assign_splits)
    held_out: bool = False  # left out of the default build: a library of sounds no shipped model heard (--sources NAME)
    extra: bool = False  # left out of the default build: a wider training library (--sources default,extra)

    def missing(self, root: Path) -> list[str]:
        """Human lines naming what is missing for this source (empty when available)."""
        lines = []
        for package, path in zip(self.packages, self.paths, strict=True):
            if path and not (root / path).exists():
                lines.append(f"missing Debian package {package} (no {root / path}); install: sudo apt-get install {package}")
        for path, package in self.extra_paths:
            if not (root / path).exists():
                lines.append(f"missing Debian package {package} (no {root / path}); install: sudo apt-get install {package}")
        for tool, package in self.tools:
            if shutil.which(tool) is None:
                lines.append(f"missing Debian package {package} (no `{tool}` on PATH); install: sudo apt-get install {package}")
        for module, package in self.pip:
            try:
                __import__(module)
            except ImportError:
                lines.append(f"missing Python package {package}; install: .venv/bin/pip install {package}")
        return lines

    def package_version(self, root: Path) -> str:
        """Versions of the providing Debian packages (dpkg), or a listing fingerprint for non-system roots."""
        if str(root) == "/" and shutil.which("dpkg-query"):
            result = subprocess.run(["dpkg-query", "-W", "-f=${Package}=${Version};", *self.packages],
                                    capture_output=True, text=True)
            return result.stdout.strip()
        digest = hashlib.sha1()
        for path in self.paths:
            base = root / path
            if base.is_file():
                digest.update(f"{path}:{base.stat().st_size}".encode())
            elif base.is_dir():
                for entry in sorted(base.rglob("*")):
                    if entry.is_file():
                        digest.update(f"{entry.relative_to(root)}:{entry.stat().st_size}".encode())
        return "files:" + digest.hexdigest()[:16]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"


def _audio_files(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _take(items: list[RawItem], small: bool, limit: int = 6) -> list[RawItem]:
    """In small builds keep a few items spread over the categories."""
    if not small:
        return items
    by_category: dict[str | None, list[RawItem]] = {}
    for item in items:
        by_category.setdefault(item.category, []).append(item)
    picked = [group[0] for group in by_category.values()]
    return picked[:limit]


# --------------------------------------------------------------------------- loaders


def load_file(path: str) -> list[Stem]:
    wav, rate = read_file(path)
    return [Stem("", None, wav, rate)]


@lru_cache(maxsize=8)
def _rcc(path: str) -> RccArchive:
    return RccArchive.open(path)


def load_rcc(archive: str, entry: str) -> list[Stem]:
    rcc = _rcc(archive)
    for candidate in rcc.entries:
        if candidate.path == entry:
            wav, rate = decode(rcc.read(candidate), f"{archive}:{entry}")
            return [Stem("", None, wav, rate)]
    raise FileNotFoundError(f"{archive}: no entry {entry}")


def load_cat(path: str, index: int) -> list[Stem]:
    entries = read_cat(Path(path))
    title, blob = entries[index]
    wav, rate = decode(blob, f"{path}#{index}")
    return [Stem("", None, wav, rate)]


def load_tts(command: list[str], stdin: str | None = None) -> list[Stem]:
    with tempfile.TemporaryDirectory(prefix="promptsep-tts-") as folder:
        out = os.path.join(folder, "out.wav")
        argv = [part.replace("{out}", out) for part in command]
        subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True, timeout=120)
        wav, rate = read_file(out)
    return [Stem("", None, wav, rate)]


def load_music(score: str, soundfont: str, seed: int, max_parts: int) -> list[Stem]:
    from dataengine.music import render_parts

    return [Stem(suffix, category, wav, rate, detail) for suffix, category, wav, rate, detail
            in render_parts(score, soundfont, seed, max_parts)]


@lru_cache(maxsize=4)
def _zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)  # kept open per worker: 0 A.D.'s archive has a large central directory


def load_zip(archive: str, member: str) -> list[Stem]:
    wav, rate = decode(_zip(archive).read(member), f"{archive}:{member}")
    return [Stem("", None, wav, rate)]


LOADERS: dict[str, Callable[..., list[Stem]]] = {
    "file": load_file,
    "zip": load_zip,
    "rcc": load_rcc,
    "cat": load_cat,
    "tts": load_tts,
    "music": load_music,
}


def load_item(item: RawItem) -> list[Stem]:
    return LOADERS[item.loader](**item.args)


# --------------------------------------------------------------------------- formats


def read_cat(path: Path) -> list[tuple[str, bytes]]:
    """Entries of an OpenTTD sound ``.cat``: a table of (offset, size) u32 LE pairs (the offset's
    top bit is a flag), then at each offset a length-prefixed title (u8 length, NUL-terminated)
    followed by a WAV file of ``size - 1 - length`` bytes."""
    blob = path.read_bytes()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a sound catalogue")
    first = struct.unpack_from("<I", blob, 0)[0] & 0x7FFFFFFF
    count = first // 8
    entries = []
    for index in range(count):
        offset, size = struct.unpack_from("<II", blob, 8 * index)
        offset &= 0x7FFFFFFF
        length = blob[offset]
        title = blob[offset + 1 : offset + 1 + length].rstrip(b"\0").decode("latin-1")
        audio = blob[offset + 1 + length : offset + size]
        entries.append((title, audio))
    return entries


def build_cat(entries: list[tuple[str, bytes]]) -> bytes:
    """Write an OpenTTD-style ``.cat`` (the inverse of :func:`read_cat`); used by tests."""
    table = bytearray()
    body = bytearray()
    start = 8 * len(entries)
    for title, audio in entries:
        name = title.encode("latin-1") + b"\0"
        record = bytes([len(name)]) + name + audio
        table.extend(struct.pack("<II", (start + len(body)) | 0x80000000, len(record)))
        body.extend(record)
    return bytes(table + body)


# --------------------------------------------------------------------------- listers


def list_scratch(root: Path, small: bool, seed: int) -> list[RawItem]:
    base = root / "usr/share/scratch/Media/Sounds"
    items = []
    for path in _audio_files(base):
        folder = path.parent.name
        stem = path.stem
        if folder in ("Music Loops", "Instruments", "Percussion"):
            name = categorize(stem, groups=("music",)) or "music"
        elif folder == "Vocals":
            name = categorize(stem, groups=("music",)) if "beat" in stem.lower() else "singing"
        elif folder == "Electronic":
            name = categorize(stem) or "laser"
        else:
            name = categorize(stem)
        if name:
            items.append(RawItem("scratch", f"scratch/{folder}/{stem}", f"{folder}-{stem}", name, "file",
                                 {"path": str(path)}, detail=stem))
    return _take(items, small)


def list_gcompris(root: Path, small: bool, seed: int) -> list[RawItem]:
    base = root / "usr/share/gcompris-qt/rcc"
    items = []
    for archive_path in sorted(base.glob("*.rcc")) if base.is_dir() else []:
        try:
            archive = _rcc(str(archive_path))
        except ValueError:
            continue
        for entry in archive.entries:
            suffix = os.path.splitext(entry.path)[1].lower()
            if suffix not in AUDIO_SUFFIXES:
                continue
            stem = os.path.splitext(os.path.basename(entry.path))[0]
            activity = archive_path.stem
            if activity == "instruments":
                name = categorize(f"instrument {stem}", groups=("music",))
            elif activity == "explore_world_music" or "melody" in stem:
                name = "music"
            else:
                name = categorize(re.sub(r"^LR|_LA.*$", "", stem)) or categorize(activity)
            if name:
                items.append(RawItem("gcompris", f"gcompris/{activity}/{entry.path}", f"{activity}-{stem}", name,
                                     "rcc", {"archive": str(archive_path), "entry": entry.path}, detail=stem))
    return _take(items, small)


def _tuxpaint_text(txt: Path, language: str | None) -> str | None:
    if not txt.is_file():
        return None
    lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    if language is None:
        return lines[0].strip() if lines else None
    for line in lines:
        if line.startswith(f"{language}.utf8="):
            return line.split("=", 1)[1].strip()
    return None


TUXPAINT_LANGUAGES = {"es": "spanish speech", "fr": "french speech", "ru": "russian speech", "el": "greek speech"}


def list_tuxpaint(root: Path, small: bool, seed: int) -> list[RawItem]:
    base = root / "usr/share/tuxpaint/stamps"
    items = []
    for path in sorted(base.rglob("*.ogg")) if base.is_dir() else []:
        stem = path.stem
        match = re.match(r"^(.*)_desc(?:_([a-z]{2}))?$", stem)
        stamp = match.group(1) if match else stem
        # the stamp picture shows what a sound is; a spoken description gets the speech emoji instead
        picture = path.with_name(stamp + ".png")
        image = str(picture) if picture.is_file() else None
        relative = path.relative_to(base).with_suffix("")
        if match:
            language = match.group(2)
            if language not in TUXPAINT_LANGUAGES:
                continue
            items.append(RawItem("tuxpaint", f"tuxpaint/{relative}", f"{stamp}-{language}",
                                 TUXPAINT_LANGUAGES[language], "file", {"path": str(path)},
                                 detail=_tuxpaint_text(path.with_name(stamp + ".txt"), language)))
            continue
        if "alphabets" in relative.parts:
            continue
        name = categorize(str(relative))
        if name:
            items.append(RawItem("tuxpaint", f"tuxpaint/{relative}", stamp, name, "file", {"path": str(path)},
                                 detail=_tuxpaint_text(path.with_name(stamp + ".txt"), None), image=image))
    if small:  # a few sounds with pictures and a few spoken descriptions
        sounds = [i for i in items if i.category not in TUXPAINT_LANGUAGES.values()]
        spoken = [i for i in items if i.category in TUXPAINT_LANGUAGES.values()]
        return _take(sounds, True, 4) + _take(spoken, True, 2)
    return items


def list_openttd(root: Path, small: bool, seed: int) -> list[RawItem]:
    path = root / "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    if not path.is_file():
        return []
    items = []
    for index, (title, audio) in enumerate(read_cat(path)):
        short = title.split('". ')[0].strip('"') if title.startswith('"') else title.split(".")[0]
        name = categorize(short)
        if name and len(audio) > 100:
            items.append(RawItem("openttd", f"openttd/{index}", f"{index}-{short}", name, "cat",
                                 {"path": str(path), "index": index}, detail=short.lower()))
    return _take(items, small)


def _list_folder(source: str, base: Path, small: bool, rewrite: Callable[[Path], str | None]) -> list[RawItem]:
    items = []
    for path in _audio_files(base):
        name = rewrite(path)
        if name:
            relative = path.relative_to(base).with_suffix("")
            items.append(RawItem(source, f"{source}/{relative}", str(relative), name, "file", {"path": str(path)},
                                 detail=path.stem))
    return _take(items, small)


def list_minetest(root: Path, small: bool, seed: int) -> list[RawItem]:
    def rule(path: Path) -> str | None:
        stem = re.sub(r"^(default|env_sounds|fire|tnt|doors|carts|xpanes|player)_", "", path.stem)
        stem = re.sub(r"\.\d+$", "", stem)
        return None if "soundstuff" in path.stem else categorize(stem)

    return _list_folder("minetest", root / "usr/share/games/minetest/games", small, rule)


def list_wesnoth(root: Path, small: bool, seed: int) -> list[RawItem]:
    items = []
    for base in (root / "usr/share/games/wesnoth/1.16/data", root / "usr/share/games/wesnoth/1.16/sounds"):
        items += _list_folder("wesnoth", base, False, lambda p: categorize(p.stem))
    return _take(items, small)


def list_supertuxkart(root: Path, small: bool, seed: int) -> list[RawItem]:
    def rule(path: Path) -> str | None:
        if path.parent.name == "music" or "Theme" in path.stem or "Remix" in path.stem or path.stem in ("intro2", "beneath_the_rabbit_hole"):
            return "music"
        return categorize(path.stem)

    return _list_folder("supertuxkart", root / "usr/share/games/supertuxkart/data", small, rule)


def list_sonicpi(root: Path, small: bool, seed: int) -> list[RawItem]:
    def rule(path: Path) -> str | None:
        stem = path.stem
        if stem.startswith("loop_"):
            return categorize(stem, groups=("music",)) or "music"
        if stem.startswith("ambi_"):
            return categorize(stem) or "drone"
        if stem.startswith("bass_"):
            return "bass"
        if stem.startswith("vinyl_") or stem.startswith("glitch_perc"):
            return None
        return categorize(stem)

    return _list_folder("sonicpi", root / "usr/share/sonic-pi/samples", small, rule)


def list_hydrogen(root: Path, small: bool, seed: int) -> list[RawItem]:
    base = root / "usr/share/hydrogen/data/drumkits"
    items = []
    for kit in sorted(base.glob("*/drumkit.xml")) if base.is_dir() else []:
        try:
            tree = ElementTree.parse(kit)
        except ElementTree.ParseError:
            continue
        seen = set()
        for instrument in tree.getroot().iter():
            if not instrument.tag.endswith("instrument"):
                continue
            name_node = next((c for c in instrument if c.tag.endswith("name")), None)
            if name_node is None or not name_node.text:
                continue
            label = name_node.text
            category_name = categorize(f"drum {label}", groups=("music",))
            for node in instrument.iter():
                if node.tag.endswith("filename") and node.text and node.text not in seen:
                    seen.add(node.text)
                    path = kit.parent / node.text
                    if path.is_file() and category_name:
                        items.append(RawItem("hydrogen", f"hydrogen/{kit.parent.name}/{node.text}",
                                             f"{kit.parent.name}-{Path(node.text).stem}", category_name, "file",
                                             {"path": str(path)}, detail=label.lower()))
    return _take(items, small)


def _asterisk_transcripts(root: Path) -> dict[str, str]:
    path = root / "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
    result = {}
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if ":" in line and not line.startswith(";"):
                    key, text = line.split(":", 1)
                    result[key.strip()] = text.strip()
    return result


def _list_asterisk(root: Path, small: bool, folder: str, source: str, category_name: str) -> list[RawItem]:
    base = root / "usr/share/asterisk/sounds" / folder
    transcripts = _asterisk_transcripts(root)
    items = []
    for path in _audio_files(base):
        key = str(path.relative_to(base).with_suffix(""))
        text = transcripts.get(key)
        if key.startswith("silence") or (text is not None and text.startswith("[")):
            continue
        if any(word in key for word in ("beep", "tone", "ring")):
            continue
        items.append(RawItem(source, f"{source}/{key}", key, category_name, "file", {"path": str(path)}, detail=text))
    return items[:4] if small else items


def list_asterisk_en(root: Path, small: bool, seed: int) -> list[RawItem]:
    return _list_asterisk(root, small, "en_US_f_Allison", "asterisk-en", "female speech")


def list_asterisk_es(root: Path, small: bool, seed: int) -> list[RawItem]:
    return _list_asterisk(root, small, "es_MX_f_Allison", "asterisk-es", "spanish speech")


def _speeds(seed: int, key: str, low: int, high: int) -> int:
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return low + digest[0] % (high - low + 1)


def list_espeak(root: Path, small: bool, seed: int) -> list[RawItem]:
    items = []
    for voice, language, category_name in speech.ESPEAK_VOICES:
        for index, sentence in enumerate(speech.SENTENCES[language]):
            key = f"espeak/{voice}/{index}"
            speed = _speeds(seed, key, 120, 200)
            pitch = _speeds(seed, key + "p", 30, 70)
            items.append(RawItem("espeak", key, f"{voice}-{index}", category_name, "tts",
                                 {"command": ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                                              "-w", "{out}", sentence]}, detail=sentence))
    return _take(items, small, 3)


def list_flite(root: Path, small: bool, seed: int) -> list[RawItem]:
    items = []
    for voice, category_name in speech.FLITE_VOICES:
        for index, sentence in enumerate(speech.SENTENCES["en"]):
            key = f"flite/{voice}/{index}"
            stretch = _speeds(seed, key, 80, 125) / 100
            items.append(RawItem("flite", key, f"{voice}-{index}", category_name, "tts",
                                 {"command": ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch}",
                                              "-t", sentence, "-o", "{out}"]}, detail=sentence))
    return _take(items, small, 2)


def list_festival(root: Path, small: bool, seed: int) -> list[RawItem]:
    items = []
    for voice, folder, category_name in speech.FESTIVAL_VOICES:
        if not (root / folder).is_dir():
            continue
        for index, sentence in enumerate(speech.SENTENCES["en"][::2]):
            key = f"festival/{voice}/{index}"
            items.append(RawItem("festival", key, f"{voice}-{index}", category_name, "tts",
                                 {"command": ["text2wave", "-eval", f"({voice})", "-o", "{out}"],
                                  "stdin": sentence}, detail=sentence))
    return _take(items, small, 2)


MUSIC_PIECES = 160
MUSIC_COMPOSERS = ("bach", "monteverdi", "palestrina", "trecento", "josquin")


def list_music(root: Path, small: bool, seed: int) -> list[RawItem]:
    from music21 import corpus

    soundfonts = [str(root / p) for p in ("usr/share/sounds/sf2/FluidR3_GM.sf2", "usr/share/sounds/sf2/TimGM6mb.sf2")
                  if (root / p).is_file()]
    paths: list[str] = []
    for composer in MUSIC_COMPOSERS:
        found = sorted(str(p) for p in corpus.getComposer(composer))
        paths += found
    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), size=min(len(paths), MUSIC_PIECES), replace=False))]
    if small:
        chosen = chosen[:2]
    items = []
    for index, path in enumerate(chosen):
        name = Path(path).stem
        items.append(RawItem("music21", f"music21/{name}", name, None, "music",
                             {"score": path, "soundfont": soundfonts[index % len(soundfonts)], "seed": seed,
                              "max_parts": 4}, detail=name))
    return items


def _family(stem: str) -> str:
    """A file name without its variant number: ``cattle_03`` and ``cattle_07`` are one split unit."""
    return re.sub(r"[_ ]?\d+[a-z]?$", "", stem).lower() or stem.lower()


def _named_items(source: str, entries: list[tuple[str, str, dict, str]], small: bool) -> list[RawItem]:
    """RawItems from ``(relative name, category, loader args, loader)``; variants of one family share a key."""
    items = []
    for relative, category_name, args, loader in entries:
        folder, _, stem = relative.rpartition("/")
        key = f"{source}/{folder}/{_family(stem)}" if folder else f"{source}/{_family(stem)}"
        items.append(RawItem(source, key, relative, category_name, loader, args, detail=stem.replace("_", " ")))
    return _take(items, small)


def _first_of_each_content(paths: list[Path]) -> list[Path]:
    """Paths with byte-identical files dropped after the first (games ship one sound in many folders)."""
    seen: set[str] = set()
    kept = []
    for path in paths:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kept.append(path)
    return kept


def _pick(text: str, table: tuple[tuple[str, str | None], ...]) -> str | None:
    """The category of the first ``(regex, category)`` of ``table`` that matches, else the vocabulary's rules.

    A table entry with category ``None`` drops the file (voice lines, interface clicks, sounds with no
    category of their own)."""
    lowered = text.lower()
    for pattern, name in table:
        if re.search(pattern, lowered):
            return name
    return categorize(_family(Path(text).name))


WIDELANDS_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"music|/click|lobby|message|military/|create_construction|goldspin|fisher|farm_animal|moose|stag|scythe|weav|"
     r"blackwood|mortar|taverns/|ping", None),
    (r"boar", "pig"), (r"coyote", "wolf"), (r"/ox_", "cow"), (r"crickets", "insect"),
    (r"tree_falling|falling_tools", "crash"),
    (r"saw|stonecutter|stonemason|stonegrind|woodcutting|smith|sharpening|hammer", "tools"),
    (r"bubble", "water"), (r"mill_turning|furnace", "machine"),
)


def _file_entries(base: Path, paths: list[Path], table: tuple[tuple[str, str | None], ...]) -> list[tuple[str, str, dict, str]]:
    """``_named_items`` entries for the files (relative to ``base``) that ``table`` gives a category."""
    entries = []
    for path in paths:
        relative = str(path.relative_to(base).with_suffix(""))
        name = _pick(relative, table)
        if name:
            entries.append((relative, name, {"path": str(path)}, "file"))
    return entries


def _table_items(source: str, base: Path, table: tuple[tuple[str, str | None], ...], small: bool,
                 folders: tuple[str, ...] = ("",)) -> list[RawItem]:
    """Items of the audio files under ``folders`` of ``base`` (byte-identical copies dropped after the first), named
    by ``table``; the listing of a game's data folder."""
    paths = _first_of_each_content([path for folder in folders for path in _audio_files(base / folder)])
    return _named_items(source, _file_entries(base, paths, table), small)


def list_widelands(root: Path, small: bool, seed: int) -> list[RawItem]:
    return _table_items("widelands", root / "usr/share/games/widelands/data", WIDELANDS_TABLE, small,
                        ("sound", "world/critters"))


MEGAGLEST_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"hell|good_morning|desertday", None),
    (r"/(day|night)$", "nature"), (r"cow", "cow"),
)


def list_megaglest(root: Path, small: bool, seed: int) -> list[RawItem]:
    """The ambience and animal loops of MegaGlest's tilesets (its unit sounds are mostly voice lines)."""
    return _table_items("megaglest", root / "usr/share/games/megaglest/tilesets", MEGAGLEST_TABLE, small)


HEDGEWARS_DATA = "usr/share/games/hedgewars/Data"
HEDGEWARS_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"^sounds/voices/[^/]+/laugh", "laughter"), (r"^sounds/voices/[^/]+/poisoncough", "cough"),
    (r"^sounds/voices/[^/]+/(ooff|ow)\d", "grunt"),
    (r"^sounds/voices/default_es/", "spanish speech"), (r"^sounds/voices/(default_ru|russian)/", "russian speech"),
    (r"^sounds/voices/", None),  # English packs: one actor each, whose voice the file names do not say
    (r"hog|rubberduck_die|suddendeath|shutterclick|valkyries|firepunch|knife", None),
    (r"shotgunfire|minigun", "gunshot"), (r"/steps$", "footsteps"), (r"droplet", "water"), (r"^music/", "music"),
)


def list_hedgewars(root: Path, small: bool, seed: int) -> list[RawItem]:
    """Hedgewars' weapon and event sounds, its music, and from its voice packs (one actor each) the laughs, coughs
    and pain grunts of every pack and all lines of the Spanish and Russian ones."""
    return _table_items("hedgewars", root / HEDGEWARS_DATA, HEDGEWARS_TABLE, small, ("Sounds", "Music"))


ZERO_AD_ARCHIVE = "usr/share/games/0ad/mods/public/public.zip"
ZERO_AD_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"^audio/(voice|interface|music)/|camel|generic|ram_|onager|ballist|siege_select|/ship/|amb_port", None),
    (r"flamingo|peacock", "bird"), (r"goat", "sheep"), (r"hstep|mounted/movement", "horse"),
    (r"elephant", "elephant"), (r"lion", "big cat"), (r"fauna/.*horse", "horse"),
    (r"fs_|footstep|foorstep|mstep|human/movement", "footsteps"),
    (r"human/death", "grunt"), (r"day_temperate|day_tropical|amb_farm", "nature"), (r"amb_trade", "crowd"),
    (r"river|waterfall|wave", "stream"), (r"snowstorm|windleaves|windgust|windstorm", "wind"),
    (r"musket", "gunshot"), (r"explode|collapse", "crash"), (r"/gate/", "door"),
    (r"attack/impact/", "impact"), (r"attack/weapon/", "whoosh"),
)


def _zip_entries(archive: Path, table: tuple[tuple[str, str | None], ...], folder: str = "audio/") -> list[tuple[str, str, dict, str]]:
    """``_named_items`` entries for the sounds under ``folder`` of a game's zip archive that ``table`` gives a category."""
    if not archive.is_file():
        return []
    entries = []
    with zipfile.ZipFile(archive) as bundle:  # listed once here; loaders keep one handle per worker (_zip)
        members = sorted(n for n in bundle.namelist() if n.startswith(folder) and n.endswith((".ogg", ".wav")))
    for member in members:
        relative = member.rsplit(".", 1)[0]
        name = _pick(relative, table)
        if name:
            entries.append((relative, name, {"archive": str(archive), "member": member}, "zip"))
    return entries


def list_0ad(root: Path, small: bool, seed: int) -> list[RawItem]:
    """Animals, weather, water, footsteps and battle sounds from 0 A.D.'s game archive (a zip)."""
    return _named_items("0ad", _zip_entries(root / ZERO_AD_ARCHIVE, ZERO_AD_TABLE), small)


WARZONE_ARCHIVE = "usr/share/games/warzone2100/base.wz"
WARZONE_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"^audio/taunts/.*/haha", "laughter"),
    (r"^audio/(?!sfx/)|silence|help|gmeshtdn|rocket|mortar|hwtzflgt", None),  # voice lines; launches and flights
    (r"scream", "scream"), (r"beep\d", "beep"), (r"richet|squish", "impact"), (r"bldfall", "crash"),
    (r"expl", "explosion"), (r"mgbar|mgheavy|mgtower|asltmg|can$|gaussgun", "gunshot"), (r"flmthrow|freroar", "fire"),
    (r"weld|build\d|bldstart|bldloop", "tools"), (r"lsr$", "laser"), (r"vtol", "aircraft"),
    (r"tread|hov|con-move|cyber-move|tstart|tflight|tland|thover|con-shut", "engine"), (r"splash", "water"),
    (r"oilpump|powerhum|powerspk|steam|ecmtower|nxstower", "machine"), (r".", None),
)


def list_warzone(root: Path, small: bool, seed: int) -> list[RawItem]:
    """Warzone 2100's weapon, vehicle, building and explosion sounds, and the laughs of its three taunting voices
    (its briefings and announcements are left out)."""
    return _named_items("warzone2100", _zip_entries(root / WARZONE_ARCHIVE, WARZONE_TABLE), small)


FREEDESKTOP_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"audio-channel|camera|trash|screen-capture", None),
    (r"alarm-clock", "clock"), (r"bell|phone-incoming", "bell"), (r".", "beep"),
)


def list_freedesktop(root: Path, small: bool, seed: int) -> list[RawItem]:
    base = root / "usr/share/sounds/freedesktop/stereo"
    paths = _first_of_each_content(sorted(base.glob("*.oga"))) if base.is_dir() else []  # some names are symlinks
    return _named_items("freedesktop", _file_entries(base, paths, FREEDESKTOP_TABLE), small)


OPENARENA_ARCHIVE = "usr/share/games/openarena/baseoa/pak0.pk3"
OPENARENA_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"^sound/player/footsteps/(boot|clank|flesh|mech|step)", "footsteps"), (r"^sound/player/footsteps/splash", "water"),
    (r"^sound/player/sarge/(death|pain)", "grunt"), (r"machgf|vulcanf|sshotf", "gunshot"), (r"/ric\d", "impact"),
    (r"rocklx|wstbexpl|grenlf|hgrenb", "explosion"), (r"plasmx|hyprbf|railgf|lg_fire", "laser"),
    (r"world/(fire\d|firesoft)", "fire"), (r"world/(wind\d|demonwind)", "wind"), (r"world/waterfall", "stream"),
    (r"world/drops|watr_(in|out)", "water"), (r"machinerydrone|tim_machine|tim_pump|world/fan", "machine"),
    (r"movers/doors", "door"), (r".", None),
)


def list_openarena(root: Path, small: bool, seed: int) -> list[RawItem]:
    """OpenArena's footsteps, the pain and death cries of its default voice, guns, explosions, energy weapons and
    ambient fire, wind, water and machines (from its pak0.pk3 zip)."""
    return _named_items("openarena", _zip_entries(root / OPENARENA_ARCHIVE, OPENARENA_TABLE, "sound/"), small)


LINCITY_DATA = "usr/share/games/lincity-ng/sounds"
LINCITY_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"blacksmith|^build|monumentconstruction", "tools"), (r"coalmine|oremine|industry|^mill|powercoal|recycle", "machine"),
    (r"^fire\d", "fire"), (r"^green|^parkland", "nature"), (r"^market|sportscroud", "crowd"), (r"railtrain", "train"),
    (r"^raze", "crash"), (r"rocketexplosion", "explosion"), (r"^trafic", "engine"), (r"^water", "water"), (r".", None),
)


def list_lincity(root: Path, small: bool, seed: int) -> list[RawItem]:
    """LinCity-NG's city loops: workshops, mines and mills, fire, parks, markets and crowds, trains, traffic, water."""
    return _table_items("lincity", root / LINCITY_DATA, LINCITY_TABLE, small)


SUPERTUX_DATA = "usr/share/games/supertux2"
SUPERTUX_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"^music/", "music"), (r"^sounds/(coin|coins_cleared)", "coins"), (r"^sounds/door", "door"),
    (r"^sounds/(explosion|fireworks|firecracker)", "explosion"), (r"^sounds/(fire|flame|lava)$", "fire"),
    (r"^sounds/(grunts|hurt)$", "grunt"), (r"^sounds/(lightning|thunder)$", "thunder"), (r"^sounds/rain", "rain"),
    (r"^sounds/saw", "tools"), (r"^sounds/(splash|splat)$", "water"), (r"^sounds/waterfall", "stream"),
    (r"^sounds/(thud|brick)$", "impact"), (r"^sounds/icecrash", "crash"), (r"^sounds/crystallo-shatter", "glass"),
    (r"^sounds/phone", "bell"), (r".", None),  # jingles, power-ups and Tux's voice lines
)


def list_supertux(root: Path, small: bool, seed: int) -> list[RawItem]:
    """SuperTux's music and the effects whose names say what they are (coins, doors, fire, thunder, rain, splashes)."""
    return _table_items("supertux", root / SUPERTUX_DATA, SUPERTUX_TABLE, small, ("sounds", "music"))


FREECIV_DATA = "usr/share/games/freeciv"
FREECIV_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"^stdmusic/", "music"), (r"lrgcan|medcan|mgbar|mgheavy|mortar", "gunshot"), (r"lrgexpl|smlexpl", "explosion"),
    (r"splash|inh2o", "water"), (r"thover|tread", "engine"), (r"foot", "footsteps"), (r"metbrk|woodbrk|wall01", "crash"),
    (r".", None),
)


def list_freeciv(root: Path, small: bool, seed: int) -> list[RawItem]:
    """Freeciv's standard sound set (guns, cannons, explosions, engines, splashes, footsteps) and its fanfare."""
    return _table_items("freeciv", root / FREECIV_DATA, FREECIV_TABLE, small, ("stdsounds", "stdmusic"))


BZFLAG_DATA = "usr/share/games/bzflag"
BZFLAG_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"^(boom|explosion)$", "explosion"), (r"^laser$", "laser"), (r"^(flag_alert|hunt_select)$", "beep"), (r".", None),
)


def list_bzflag(root: Path, small: bool, seed: int) -> list[RawItem]:
    """BZFlag's explosions, laser and alert beeps."""
    return _table_items("bzflag", root / BZFLAG_DATA, BZFLAG_TABLE, small)


ETR_DATA = "usr/share/games/etr"
ETR_TABLE: tuple[tuple[str, str | None], ...] = ((r"^music/", "music"), (r"tree_hit", "impact"), (r".", None))


def list_etr(root: Path, small: bool, seed: int) -> list[RawItem]:
    """Extreme Tux Racer's music and its tree crash."""
    return _table_items("etr", root / ETR_DATA, ETR_TABLE, small, ("sounds", "music"))


REDECLIPSE_DATA = "usr/share/games/redeclipse/data/sounds"
REDECLIPSE_TABLE: tuple[tuple[str, str | None], ...] = (
    (r"^music/", "music"), (r"wind\d?$", "wind"), (r"cavedrip|^ambience/water$|swimstep|splash|splosh", "water"),
    (r"creek|river|waterfall", "stream"), (r"cycadas|crickets", "insect"), (r"distant_cars", "engine"),
    (r"^ambience/fire$|burnfire|burning$|flamer/primary", "fire"), (r"forest\d", "nature"),
    (r"ambience/(morph/)?(machine\d+|hum|pneumatic)$", "machine"), (r"rain$", "rain"), (r"stormbolts", "thunder"),
    (r"ambience/(morph/)?door$", "door"), (r"concstep|footstep", "footsteps"), (r"player/(death|pain)", "grunt"),
    (r"debris", "crash"), (r"(pistol|rifle|smg|shotgun)/primary", "gunshot"), (r"(plasma|zapper)/primary", "laser"),
    (r"explode", "explosion"), (r"ricochet|thud|thwack", "impact"), (r".", None),
)


def list_redeclipse(root: Path, small: bool, seed: int) -> list[RawItem]:
    """Red Eclipse's ambient loops (wind, water, insects, forests, machines, storms), footsteps, pain, weapons,
    explosions and music; its announcer and voice lines are left out."""
    return _table_items("redeclipse", root / REDECLIPSE_DATA, REDECLIPSE_TABLE, small,
                        ("ambience", "music", "player", "sfx", "weapons"))


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source("scratch", ("scratch",), ("usr/share/scratch/Media/Sounds",), list_scratch, "CC-BY-SA-3.0 / GPL-2"),
        Source("gcompris", ("gcompris-qt-data",), ("usr/share/gcompris-qt/rcc",), list_gcompris, "CC-BY-SA-3.0 / CC-BY / public domain", version=2),
        Source("tuxpaint", ("tuxpaint-stamps-default",), ("usr/share/tuxpaint/stamps",), list_tuxpaint, "GPL-2", version=3),
        Source("openttd", ("openttd-opensfx",), ("usr/share/games/openttd/baseset/opensfx/opensfx.cat",), list_openttd, "CC-BY-3.0 / CC0 (per title)"),
        Source("minetest", ("minetest-data",), ("usr/share/games/minetest/games",), list_minetest, "CC-BY-SA-3.0 / CC0 / LGPL"),
        Source("wesnoth", ("wesnoth-1.16-data",), ("usr/share/games/wesnoth/1.16",), list_wesnoth, "GPL-2+", version=3),
        Source("supertuxkart", ("supertuxkart-data",), ("usr/share/games/supertuxkart/data",), list_supertuxkart, "CC-BY-SA / CC-BY / CC0"),
        Source("music21", ("fluidsynth", "fluid-soundfont-gm", "timgm6mb-soundfont"),
               ("", "usr/share/sounds/sf2/FluidR3_GM.sf2", "usr/share/sounds/sf2/TimGM6mb.sf2"), list_music,
               "music21 corpus (public domain scores, BSD library); FluidR3 GM (MIT) / TimGM6mb (GPL-2)",
               tools=(("fluidsynth", "fluidsynth"),), pip=(("music21", "music21"),), uses_rules=False),
        Source("sonicpi", ("sonic-pi-samples",), ("usr/share/sonic-pi/samples",), list_sonicpi, "CC0 / CC-BY-SA-4.0"),
        Source("hydrogen", ("hydrogen-drumkits",), ("usr/share/hydrogen/data/drumkits",), list_hydrogen, "GPL-2+ / CC-BY-3.0 / CC0"),
        Source("asterisk-en", ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en"),
               ("usr/share/asterisk/sounds/en_US_f_Allison", "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"),
               list_asterisk_en, "CC-BY-SA-3.0", uses_rules=False),
        Source("asterisk-es", ("asterisk-core-sounds-es-wav",), ("usr/share/asterisk/sounds/es_MX_f_Allison",),
               list_asterisk_es, "CC-BY-SA-3.0", uses_rules=False),
        Source("espeak", ("espeak-ng",), ("",), list_espeak, "GPL-3+ (synthesiser); sentences by promptsep",
               tools=(("espeak-ng", "espeak-ng"),), uses_rules=False),
        Source("flite", ("flite",), ("",), list_flite, "BSD-like (flite); sentences by promptsep", tools=(("flite", "flite"),), uses_rules=False),
        Source("festival", ("festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts"),
               ("", "usr/share/festival/voices/english/kal_diphone", "usr/share/festival/voices/english/ked_diphone",
                "usr/share/festival/voices/us/cmu_us_slt_arctic_hts"),
               list_festival, "festival (X11-like) and festvox voices (free); sentences by promptsep",
               tools=(("text2wave", "festival"),), uses_rules=False),
        Source("widelands", ("widelands-data",), ("usr/share/games/widelands/data/sound",), list_widelands,
               "GPL-2+ / CC-BY-SA (per sound)", version=2, cohort=1),
        Source("megaglest", ("megaglest-data",), ("usr/share/games/megaglest/tilesets",), list_megaglest,
               "CC-BY-SA-3.0", cohort=1),
        Source("0ad", ("0ad-data",), (ZERO_AD_ARCHIVE,), list_0ad, "CC-BY-SA-3.0", cohort=1),
        Source("freedesktop", ("sound-theme-freedesktop",), ("usr/share/sounds/freedesktop/stereo",), list_freedesktop,
               "GPL-2+ / CC-BY-SA / CC-BY", version=2, cohort=1),
        Source("hedgewars", ("hedgewars-data",), (HEDGEWARS_DATA,), list_hedgewars,
               "GPL-2 / CC-BY-SA-3.0 / MIT / BSD (per file)", cohort=2, held_out=True),
        Source("warzone2100", ("warzone2100-data",), (WARZONE_ARCHIVE,), list_warzone, "GPL-2+ / CC-BY-SA-3.0 / CC0",
               cohort=2, held_out=True),
        Source("openarena", ("openarena-data",), (OPENARENA_ARCHIVE,), list_openarena, "GPL-2+ / CC-BY-SA (per file)",
               cohort=4, held_out=True),
        # extra training sources: left out of the default build, so the shipped library and its splits stay as they are
        Source("lincity", ("lincity-ng-data",), (LINCITY_DATA,), list_lincity, "GPL-2+", cohort=3, extra=True),
        Source("supertux", ("supertux-data",), (SUPERTUX_DATA,), list_supertux, "GPL-3+ / CC-BY-SA (per file)",
               cohort=3, extra=True),
        Source("freeciv", ("freeciv-data",), (FREECIV_DATA,), list_freeciv, "GPL-2+", cohort=3, extra=True),
        Source("bzflag", ("bzflag-data",), (BZFLAG_DATA,), list_bzflag, "LGPL-2.1 / MPL-2.0", cohort=3, extra=True),
        Source("redeclipse", ("redeclipse-data",), (REDECLIPSE_DATA,), list_redeclipse, "CC-BY-SA / CC0 / CC-BY (per file)",
               cohort=3, extra=True),
        Source("etr", ("extremetuxracer-data",), (ETR_DATA,), list_etr, "GPL-2+ / CC-BY-SA", cohort=3, extra=True),
    ]
}
DEFAULT_SOURCES: tuple[str, ...] = tuple(name for name, source in SOURCES.items() if not (source.held_out or source.extra))
EXTRA_SOURCES: tuple[str, ...] = tuple(name for name, source in SOURCES.items() if source.extra)


def resolve_sources(text: str) -> tuple[str, ...]:
    """Source names from a comma-separated ``--sources`` value; ``default`` stands for DEFAULT_SOURCES and ``extra``
    for EXTRA_SOURCES (e.g. ``default,extra``: the default library widened by the extra training sources)."""
    groups = {"default": DEFAULT_SOURCES, "extra": EXTRA_SOURCES}
    names: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        names.extend(name for name in groups.get(word, (word,) if word else ()) if name not in names)
    return tuple(names) or DEFAULT_SOURCES  # unknown names are the build's to refuse (build.check_sources)

def licence_of(source: Source, root: Path) -> str:
    """The licence summary of a source's audio (from the packages' copyright files, condensed by hand)."""
    return source.license
