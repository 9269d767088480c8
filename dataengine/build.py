"""The data-engine builder: sources -> library clips -> splits -> fixed mixtures -> report.

Output layout under ``out``::

    library/<source>/<clip>.wav   processed clips (mono, ``rate``, loudness normalised)
    library/<source>/clips.jsonl  per-source records; library/<source>/stamp.json (cache key)
    library.jsonl                 all clips with their split
    images/emoji/*.png, images/<source>/*.png   visual prompts
    {train,val,test}.jsonl + mix/ target/ residual/   fixed mixtures (DESIGN manifest format)
    report.md
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from dataengine.audio import ProcessConfig, process
from dataengine.images import copy_picture, emoji_paths, render_emoji_set
from dataengine.library import load_library
from dataengine.mixing import ClipCache, group_by_category, make_mixture
from dataengine.sources import DEFAULT_SOURCES, SOURCES, RawItem, Source, licence_of, load_item, slug
from dataengine.vocabulary import CATEGORIES, RULES, av_caption, captions, visual_caption
from encoders.errors import PromptsepError

ENGINE_VERSION = 3
SPLITS = ("train", "val", "test")
RULES_DIGEST = hashlib.sha1(json.dumps(RULES).encode()).hexdigest()[:12]
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}


@dataclass
class BuildConfig:
    """Everything that decides the content of a build."""

    out: Path
    seed: int = 0
    sources: tuple[str, ...] = DEFAULT_SOURCES  # held-out sources only when named
    rate: int = 16_000
    small: bool = False
    root: Path = Path("/")
    workers: int = 2
    seconds: float = 4.0
    mixtures: dict[str, int] = field(default_factory=lambda: {"train": 2000, "val": 400, "test": 600})
    max_seconds: float = 10.0
    max_segments: int = 6

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.root = Path(self.root)
        if self.small:
            self.mixtures = {"train": 40, "val": 16, "test": 16}
            self.max_segments = 1

    def process_config(self) -> ProcessConfig:
        return ProcessConfig(rate=self.rate, max_seconds=self.max_seconds, max_segments=self.max_segments)


@dataclass
class BuildResult:
    clips: int
    seconds_per_split: dict[str, float]
    built_sources: list[str]
    skipped_sources: list[str]
    cached_sources: list[str]
    report: Path
    elapsed: float


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _hash_float(*parts: object) -> float:
    digest = hashlib.sha1(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


# --------------------------------------------------------------------------- clip processing


def _process_item(task: tuple[RawItem, ProcessConfig, str, dict[str, list[str]]]) -> list[dict]:
    """Worker: load one raw item, process it into segments, write wavs, return records."""
    item, config, out_text, emoji = task
    out = Path(out_text)
    try:
        stems = load_item(item)
    except Exception as error:  # a broken source file must not stop the build
        return [{"error": f"{item.key}: {type(error).__name__}: {error}"}]
    records = []
    folder = out / "library" / item.source
    for stem in stems:
        category = stem.category or item.category
        if category not in CATEGORIES:
            continue
        segments = process(stem.wav, stem.rate, config)
        base = slug(item.name) + (f"-{stem.suffix}" if stem.suffix else "")
        image = None
        if item.image:
            destination = out / "images" / item.source / (slug(Path(item.image).parent.name + "-" + Path(item.image).stem) + ".png")
            try:
                copy_picture(Path(item.image), destination)
                image = str(destination.relative_to(out))
            except OSError:
                image = None
        for index, segment in enumerate(segments):
            clip_id = f"{item.source}-{base}-{index}"
            path = folder / f"{clip_id}.wav"
            sf.write(str(path), segment, config.rate, subtype="PCM_16")
            variants = emoji[category]
            clip_image = image or variants[int(_hash_float(clip_id) * len(variants))]
            detail = stem.detail or item.detail
            records.append({
                "id": clip_id,
                "audio": str(path.relative_to(out)),
                "category": category,
                "group": CATEGORIES[category].group,
                "captions": captions(category, detail),
                "visual_caption": visual_caption(category),
                "av_caption": av_caption(category),
                "image": clip_image,
                "source": item.source,
                "key": item.key,
                "duration": round(len(segment) / config.rate, 3),
                "text": detail,
            })
    return records


def unique_names(items: list[RawItem]) -> list[RawItem]:
    """Items whose names give the same clip id get a short hash of their key and loader arguments appended.

    Clip ids (and wav file names) come from ``slug(name)``. Two source files with one name (a
    penny's description under ``us/coins`` and under ``canadian/coins``, or wesnoth's ``mace.ogg``
    in two folders) would otherwise write one file for two records, which can then sit in two
    splits. Names that are already unique stay as they are, so no other clip is renamed.
    """
    counts = Counter(slug(item.name) for item in items)
    named = []
    for item in items:
        base = slug(item.name)
        if counts[base] > 1:
            digest = hashlib.sha1(f"{item.key}:{sorted(item.args.items())}".encode()).hexdigest()[:6]
            item = replace(item, name=f"{base[:52]}-{digest}")
        named.append(item)
    return named


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")


def _stamp(source: Source, config: BuildConfig) -> dict:
    return {
        "engine_version": ENGINE_VERSION,
        "extractor_version": source.version,
        "package_version": source.package_version(config.root),
        "rate": config.rate,
        "small": config.small,
        "seed": config.seed,
        "max_seconds": config.max_seconds,
        "max_segments": config.max_segments,
        "rules": RULES_DIGEST if source.uses_rules else None,
    }


def build_source(source: Source, config: BuildConfig, emoji: dict[str, list[str]], pool) -> tuple[list[dict], bool]:
    """Build (or reuse from cache) one source. Returns its records and whether the cache was used."""
    folder = config.out / "library" / source.name
    stamp_path = folder / "stamp.json"
    records_path = folder / "clips.jsonl"
    stamp = _stamp(source, config)
    if stamp_path.is_file() and records_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == stamp:
                records = [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()]
                return records, True
        except json.JSONDecodeError:
            pass
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    items = unique_names(source.lister(config.root, config.small, config.seed))
    tasks = [(item, config.process_config(), str(config.out), emoji) for item in items]
    records: list[dict] = []
    errors: list[str] = []
    iterator = pool.imap(_process_item, tasks, chunksize=4) if pool is not None else map(_process_item, tasks)
    for result in tqdm(iterator, total=len(tasks), desc=f"{source.name:>13}", unit="item", file=sys.stderr,
                       leave=False, disable=None):
        for record in result:
            (errors.append(record["error"]) if "error" in record else records.append(record))
    if errors:
        _log(f"warning: {source.name}: {len(errors)} item(s) failed, e.g. {errors[0]}")
    records.sort(key=lambda r: r["id"])
    licence = licence_of(source, config.root)
    for record in records:
        record["license"] = licence
    records_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    stamp_path.write_text(json.dumps(stamp, indent=1))
    return records, False


# --------------------------------------------------------------------------- splits


def assign_splits(records: list[dict], seed: int) -> None:
    """Split by source file (``key``), deterministic from ``seed``, stratified by category.

    Within each category the keys are ordered by a seeded hash; ~10 % go to val and ~10 % to
    test (at least one each when the category has >= 3 keys). Categories with fewer keys draw
    each key's split from the same hash with 80/10/10 odds. All clips of a key share its split.

    Sources are stratified within their :attr:`Source.cohort`: a source added later gets its own
    cohort, so adding it never moves a clip of an earlier source to another split (a model
    trained on the old library has then never seen a clip of the new val or test split).
    """
    key_group: dict[str, tuple[int, str]] = {}
    for record in records:
        source = SOURCES.get(record.get("source", ""))
        key_group.setdefault(record["key"], (source.cohort if source else 0, record["category"]))
    keys_by_group: dict[tuple[int, str], list[str]] = defaultdict(list)
    for key, group in key_group.items():
        keys_by_group[group].append(key)
    split_of: dict[str, str] = {}
    for keys in keys_by_group.values():
        keys.sort(key=lambda k: _hash_float(seed, "split", k))
        if len(keys) >= 3:
            n_val = max(1, round(len(keys) * SPLIT_FRACTIONS["val"]))
            n_test = max(1, round(len(keys) * SPLIT_FRACTIONS["test"]))
            for index, key in enumerate(keys):
                split_of[key] = "test" if index < n_test else "val" if index < n_test + n_val else "train"
        else:
            for key in keys:
                draw = _hash_float(seed, "split-small", key)
                split_of[key] = "test" if draw < 0.1 else "val" if draw < 0.2 else "train"
    for record in records:
        record["split"] = split_of[record["key"]]


# --------------------------------------------------------------------------- mixtures


def write_float_wav(path: Path, wav: np.ndarray, rate: int) -> None:
    """32-bit float WAV without libsndfile's time-stamped PEAK chunk, so equal audio gives equal bytes."""
    from scipy.io import wavfile

    wavfile.write(str(path), rate, np.asarray(wav, dtype=np.float32))


