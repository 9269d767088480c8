"""``promptsep codec encode|decode|roundtrip`` and ``promptsep train codec``: thin wrappers over the codec."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm import tqdm

from encoders.errors import AudioError, WeightsError
from encoders.files import distinct_stems, save_tensors


def load_codec(path: str | None):
    """``--codec``: a bundle folder, an official DAC ``.pth``, or the shipped default when ``None``."""
    from encoders.codec import Codec, load_default_codec

    if path is None:
        return load_default_codec()
    if str(path).endswith(".pth"):
        return Codec.from_dac_pth(path)
    return Codec.from_pretrained(path)


def encode_file(codec, path: Path) -> tuple[torch.Tensor, dict]:
    """Encode every channel of an audio/video file: latents ``(C, D, T)`` and metadata for decoding."""
    from encoders.audio_io import load_audio, resample

    wav, rate = load_audio(path)
    at_codec = resample(wav, rate, codec.sample_rate)
    with torch.inference_mode():
        latents = codec.encode(at_codec[:, None])
    meta = {
        "sample_rate": str(codec.sample_rate),
        "length": str(at_codec.shape[-1]),
        "source_sample_rate": str(rate),
        "source_length": str(wav.shape[-1]),
        "channels": str(wav.shape[0]),
        "source": path.name,
    }
    return latents, meta


def decode_latents(codec, latents: torch.Tensor, meta: dict) -> tuple[torch.Tensor, int]:
    """Latents ``(C, D, T)`` + metadata -> waveform ``(C, N)`` at the source rate and length."""
    from encoders.audio_io import resample

    if int(meta.get("sample_rate", codec.sample_rate)) != codec.sample_rate:
        raise WeightsError(
            f"latents were made by a {meta['sample_rate']} Hz codec but --codec is {codec.sample_rate} Hz"
        )
    with torch.inference_mode():
        wav = codec.decode(latents, length=int(meta.get("length", latents.shape[-1] * codec.hop_length)))[
            :, 0
        ]
    rate = int(meta.get("source_sample_rate", codec.sample_rate))
    wav = resample(wav, codec.sample_rate, rate)
    length = int(meta.get("source_length", wav.shape[-1]))
    wav = torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))[..., :length]
    return wav, rate


def _inputs(paths: list[str]) -> list[Path]:
    files = [Path(p) for p in paths]
    for file in files:
        if not file.is_file():
            raise AudioError(f"{file}: no such file")
    return files


def _progress(files: list[Path], desc: str):
    """(file, output stem) pairs under a progress bar (from two files on); stems as :func:`distinct_stems` makes them."""
    pairs = list(zip(files, distinct_stems(files), strict=True))
    return tqdm(pairs, desc=desc, unit="file", disable=len(pairs) < 2)


def _report(source: Path, written: Path) -> None:
    tqdm.write(f"{source} -> {written}")


def run_encode(args: argparse.Namespace) -> int:
    codec = load_codec(args.codec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path, stem in _progress(_inputs(args.inputs), "encode"):
        latents, meta = encode_file(codec, path)
        _report(path, save_tensors({"latents": latents.contiguous()}, out / f"{stem}.safetensors", metadata=meta))
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from encoders.audio_io import save_audio

    codec = load_codec(args.codec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path, stem in _progress(_inputs(args.inputs), "decode"):
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                latents = handle.get_tensor("latents").float()
        except Exception as error:  # noqa: BLE001 - report any unreadable latent file in one line
            raise AudioError(
                f"{path}: not a latents file written by `promptsep codec encode` ({error})"
            ) from error
        wav, rate = decode_latents(codec, latents, meta)
        _report(path, save_audio(out / f"{stem}.wav", wav, rate))
    return 0


def run_roundtrip(args: argparse.Namespace) -> int:
    from encoders.audio_io import save_audio

    codec = load_codec(args.codec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path, stem in _progress(_inputs(args.inputs), "roundtrip"):
        latents, meta = encode_file(codec, path)
        wav, rate = decode_latents(codec, latents, meta)
        _report(path, save_audio(out / f"{stem}.wav", wav, rate))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from encoders.codec_train import TrainConfig, export_codec, train_codec

    codec_overrides = {
        key: value
        for key, value in (
            ("encoder_dim", args.encoder_dim),
            ("decoder_dim", args.decoder_dim),
            ("latent_dim", args.latent_dim),
            ("decoder_head", args.decoder_head),
            ("decoder_rates", args.decoder_rates),
        )
        if value is not None
    }
    config = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        seconds=args.seconds,
        lr=args.lr,
        adversarial=args.adversarial,
        max_minutes=args.max_minutes,
        stop_after_minutes=args.stop_after_minutes,
        save_every=args.save_every,
        kl_weight=args.kl_weight,
        init_from=args.init_from,
        codec=codec_overrides,
    )
    if args.data is None and not args.audio_dir and args.pool is None and not args.resume:
        raise WeightsError("train codec needs --data LIBRARY_DIR or --audio-dir DIR (or --pool FILE)")
    out = Path(args.out)
    train_codec(
        out,
        config,
        library_dir=Path(args.data) if args.data else None,
        audio_dirs=[Path(d) for d in args.audio_dir],
        pool_file=Path(args.pool) if args.pool else None,
        resume=args.resume,
        device=args.device,
    )
    if args.export:
        export_codec(out / "checkpoint", Path(args.export))
        print(json.dumps({"exported": str(args.export)}))
    return 0


def register(commands, train_commands) -> None:
    """Add ``codec {encode,decode,roundtrip}`` and ``train codec``."""
    codec = commands.add_parser("codec", help="encode/decode audio with the DAC-VAE codec")
    sub = codec.add_subparsers(dest="codec_command", metavar="ACTION")
    sub.required = True
    specs = (
        (
            "encode",
            run_encode,
            "audio/video files -> latents (.safetensors with rate/length metadata)",
            "INPUT",
        ),
        ("decode", run_decode, "latents files -> .wav at the original rate, channels and length", "LATENTS"),
        (
            "roundtrip",
            run_roundtrip,
            "decode(encode(x)): hear what the codec keeps; writes OUT/<stem>.wav",
            "INPUT",
        ),
    )
    for name, func, help_text, metavar in specs:
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("inputs", nargs="+", metavar=metavar)
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument(
            "--codec", default=None, help="codec folder or DAC .pth (default: the shipped codec)"
        )
        parser.set_defaults(func=func)

    train = train_commands.add_parser("codec", help="train the DAC-VAE codec")
    train.add_argument(
        "--data", default=None, help="data-engine folder with library.jsonl (train split used)"
    )
    train.add_argument("--audio-dir", action="append", default=[], help="folder of audio files (repeatable)")
    train.add_argument("--pool", default=None, help="pre-built audio pool (.npz or .flac) to train on")
    train.add_argument("--out", default="runs/codec", help="run folder (checkpoint/, codec/, metrics.jsonl)")
    train.add_argument("--steps", type=int, default=20000)
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--seconds", type=float, default=1.0, help="crop length")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="training-time budget in minutes over all resumes (sets the LR schedule)",
    )
    train.add_argument(
        "--stop-after-minutes",
        type=float,
        default=None,
        help="stop this run early (resume later with --resume)",
    )
    train.add_argument("--save-every", type=int, default=500)
    train.add_argument("--adversarial", action="store_true", help="add DAC's discriminator (GPU advised)")
    train.add_argument("--encoder-dim", type=int, default=None)
    train.add_argument("--decoder-dim", type=int, default=None)
    train.add_argument("--latent-dim", type=int, default=None)
    train.add_argument(
        "--decoder-head",
        choices=["istft", "waveform"],
        default=None,
        help="istft (default: DAC blocks to an STFT frame rate + inverse STFT) or waveform (DAC's decoder)",
    )
    train.add_argument(
        "--decoder-rates", type=int, nargs="+", default=None, help="decoder upsampling rates"
    )
    train.add_argument("--kl-weight", type=float, default=1e-3, help="weight of the VAE's KL term")
    train.add_argument(
        "--init-from", default=None, help="codec folder whose matching weights (e.g. its encoder) start the run"
    )
    train.add_argument("--export", default=None, help="also write the final codec as an fp16 bundle here")
    train.set_defaults(func=run_train)
