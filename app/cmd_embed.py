"""``promptsep embed``, ``promptsep retrieve`` and ``promptsep train encoders``: thin commands over
``encoders.peav`` / ``encoders.peav_train``.

An index is two files next to each other: ``INDEX.safetensors`` (``embeddings`` ``(N, E)``,
L2-normalised) and ``INDEX.json`` (the file paths in the same order and the model that made them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cmd_separate import probability
from encoders.errors import AudioError, PromptError, PromptsepError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus", ".m4a", ".aac"}


def register(commands, train_commands) -> None:
    p = commands.add_parser(
        "embed",
        help="build a retrieval index of audio/video files",
        description=(
            "Embed every audio or video file (folders are searched recursively) with the PE-AV audio "
            "tower and write INDEX.safetensors + INDEX.json for `promptsep retrieve`."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, help="audio/video files or folders")
    p.add_argument("--out", "-o", type=Path, required=True, help="index path (INDEX.safetensors and INDEX.json are written)")
    _model_arguments(p)
    p.add_argument("--window", type=float, default=10.0, help="seconds per embedding window; a file's windows are averaged")
    p.set_defaults(func=run_embed)

    r = commands.add_parser(
        "retrieve",
        help="rank indexed files by similarity to a text, picture or audio query",
        description="Rank the files of an index built by `promptsep embed` against one query.",
    )
    r.add_argument("index", type=Path, help="index written by `promptsep embed --out INDEX`")
    query = r.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query, e.g. 'dog barking'")
    query.add_argument("--image", type=Path, help="picture (or video file) of the sound source")
    query.add_argument("--audio", type=Path, help="audio example of the sound")
    r.add_argument(
        "--anchor",
        action="store_true",
        help="search with the training phrasing nearest to the --text query (as separation hears a prompt); "
        "helps new wordings of the vocabulary's sounds, hurts queries for other sounds",
    )
    r.add_argument("-k", type=int, default=10, help="number of results")
    r.add_argument("--json", action="store_true", help='print a JSON list of {"path", "score"}, best first')
    _model_arguments(r, default_note=" (default: the model recorded in the index)")
    r.set_defaults(func=run_retrieve)

    t = train_commands.add_parser(
        "encoders",
        help="train the PE-AV audio/visual towers on the data-engine library",
        description="Train the default PE-AV towers into the fixed MiniLM text space (resumable); writes OUT/bundle.",
    )
    t.add_argument("--data", default="data", help="data-engine folder (promptsep data build)")
    t.add_argument("--out", default="runs/peav", help="run folder (feature cache, checkpoint, metrics, bundle)")
    t.add_argument("--steps", type=int, default=1500, help="optimiser steps; the run ends here even if --minutes is left (raise it, e.g. 100000, to let --minutes decide)")
    t.add_argument("--minutes", type=float, default=0.0, help="training-time budget in minutes over all resumes; the LR schedule and the run end at --steps or at this budget, whichever comes first (0: run all steps)")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--codec", type=Path, default=None, help="codec folder (default: the embedded codec)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--clips-per-category", type=int, default=30, help="training clips per category (features are cached)"
    )
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument(
        "--init", default="",
        help="start from this saved PE-AV folder (e.g. promptsep_assets/default/peav): its weights, a fresh "
        "optimizer and schedule (a --resume of OUT's checkpoint takes precedence)",
    )
    t.add_argument(
        "--extra-audio",
        type=Path,
        default=None,
        help="folder of separator pool shards (promptsep train separator-pool): their augmented target sources "
        "join the audio-text terms as extra training audio",
    )
    t.add_argument("--extra-limit", type=int, default=0, help="read at most this many extra items (0: all)")
    frozen = t.add_mutually_exclusive_group()
    frozen.add_argument(
        "--freeze-visual",
        action="store_true",
        help="keep the visual tower as it is (the shipped separator reads its picture embeddings)",
    )
    frozen.add_argument(
        "--freeze-audio",
        action="store_true",
        help="train the visual tower alone: the audio tower, the audio-visual fusion and the pair heads stay as "
        "they are, so the text and audio spaces the shipped separator and judge read do not move",
    )
    t.add_argument(
        "--image-background",
        type=probability,
        default=0.0,
        metavar="P",
        help="repaint the solid background of this share of training pictures a random colour, so the visual tower "
        "reads the drawing, not its tint (0: off, the shipped towers' recipe)",
    )
    t.add_argument(
        "--image-style",
        type=probability,
        default=0.0,
        metavar="P",
        help="restyle this share of training pictures (colour jitter or greyscale, zoom, blur), so that pictures drawn "
        "unlike the training ones still read as their subject (0: off, the shipped towers' recipe)",
    )
    t.add_argument(
        "--image-scenes",
        default="",
        metavar="DIR",
        help="folder of photos (PNG, JPEG, WebP): half of the backgrounds --image-background repaints become a random "
        "one of them instead of a flat colour, so the tower learns to find the subject in front of a real place",
    )
    t.add_argument(
        "--extra-pictures",
        default="",
        metavar="MANIFEST",
        help="JSONL manifest whose lines' pictures (image, category) join their categories' training pictures, e.g. "
        "`data clipart --pictures train`'s clip art (drawn unlike the data engine's emoji and stamps)",
    )
    t.set_defaults(func=run_train)

    n = train_commands.add_parser(
        "namer",
        help="make a bundle's picture namer from a visual tower",
        description="Turn the visual tower of a PE-AV folder (e.g. `train encoders --freeze-audio`'s OUT/bundle) into a "
        "picture namer: a picture prompt it names with confidence is separated as the text prompt of that category. "
        "The confidence margin (best minus runner-up cosine to the category names) is the smallest at which the "
        "manifest's pictures it names are right --precision of the time. Copy OUT to a bundle's namer/ folder to use it.",
    )
    n.add_argument("--tower", type=Path, required=True, help="PE-AV folder whose visual tower names the pictures")
    n.add_argument("--manifest", type=Path, default=Path("data/train.jsonl"), help="labelled pictures that set the margin (default: data/train.jsonl)")
    n.add_argument("--precision", type=probability, default=0.98, help="share of named pictures that must be right (default: 0.98)")
    n.add_argument("--bundle", type=Path, default=None, help="bundle the namer serves (its PE-AV text side; default: embedded)")
    n.add_argument("--out", type=Path, required=True, help="namer folder to write")
    n.set_defaults(func=run_namer)


def run_namer(args) -> int:
    from encoders.namer import build_namer, manifest_pictures
    from encoders.peav import load_prompt_encoder

    report = build_namer(args.tower, load_prompt_encoder(args.bundle), manifest_pictures(args.manifest), args.precision, args.out)
    print(
        f"wrote {args.out}: margin {report['margin']}, names {report['named_share']:.0%} of {report['pictures']} "
        f"pictures at precision {report['precision']:.3f}"
    )
    return 0


def _model_arguments(parser: argparse.ArgumentParser, default_note: str = "") -> None:
    parser.add_argument("--bundle", type=Path, default=None, help=f"model bundle or peav folder{default_note}")
    parser.add_argument("--official", type=Path, default=None, help="local facebook/pe-av-* or pe-a-frame-* folder")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def index_files(index: Path) -> tuple[Path, Path]:
    """``INDEX.safetensors`` and ``INDEX.json`` for an index path given with or without a suffix."""
    index = Path(index)
    if index.suffix in (".safetensors", ".json"):
        index = index.with_suffix("")
    return index.with_name(index.name + ".safetensors"), index.with_name(index.name + ".json")


def collect_media(paths: list[Path]) -> list[Path]:
    """Audio/video files named directly or found under folders, sorted, without duplicates."""
    from encoders.prompts import VIDEO_SUFFIXES

    suffixes = AUDIO_SUFFIXES | VIDEO_SUFFIXES
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        elif path.is_file():
            found.append(path)
        else:
            raise AudioError(f"{path}: no such file or folder")
    return list(dict.fromkeys(p.resolve() for p in found))


def run_embed(args) -> int:
    import torch
    from tqdm import tqdm

    from encoders.audio_io import load_audio
    from encoders.files import save_tensors
    from encoders.peav import load_prompt_encoder

    files = collect_media(args.paths)
    if not files:
        raise AudioError(f"no audio or video files under {', '.join(map(str, args.paths))}")
    encoder = load_prompt_encoder(args.bundle, args.official, map_location=args.device)
    embeddings, kept, skipped = [], [], []
    with torch.inference_mode():
        for path in tqdm(files, desc="embedding", unit="file"):
            try:
                wav, _ = load_audio(path, sample_rate=encoder.sample_rate, channels=1)
            except AudioError as error:
                skipped.append(f"{error}")
                continue
            embeddings.append(encoder.embed_long_audio(wav.to(encoder.device), window_seconds=args.window).cpu())
            kept.append(str(path))
    for message in skipped:
        print(f"promptsep: skipped {message}", file=sys.stderr)
    if not kept:
        raise AudioError("none of the files could be read; nothing indexed")
    weights_file, meta_file = index_files(args.out)
    weights_file.parent.mkdir(parents=True, exist_ok=True)
    save_tensors({"embeddings": torch.stack(embeddings).contiguous()}, weights_file)
    meta = {
        "paths": kept,
        "embed_dim": encoder.embed_dim,
        "bundle": str(args.bundle.resolve()) if args.bundle else None,
        "official": str(args.official.resolve()) if args.official else None,
    }
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"indexed {len(kept)} files -> {weights_file} + {meta_file.name}")
    return 0


def run_retrieve(args) -> int:
    import torch
    from safetensors.torch import load_file

    from encoders.audio_io import load_audio
    from encoders.peav import load_prompt_encoder, rank

    weights_file, meta_file = index_files(args.index)
    for needed in (weights_file, meta_file):
        if not needed.is_file():
            raise PromptsepError(f"{needed} is missing; build the index with `promptsep embed FILES --out {args.index}`")
    meta = json.loads(meta_file.read_text())
    items = load_file(str(weights_file))["embeddings"]
    if args.k < 1:
        raise PromptError("-k must be at least 1")
    if args.anchor and args.text is None:
        raise PromptError("--anchor applies to a --text query")
    bundle = args.bundle or (Path(meta["bundle"]) if meta.get("bundle") else None)
    official = args.official or (Path(meta["official"]) if meta.get("official") else None)
    encoder = load_prompt_encoder(bundle, official, map_location=args.device)
    if encoder.embed_dim != items.shape[1]:
        raise PromptsepError(
            f"the index holds {items.shape[1]}-d embeddings but the model makes {encoder.embed_dim}-d ones; "
            "query with the model that built the index"
        )
    with torch.inference_mode():
        if args.text is not None:
            text = args.text
            if args.anchor:
                from encoders.anchors import PromptAnchors

                anchor = PromptAnchors.from_vocabulary(encoder).nearest([text])[0]
                text = anchor.phrasing
                print(f"query {args.text!r} searched as {text!r} (the nearest training phrasing, similarity "
                      f"{anchor.similarity:.2f})", file=sys.stderr)
            query = encoder.embed_text([text])
        elif args.image is not None:
            query = encoder.embed_video(encoder.video_frames(args.image)[None])
        else:
            wav, _ = load_audio(args.audio, sample_rate=encoder.sample_rate, channels=1)
            query = encoder.embed_long_audio(wav.to(encoder.device))
    results = [{"path": meta["paths"][i], "score": round(score, 6)} for i, score in rank(query.cpu(), items, args.k)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'rank':>4}  {'score':>7}  path")
        for position, result in enumerate(results, 1):
            print(f"{position:>4}  {result['score']:7.4f}  {result['path']}")
    return 0


def run_train(args) -> int:
    from encoders.codec import Codec, load_default_codec
    from encoders.errors import require_checkpoint
    from encoders.peav_train import CHECKPOINT_NAME, EncoderTrainConfig, train_encoders

    if args.resume:  # before the codec and the extra audio (gigabytes of shards) are read
        require_checkpoint(Path(args.out) / CHECKPOINT_NAME)
    if args.freeze_audio and args.extra_audio is not None:
        raise PromptsepError("--extra-audio trains the audio tower, which --freeze-audio keeps as it is")
    codec = Codec.from_pretrained(args.codec) if args.codec is not None else load_default_codec()
    cfg = EncoderTrainConfig(
        data=str(args.data),
        out=str(args.out),
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        max_clips_per_category=args.clips_per_category,
        train_visual=not args.freeze_visual,
        train_audio=not args.freeze_audio,
        image_background=args.image_background,
        image_style=args.image_style,
        image_scenes=args.image_scenes,
        extra_pictures=args.extra_pictures,
        init=args.init,
    )
    extra = None
    if args.extra_audio is not None:
        from separation.train import shard_targets

        if not args.extra_audio.is_dir():
            raise PromptsepError(f"--extra-audio {args.extra_audio}: no such folder")
        extra = shard_targets(args.extra_audio, codec.hop_length, limit=args.extra_limit)
        if not extra:
            raise PromptsepError(f"--extra-audio {args.extra_audio}: no pool shards in it")
        print(f"{len(extra)} extra training sounds from {args.extra_audio}")
    bundle = train_encoders(cfg, resume=args.resume, codec=codec, extra=extra)
    print(f"PE-AV bundle written to {bundle} (copy it to promptsep_assets/default/peav to ship it)")
    return 0