def _mixture_stamp(config: BuildConfig, split: str, count: int, library_digest: str, name: str) -> dict:
    stamp = {"engine_version": ENGINE_VERSION, "seed": config.seed, "split": split, "count": count,
             "seconds": config.seconds, "rate": config.rate, "library": library_digest}
    return stamp if name == split else {**stamp, "name": name}


def write_mixtures(config: BuildConfig, split: str, count: int, library_digest: str, name: str | None = None) -> int:
    """Write ``count`` fixed mixtures of ``split`` (skipped when present with the same stamp).

    ``name`` (default: the split) names the manifest ``<out>/<name>.jsonl`` and prefixes the ids. Mixture ``i`` is
    drawn from the same random stream whatever the name or ``config.seconds``, so a longer build of a split has the
    same target category, clips and companions per line as the split's own mixtures, only placed in a longer window.
    """
    name = name or split
    out = config.out
    manifest = out / f"{name}.jsonl"
    stamp_path = out / "mix" / f".{name}.stamp.json"
    stamp = _mixture_stamp(config, split, count, library_digest, name)
    if manifest.is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        return 0
    clips = [c for c in load_library(out) if c.split == split]
    by_category = group_by_category(clips)
    for folder in ("mix", "target", "residual"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    lines = []
    if len(by_category) < 2:
        _log(f"warning: split {split} has clips of {len(by_category)} categories; no {split} mixtures written")
        count = 0
    load = ClipCache(config.rate)
    for index in tqdm(range(count), desc=f"{split + ' mixtures':>13}", unit="mix", file=sys.stderr, leave=False,
                      disable=None):
        rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
        mixture = make_mixture(by_category, rng, load, config.seconds, config.rate, augment=None)
        mixture_id = f"{name}-{index:05d}"
        paths = {folder: f"{folder}/{mixture_id}.wav" for folder in ("mix", "target", "residual")}
        for folder, wav in (("mix", mixture.mixture), ("target", mixture.target), ("residual", mixture.residual)):
            write_float_wav(out / paths[folder], wav, config.rate)
        lines.append(json.dumps({
            "id": mixture_id,
            "audio": paths["mix"],
            "prompt": mixture.prompt,
            "image": str(mixture.image.relative_to(out)) if mixture.image else None,
            "video": None,
            "spans": mixture.spans,
            "target": paths["target"],
            "residual": paths["residual"],
            "category": mixture.category,
            "group": mixture.group,
            "sources": mixture.sources,
            "snr_db": round(mixture.snr_db, 3),
        }, ensure_ascii=False))
    manifest.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    stamp_path.write_text(json.dumps(stamp))
    return count


def write_long_mixtures(out: Path, split: str, seconds: float, count: int | None = None) -> Path:
    """Mixtures of a built split ``seconds`` long (a long-recording probe): ``<out>/<split>_long<seconds>.jsonl``.

    Line ``i`` draws the same target category, clips and companions as line ``i`` of ``<split>.jsonl``, placed in
    the longer window the way a 4 s mixture places them (a long clip cropped, a short one at a random offset or
    repeated). ``count`` defaults to the split's own number of mixtures. Reuses the library of ``out``.
    """
    out = Path(out)
    library, stamp_file = out / "library.jsonl", out / "mix" / f".{split}.stamp.json"
    if not library.is_file() or not stamp_file.is_file():
        raise PromptsepError(f"{out} has no built {split} split; run `promptsep data build --out {out}` first")
    if not seconds > 0:
        raise PromptsepError(f"--seconds must be positive, got {seconds:g}")
    stamp = json.loads(stamp_file.read_text())
    config = BuildConfig(out=out, seed=stamp["seed"], rate=stamp["rate"], seconds=float(seconds))
    count = stamp["count"] if count is None else count
    name = f"{split}_long{seconds:g}"
    digest = hashlib.sha1(library.read_bytes()).hexdigest()
    write_mixtures(config, split, count, digest, name=name)
    return out / f"{name}.jsonl"


# --------------------------------------------------------------------------- report


def write_report(config: BuildConfig, records: list[dict], skipped: dict[str, list[str]], elapsed: float,
                 mixture_counts: dict[str, int]) -> Path:
    hours = defaultdict(float)
    clips = Counter()
    categories: dict[str, set] = defaultdict(set)
    per_source: dict[str, list] = defaultdict(lambda: [0, 0.0, "", set()])
    per_category = defaultdict(lambda: Counter())
    for record in records:
        hours[record["split"]] += record["duration"] / 3600
        clips[record["split"]] += 1
        categories[record["split"]].add(record["category"])
        entry = per_source[record["source"]]
        entry[0] += 1
        entry[1] += record["duration"] / 3600
        entry[2] = record["license"]
        entry[3].add(record["category"])
        per_category[record["category"]][record["split"]] += 1
    lines = [
        "# promptsep data-engine report",
        "",
        f"Built in {elapsed:.0f} s (seed {config.seed}, {config.rate} Hz mono, clips <= {config.max_seconds:g} s, "
        f"{'small' if config.small else 'full'} build) from installed packages under `{config.root}`.",
        "",
        "Training mixtures are drawn **on the fly** from the train split of the library "
        "(`dataengine.mixing.MixtureSampler`, with augmentation); the fixed `train.jsonl` is a modest "
        "snapshot. Val/test mixtures are fixed and never augmented. Splits are by source file.",
        "",
        "## Splits",
        "",
        "| split | clips | hours | categories | fixed mixtures |",
        "|---|---:|---:|---:|---:|",
    ]
    for split in SPLITS:
        lines.append(f"| {split} | {clips[split]} | {hours[split]:.2f} | {len(categories[split])} | {mixture_counts.get(split, 0)} |")
    lines += ["", f"Distinct training material: **{hours['train']:.2f} h** of library clips in the train split.", "",
              "## Sources", "", "| source | clips | hours | categories | licence |", "|---|---:|---:|---:|---|"]
    for name in sorted(per_source):
        count, h, licence, cats = per_source[name]
        lines.append(f"| {name} | {count} | {h:.2f} | {len(cats)} | {licence} |")
    if skipped:
        lines += ["", "Skipped sources (missing packages):", ""]
        for name, reasons in skipped.items():
            lines += [f"- {name}: {reason}" for reason in reasons]
    lines += ["", f"## Categories ({len(per_category)} with clips, {len(CATEGORIES)} in the vocabulary)", "",
              "| category | group | train | val | test |", "|---|---|---:|---:|---:|"]
    for name in sorted(per_category, key=lambda n: (CATEGORIES[n].group, n)):
        counts = per_category[name]
        lines.append(f"| {name} | {CATEGORIES[name].group} | {counts['train']} | {counts['val']} | {counts['test']} |")
    path = config.out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- entry point


def check_sources(names: tuple[str, ...], root: Path) -> tuple[list[Source], dict[str, list[str]]]:
    """Split the requested sources into available ones and missing ones (with reasons)."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise PromptsepError(f"unknown data source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)} "
                             "(or default, extra: the default and the extra training sources)")
    available, missing = [], {}
    for name in names:
        reasons = SOURCES[name].missing(root)
        if reasons:
            missing[name] = reasons
        else:
            available.append(SOURCES[name])
    return available, missing


def build(config: BuildConfig) -> BuildResult:
    """Build (incrementally) the data set described by ``config``; returns counts and the report path."""
    start = time.time()
    config.out.mkdir(parents=True, exist_ok=True)
    available, missing = check_sources(config.sources, config.root)
    for name, reasons in missing.items():
        for reason in reasons:
            _log(f"warning: skipping source {name}: {reason}")
    if not available:
        raise PromptsepError("no data source is available: install the Debian packages listed in "
                             "dataengine/apt-packages.txt (as root: `make data` does it)")
    emoji = emoji_paths(config.out)
    records: list[dict] = []
    built, cached = [], []
    pool = None
    if config.workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(config.workers, initializer=_worker_init)
    try:
        for source in available:
            source_start = time.time()
            source_records, from_cache = build_source(source, config, emoji, pool)
            (cached if from_cache else built).append(source.name)
            seconds = sum(r["duration"] for r in source_records)
            _log(f"{source.name:>13}: {len(source_records)} clips, {seconds / 3600:.2f} h"
                 f"{' (cached)' if from_cache else f' in {time.time() - source_start:.0f} s'}")
            records += source_records
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    records.sort(key=lambda r: r["id"])
    render_emoji_set(config.out, config.root, config.seed, categories=sorted({r["category"] for r in records}))
    assign_splits(records, config.seed)
    library_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (config.out / "library.jsonl").write_text(library_text, encoding="utf-8")
    digest = hashlib.sha1(library_text.encode()).hexdigest()
    mixture_counts = {}
    for split in SPLITS:
        write_mixtures(config, split, config.mixtures[split], digest)
        manifest = config.out / f"{split}.jsonl"
        mixture_counts[split] = sum(1 for line in manifest.read_text().splitlines() if line.strip())
    elapsed = time.time() - start
    report = write_report(config, records, missing, elapsed, mixture_counts)
    per_split = defaultdict(float)
    for record in records:
        per_split[record["split"]] += record["duration"]
    return BuildResult(len(records), dict(per_split), built, list(missing), cached, report, elapsed)

