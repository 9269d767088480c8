"""``promptsep judge`` (score separated tracks against their prompt) and ``promptsep train judge``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from encoders.errors import PromptError


def register(commands, train_commands) -> None:
    p = commands.add_parser(
        "judge",
        help="score separated tracks against their prompt",
        description="Score each TRACK separated from MIXTURE for the prompt: the judge's overall score, on the dB scale "
        "of the track's SI-SDR against the prompted sound, ranks tracks (higher is better; it is not an estimate of "
        "one track's SI-SDR), beside the track's alignment with "
        "the prompt (the cosine of their PE-AV embeddings). Tracks must have the mixture's length; any rate and "
        "channels (read as mono).",
    )
    p.add_argument("mixture", type=Path, help="the recording the tracks were separated from")
    p.add_argument("tracks", type=Path, nargs="+", help="separated tracks, e.g. target.wav residual.wav")
    p.add_argument("--prompt", "-p", default=None, help="text prompt the tracks were separated for")
    p.add_argument("--image", type=Path, default=None, help="picture prompt (instead of or beside --prompt)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder with a judge/ (default: the embedded one)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {track, overall, alignment, features}")
    p.set_defaults(func=run_judge)

    t = train_commands.add_parser(
        "judge",
        help="fit the judge on a manifest's mixtures",
        description="Separate each mixture of MANIFEST for its own prompt and for another category's, score those "
        "tracks, the residual and the mixture against the true target (SI-SDR), and fit the judge's ridge regression "
        "from their features to that SI-SDR. Writes OUT/config.json and OUT/model.safetensors (a bundle's judge/).",
    )
    t.add_argument("--manifest", type=Path, required=True, help="JSONL manifest with prompts and targets (the val split)")
    t.add_argument("--out", type=Path, required=True, help="folder to write (a bundle's judge/)")
    t.add_argument("--limit", type=int, default=None, help="only the first N lines")
    t.add_argument("--alpha", type=float, default=1.0, help="ridge penalty on the standardised features")
    t.add_argument("--seed", type=int, default=0, help="seed of the swapped prompts")
    t.add_argument("--jobs", type=int, default=2, help="processes collecting triples (one thread each)")
    t.add_argument("--bundle", type=Path, default=None, help="bundle whose separator makes the tracks")
    t.add_argument("--records", type=Path, default=None, help="save the collected features here, or reuse them if the file exists")
    t.set_defaults(func=run_train_judge)


def run_judge(args: argparse.Namespace) -> int:
    import torch

    from encoders.audio_io import load_audio
    from separation.inference import Prompt, Separator

    if not args.prompt and args.image is None:
        raise PromptError("give the prompt the tracks were separated for: --prompt TEXT and/or --image IMG")
    for path in (args.mixture, *args.tracks, *([args.image] if args.image else [])):
        if not path.is_file():
            raise PromptError(f"no such file: {path}")
    prompt = Prompt(text=args.prompt, image=str(args.image) if args.image else None)
    separator = Separator.from_pretrained(args.bundle)
    if separator.judge is None:
        raise PromptError(f"the bundle {args.bundle or 'embedded'} has no judge/ (fit one with `promptsep train judge`)")
    mixture, rate = load_audio(args.mixture)
    tracks = []
    for path in args.tracks:
        track, _ = load_audio(path, sample_rate=rate, channels=1)
        if track.shape[-1] != mixture.shape[-1]:
            raise PromptError(f"{path}: {track.shape[-1]} samples at {rate} Hz, the mixture has {mixture.shape[-1]}")
        tracks.append(track[0])
    scores = separator.judge.score(mixture, torch.stack(tracks), rate, prompt)
    if args.json:
        print(json.dumps([{"track": str(p), **s.to_dict()} for p, s in zip(args.tracks, scores, strict=True)], indent=2))
    else:
        width = max(len(str(p)) for p in args.tracks)
        print(f"{'track':<{width}}  overall (dB)  alignment   prompt: {prompt.describe()}")
        for path, score in zip(args.tracks, scores, strict=True):
            print(f"{str(path):<{width}}  {score.overall:12.2f}  {score.alignment:9.3f}")
    return 0


def run_train_judge(args: argparse.Namespace) -> int:
    from judge.train import train_judge

    if not args.manifest.is_file():
        raise PromptError(f"{args.manifest}: no such manifest")
    data = train_judge(args.manifest, args.out, args.limit, args.seed, args.alpha, args.bundle, args.jobs, args.records)
    print(f"fitted the judge on {data['features'].shape[0]} mixtures; wrote {args.out}")
    return 0
