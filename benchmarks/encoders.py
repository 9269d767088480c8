"""PE-AV encoder benchmark: cross-modal retrieval, zero-shot classification, speed.

    python -m benchmarks.encoders --manifest data/test.jsonl --json out/encoders.json [--bundle DIR]

Galleries (each a set of clips with a category): the data-engine library's clips of the manifest's
split (``library.jsonl`` next to the manifest, when present) and the manifest's ``target`` files.
For each gallery, beside a random-init model of the same architecture (same frozen MiniLM text
tower and codec front end, untrained audio/visual towers):

- text -> audio R@1 / R@5: one query per category (its name, a training phrasing) and one per
  held-out paraphrase never used in training ("canine barking"), also anchored (heard as its nearest
  training phrasing, :mod:`encoders.anchors`, as the separator hears it); a hit is a clip of that category;
- image -> audio R@1 / R@5: one query per distinct picture of the gallery (its category is the
  picture's clip's);
- picture zero-shot accuracy: each distinct picture against one prompt per category (the name), overall and
  per group (``speech | music | animals | events | ambience``): does the visual tower put a picture next
  to its category's words (the separator's picture prompts read this tower);
- zero-shot accuracy: each clip against one prompt per category of the library (the category name),
  against held-out paraphrases (mean of each category's held-out prompt embeddings), and against
  the mean embedding of all of each category's phrasings (prompt ensembling, as CLIP's zero-shot
  classifiers do; labels and phrasings only, no audio of the category).

Speed (2 CPU threads, and 1 thread for a busy machine): median milliseconds to embed one prompt and one 10 s clip (from the
waveform through the codec front end, and from codec latents), and their sum.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import DEFAULT_MANIFEST, markdown_table, read_manifest, write_json

warnings.filterwarnings("ignore", message=".*weight_norm.*")

SPEED_SECONDS = 10.0
SPEED_REPEATS = 10
SPEED_WARMUP = 5  # oneDNN picks and caches its kernels over the first few calls (those run about 2x slower)


def _load_wav(path: str, rate: int) -> torch.Tensor:
    from encoders.audio_io import load_audio

    return load_audio(path, sample_rate=rate, channels=1)[0]


def _cap(items: list[dict], per_category: int | None, seed: int = 0) -> list[dict]:
    """At most ``per_category`` random items per category (the library is very unbalanced)."""
    if per_category is None:
        return items
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    counts: dict[str, int] = {}
    kept = []
    for i in order.tolist():
        category = items[i]["category"]
        if counts.get(category, 0) < per_category:
            counts[category] = counts.get(category, 0) + 1
            kept.append(i)
    return [items[i] for i in sorted(kept)]


def galleries(manifest: Path, rows: list[dict], per_category: int | None) -> dict[str, list[dict]]:
    """``name -> [{"audio", "category", "image"}]`` for the library split and the manifest targets,
    at most ``per_category`` clips per category each."""
    out: dict[str, list[dict]] = {}
    library = manifest.parent / "library.jsonl"
    split = manifest.stem
    if library.is_file():
        from dataengine.library import load_library

        clips = [c for c in load_library(manifest.parent) if c.split == split]
        out[f"library {split} clips"] = [
            {"audio": str(c.path), "category": c.category, "image": str(c.image) if c.image else None} for c in clips
        ]
        out[f"library {split} clips"] = _cap(out[f"library {split} clips"], per_category)
    seen: set[str] = set()
    targets = []
    for row in rows:
        if row.get("target") and row.get("category") and row["target"] not in seen:
            seen.add(row["target"])
            targets.append({"audio": row["target"], "category": row["category"], "image": row.get("image")})
    if targets:
        out["manifest targets"] = _cap(targets, per_category)
    return out


def known_categories(manifest: Path, gallery_sets: dict[str, list[dict]], vocabulary: bool = False) -> list[str]:
    """Categories of the whole library (the zero-shot label set), else those of the galleries; with ``vocabulary``,
    all the vocabulary's names (for a held-out library that has only a few of them)."""
    if vocabulary:
        from dataengine.vocabulary import CATEGORIES

        return sorted(CATEGORIES)
    library = manifest.parent / "library.jsonl"
    if library.is_file():
        from dataengine.library import load_library

        return sorted({c.category for c in load_library(manifest.parent)})
    return sorted({item["category"] for items in gallery_sets.values() for item in items})


def heldout(category: str) -> list[str]:
    try:
        from dataengine.vocabulary import heldout_prompts

        return heldout_prompts(category)
    except (ImportError, KeyError):
        return []


def _vocabulary_entry(category: str):
    """The data engine's vocabulary entry of ``category``; None outside the vocabulary (or without the data engine)."""
    try:
        from dataengine.vocabulary import category as lookup

        return lookup(category)
    except (ImportError, KeyError):
        return None


def phrasings(category: str) -> list[str]:
    """The category's name and training phrasings (just the name outside the vocabulary)."""
    entry = _vocabulary_entry(category)
    return list(entry.phrasings) if entry else [category]


