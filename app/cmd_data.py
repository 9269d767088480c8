"""``promptsep data build``: build the offline data set from installed packages."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run_build(args: argparse.Namespace) -> int:
    from dataengine.build import BuildConfig, build
    from dataengine.sources import resolve_sources

    names = resolve_sources(args.sources)
    config = BuildConfig(out=Path(args.out), seed=args.seed, sources=names, rate=args.rate, small=args.small,
                         root=Path(args.root), workers=args.workers)
    result = build(config)
    print(result.report.read_text(encoding="utf-8"))
    return 0


def register(commands: argparse._SubParsersAction, train_commands: argparse._SubParsersAction) -> None:
    """Add ``data build`` to the CLI."""
    from dataengine.gcompris import STYLES
    from dataengine.sources import EXTRA_SOURCES, SOURCES

    data = commands.add_parser("data", help="build the offline data set (source library, mixtures, report)")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True
    parser = actions.add_parser("build", help="build or update the data set from installed Debian/pip packages")
    parser.add_argument("--out", required=True, help="output folder (e.g. data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, mixtures and choices (default 0)")
    held_out = [name for name, source in SOURCES.items() if source.held_out]
    parser.add_argument(
        "--sources", default="",
        help=f"comma-separated subset of: {','.join(SOURCES)} (default: all but the held-out {','.join(held_out)} and "
        f"the extra training sources {','.join(EXTRA_SOURCES)}, which a build only reads when named. "
        "`--sources hedgewars,warzone2100 --out data/heldout`: mixtures of sounds, voices and rooms no shipped model "
        "heard; `--sources default,extra --out data/wide`: the default library widened by the extra sources, whose "
        "earlier clips keep their splits)",
    )
    parser.add_argument("--rate", type=int, default=16_000, help="sample rate of clips and mixtures (default 16000)")
    parser.add_argument("--small", action="store_true", help="a few clips per source and few mixtures (< 2 min)")
    parser.add_argument("--root", default="/", help="folder the installed packages live under (tests use fakes)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.set_defaults(func=_run_build)
    clip = actions.add_parser(
        "clipart",
        help="a split's mixtures prompted with Open Clip Art pictures (a picture-style probe)",
        description="Write a manifest of the lines of MANIFEST whose category has Open Clip Art pictures (Debian's "
        "openclipart-png), each with one of them as its picture prompt instead of the data engine's emoji or stamp; "
        "text prompts and audio stay as they are. Benchmark it to see how picture prompts fare on pictures drawn in a "
        "style the visual tower never saw.",
    )
    clip.add_argument("--manifest", required=True, help="data-engine manifest to re-prompt (e.g. data/test.jsonl)")
    clip.add_argument("--out", required=True, help="manifest to write, beside MANIFEST (e.g. data/test_clipart.jsonl)")
    clip.add_argument("--root", default="/", help="folder the installed packages live under (tests use fakes)")
    clip.add_argument("--seed", type=int, default=0, help="seed of the picture chosen per mixture (default 0)")
    clip.add_argument(
        "--pictures", choices=["probe", "train"], default="probe",
        help="which half of each category's clip art: probe (for val/test) or train (for train encoders "
        "--extra-pictures; no probe picture is among them)",
    )
    clip.set_defaults(func=_run_clipart)
    gcompris = actions.add_parser(
        "gcompris",
        help="a split's mixtures prompted with GCompris photos or drawings (a picture-style probe)",
        description="Write a manifest of the lines of MANIFEST whose category has a GCompris picture (Debian's "
        "gcompris-qt-data): photos (Wikimedia photographs of farm and world animals) or drawings (cartoons of the "
        "vocabulary activity), each with one of them as its picture prompt instead of the data engine's emoji or "
        "stamp; text prompts and audio stay as they are. Benchmark it to see how picture prompts fare on a photo.",
    )
    gcompris.add_argument("--manifest", required=True, help="data-engine manifest to re-prompt (e.g. data/test.jsonl)")
    gcompris.add_argument("--out", required=True, help="manifest to write, beside MANIFEST (e.g. data/test_photos.jsonl)")
    gcompris.add_argument("--pictures", choices=STYLES, default="photos", help="which GCompris pictures (default photos)")
    gcompris.add_argument("--root", default="/", help="folder the installed packages live under (tests use fakes)")
    gcompris.add_argument("--seed", type=int, default=0, help="seed of the picture chosen per mixture (default 0)")
    gcompris.set_defaults(func=_run_gcompris)
    long = actions.add_parser(
        "long",
        help="a split's mixtures made longer (a long-recording probe)",
        description="Write DATA/<split>_long<seconds>.jsonl: line i mixes the same target clip and companions as "
        "line i of DATA/<split>.jsonl, placed in a longer window the way the data engine places them in 4 s (long "
        "clips cropped, short ones at a random offset or repeated). Separation then runs in several chunks per "
        "mixture, as on a real recording, while the separator was trained on 4 s. Benchmark it beside the split.",
    )
    long.add_argument("--data", required=True, help="data-engine folder with the split built (e.g. data)")
    long.add_argument("--split", choices=["train", "val", "test"], default="test", help="split (default test)")
    long.add_argument("--seconds", type=float, default=16.0, help="length of each mixture (default 16)")
    long.add_argument("--count", type=int, default=None, help="number of mixtures (default: as many as the split)")
    long.set_defaults(func=_run_long)


def _run_long(args: argparse.Namespace) -> int:
    from dataengine.build import write_long_mixtures
    from dataengine.manifest import read_manifest

    manifest = write_long_mixtures(Path(args.data), args.split, args.seconds, args.count)
    print(f"wrote {manifest} ({len(read_manifest(manifest, resolve=False))} mixtures of {args.seconds:g} s)")
    return 0


def _run_clipart(args: argparse.Namespace) -> int:
    from dataengine.clipart import build_clipart_probe

    return _report_probe(args.out, build_clipart_probe(args.manifest, args.out, root=args.root, seed=args.seed,
                                                       half=args.pictures))


def _run_gcompris(args: argparse.Namespace) -> int:
    from dataengine.gcompris import build_gcompris_probe

    return _report_probe(args.out, build_gcompris_probe(args.manifest, args.out, style=args.pictures, root=args.root,
                                                        seed=args.seed))


def _report_probe(out: str, counts: dict) -> int:
    print(
        f"wrote {out}: {counts['written']} of {counts['read']} mixtures, {counts['categories']} categories, "
        f"{counts['pictures']} distinct pictures"
    )
    return 0