def category_group(category: str) -> str:
    """The vocabulary group of a category (``"other"`` outside the vocabulary)."""
    entry = _vocabulary_entry(category)
    return entry.group if entry else "other"


def accuracy_by_group(embeds: torch.Tensor, labels: list[int], class_text: torch.Tensor, groups: list[str]) -> dict[str, float]:
    """Zero-shot accuracy of ``embeds`` ``(M, E)`` against ``class_text`` ``(C, E)`` per group of the items'
    classes (``groups[c]`` names class ``c``'s group), plus ``"all"``."""
    from encoders.peav_train import zero_shot_accuracy

    labels_t = torch.tensor(labels)
    out = {"all": zero_shot_accuracy(embeds, labels_t, class_text)}
    for group in sorted({groups[c] for c in labels}):
        mine = torch.tensor([groups[c] == group for c in labels])
        out[group] = zero_shot_accuracy(embeds[mine], labels_t[mine], class_text)
    return out


def class_embeddings(encoder, prompts_per_class: list[list[str]]) -> torch.Tensor:
    """One unit vector per class: the normalised mean of its prompts' embeddings. ``(C, E)``."""
    return torch.stack([torch.nn.functional.normalize(encoder.embed_text(p).mean(0), dim=-1) for p in prompts_per_class])


@torch.inference_mode()
def encode_gallery(codec, items: list[dict], max_seconds: float) -> list[torch.Tensor]:
    """Codec latents ``(1, D, T)`` of each item's first ``max_seconds`` (shared by both models: the
    latents path gives the same embeddings as the waveform path)."""
    from tqdm import tqdm

    samples = int(max_seconds * codec.sample_rate)
    return [codec.encode(_load_wav(item["audio"], codec.sample_rate)[:, :samples][None]) for item in tqdm(items, desc="encoding gallery", leave=False)]


@torch.inference_mode()
def evaluate(encoder, items: list[dict], latents: list[torch.Tensor], categories: list[str]) -> dict[str, float | int | None]:
    """Retrieval and zero-shot metrics of one model on one gallery (see the module docstring)."""
    from encoders.peav_train import retrieval_metrics, zero_shot_accuracy

    index = {name: i for i, name in enumerate(categories)}
    keep = [i for i, item in enumerate(items) if item["category"] in index]
    items = [items[i] for i in keep]
    audio = torch.cat([encoder.embed_audio(latents[i], is_latents=True) for i in keep])
    labels = torch.tensor([index[item["category"]] for item in items])
    present = sorted(set(labels.tolist()))
    metrics: dict[str, float | int | None] = {"clips": len(items), "categories": len(present)}

    names = encoder.embed_text([categories[c] for c in present])
    result = retrieval_metrics(names, torch.tensor(present), audio, labels)
    metrics.update({"text_r1": result["r1"], "text_r5": result["r5"]})

    held_text, held_labels = [], []
    for c in present:
        for prompt in heldout(categories[c]):
            held_text.append(prompt)
            held_labels.append(c)
    if held_text:
        result = retrieval_metrics(encoder.embed_text(held_text), torch.tensor(held_labels), audio, labels)
        metrics.update({"heldout_text_r1": result["r1"], "heldout_text_r5": result["r5"]})
        from encoders.anchors import PromptAnchors

        heard = [a.phrasing for a in PromptAnchors.from_vocabulary(encoder).nearest(held_text)]
        result = retrieval_metrics(encoder.embed_text(heard), torch.tensor(held_labels), audio, labels)
        metrics.update({"heldout_anchored_text_r1": result["r1"], "heldout_anchored_text_r5": result["r5"]})

    class_names = encoder.embed_text(categories)  # one prompt per category: picture and audio zero-shot
    images = {}
    for item in items:
        if item.get("image") and item["image"] not in images:
            images[item["image"]] = index[item["category"]]
    if images:
        paths = list(images)
        image_embeds = torch.cat([encoder.embed_image(paths[i : i + 32]) for i in range(0, len(paths), 32)])
        picture_labels = [images[p] for p in paths]
        result = retrieval_metrics(image_embeds, torch.tensor(picture_labels), audio, labels)
        metrics.update({"image_r1": result["r1"], "image_r5": result["r5"], "images": len(paths)})
        by_group = accuracy_by_group(image_embeds, picture_labels, class_names, [category_group(c) for c in categories])
        metrics["image_zero_shot_acc"] = by_group.pop("all")
        metrics["image_zero_shot_by_group"] = by_group

    metrics["zero_shot_acc"] = zero_shot_accuracy(audio, labels, class_names)
    held = class_embeddings(encoder, [heldout(name) or [name] for name in categories])
    metrics["zero_shot_acc_heldout"] = zero_shot_accuracy(audio, labels, held)
    ensemble = class_embeddings(encoder, [phrasings(name) for name in categories])
    metrics["zero_shot_acc_phrasings"] = zero_shot_accuracy(audio, labels, ensemble)
    return metrics


@torch.inference_mode()
def speed(encoder, codec, threads: int = 2) -> dict[str, float]:
    """Median ms on ``threads`` CPU threads to embed one prompt and one 10 s clip (in inference mode, as the
    separator and the CLI call the encoders); the clip both as codec latents and as a waveform (codec encoder
    included)."""
    torch.set_num_threads(threads)
    wav = torch.randn(1, 1, int(SPEED_SECONDS * encoder.sample_rate)) * 0.1
    latents = codec.encode(wav)

    def median_ms(fn) -> float:
        for _ in range(SPEED_WARMUP):
            fn()
        times = []
        for _ in range(SPEED_REPEATS):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
        return float(np.median(times))

    out = {
        "text_ms": median_ms(lambda: encoder.embed_text(["a dog barking in the distance"])),
        "audio_latents_ms": median_ms(lambda: encoder.embed_audio(latents, is_latents=True)),
        "audio_waveform_ms": median_ms(lambda: encoder.embed_audio(wav)),
    }
    out["clip_plus_prompt_latents_ms"] = out["text_ms"] + out["audio_latents_ms"]
    out["clip_plus_prompt_waveform_ms"] = out["text_ms"] + out["audio_waveform_ms"]
    return out


COLUMNS = [
    ("text→audio R@1", "text_r1"),
    ("R@5", "text_r5"),
    ("held-out text R@1", "heldout_text_r1"),
    ("held-out, anchored", "heldout_anchored_text_r1"),
    ("image→audio R@1", "image_r1"),
    ("R@5", "image_r5"),
    ("picture zero-shot", "image_zero_shot_acc"),
    ("zero-shot acc", "zero_shot_acc"),
    ("zero-shot (held-out)", "zero_shot_acc_heldout"),
    ("zero-shot (all phrasings)", "zero_shot_acc_phrasings"),
    ("clips", "clips"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--json", type=Path, default=Path("out") / "encoders.json")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle or peav folder (default: the embedded one)")
    parser.add_argument("--per-category", type=int, default=10, help="at most this many clips per category and gallery")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="embed the first seconds of each clip")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the quality part (speed is timed on 2 and 1)")
    parser.add_argument("--vocabulary", action="store_true",
                        help="zero-shot against all the vocabulary's category names, not only the library's (for a "
                        "held-out library such as data/heldout, built from one source)")
    parser.add_argument("--no-quality", action="store_true", help="only the speed part (no gallery, no manifest needed)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from encoders.codec import Codec, load_default_codec
    from encoders.peav import PromptEncoder, load_prompt_encoder

    gallery_sets, categories = {}, []
    if not args.no_quality:
        gallery_sets = galleries(args.manifest, read_manifest(args.manifest), args.per_category)
        if not gallery_sets:
            raise SystemExit(f"{args.manifest}: no gallery (no library.jsonl next to it and no target/category rows)")
        categories = known_categories(args.manifest, gallery_sets, vocabulary=args.vocabulary)
    trained = load_prompt_encoder(args.bundle).eval()
    codec_dir = args.bundle / "codec" if args.bundle is not None else None
    codec = Codec.from_pretrained(codec_dir) if codec_dir is not None and codec_dir.is_dir() else load_default_codec()
    torch.manual_seed(args.seed)
    baseline = PromptEncoder.build_default(codec).eval()

    results: dict = {"manifest": str(args.manifest), "categories": len(categories), "galleries": {}}
    table = []
    for gallery, items in gallery_sets.items():
        results["galleries"][gallery] = {}
        latents = encode_gallery(codec, items, args.max_seconds)
        for model_name, model in (("PE-AV default (trained)", trained), ("random-init towers", baseline)):
            metrics = evaluate(model, items, latents, categories)
            results["galleries"][gallery][model_name] = metrics
            table.append([gallery, model_name] + [metrics.get(key) for _, key in COLUMNS])
    results["speed"] = speed(trained, codec, threads=2)
    results["speed_1_thread"] = speed(trained, codec, threads=1)
    torch.set_num_threads(args.threads)
    write_json(args.json, results)
    if table:
        print(markdown_table(["gallery", "model"] + [name for name, _ in COLUMNS], table))
        print()
    per_group = [
        (gallery, model_name, metrics["image_zero_shot_by_group"])
        for gallery, models in results["galleries"].items()
        for model_name, metrics in models.items()
        if metrics.get("image_zero_shot_by_group")
    ]
    if per_group:
        groups = sorted({g for _, _, by_group in per_group for g in by_group})
        print("picture zero-shot accuracy per group")
        print(markdown_table(
            ["gallery", "model", *groups], [[gallery, name, *(by_group.get(g) for g in groups)] for gallery, name, by_group in per_group]
        ))
        print()
    speed_rows = [
        [threads, s["text_ms"], s["audio_latents_ms"], s["audio_waveform_ms"], s["clip_plus_prompt_latents_ms"],
         s["clip_plus_prompt_waveform_ms"]]
        for threads, s in ((2, results["speed"]), (1, results["speed_1_thread"]))
    ]
    print(markdown_table(
        ["CPU threads", "prompt (ms)", "10 s clip, latents (ms)", "10 s clip, waveform (ms)", "clip + prompt, latents (ms)",
         "clip + prompt, waveform (ms)"],
        speed_rows,
        digits=1,
    ))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
