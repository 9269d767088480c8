"""Codec benchmark: round-trip quality per group, the codec-mask oracle, speed and memory.

    python -m benchmarks.codec --manifest data/test.jsonl --json out/codec.json [--codec DIR] [--long]

Per category group (speech, music, events, ...) of the manifest's targets:
- round-trip SI-SDR of ``decode(encode(target))`` and its mel distance (DAC's multi-scale log-mel L1,
  comparable to DAC's published 0.93 at 8 kbps);
- the codec-mask oracle: a ratio mask from ``|STFT(decode(encode(target)))|`` and
  ``|STFT(decode(encode(residual)))|`` applied to the mixture STFT, SI-SDRi against the true target,
  beside the ideal-ratio-mask oracle (true target and residual magnitudes); both use the STFT settings
  of the separator's mixture-consistent output (``benchmarks.common.mask_settings``).
Speed and memory on synthetic signals, 2 CPU threads, each length in a fresh process: encode+decode
real-time factor and RSS growth for 10 s, 10 min and (with ``--long``) 60 min.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks.common import (
    DEFAULT_MANIFEST,
    markdown_table,
    mask_settings,
    peak_rss_mb,
    read_manifest,
    run_json_subprocess,
    summarize,
    write_json,
)

warnings.filterwarnings("ignore", message=".*weight_norm.*")

def _load_codec(path: str | None):
    from app.cmd_codec import load_codec

    return load_codec(path)


def _load(path: str, rate: int) -> torch.Tensor:
    from encoders.audio_io import load_audio

    wav, _ = load_audio(path, sample_rate=rate, channels=1)
    return wav  # (1, N)


def _group(row: dict) -> str:
    return str(row.get("group") or row.get("category") or "all")


def evaluate_manifest(codec, rows: list[dict]) -> dict:
    """Per-item metrics grouped by category group; see the module docstring."""
    from encoders.codec import mel_distance
    from separation.masking import ratio_mask_separate
    from separation.metrics import si_sdr, si_sdri

    rate = codec.sample_rate
    per_group: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    from tqdm import tqdm

    mask = mask_settings()
    for row in tqdm(rows, desc="codec benchmark", unit="item"):
        if not row.get("target"):
            continue
        target = _load(row["target"], rate)
        mixture = _load(row["audio"], rate) if row.get("audio") else None
        residual = _load(row["residual"], rate) if row.get("residual") else None
        if mixture is None and residual is not None:
            mixture = target + residual
        if residual is None and mixture is not None:
            residual = mixture - target
        length = target.shape[-1]
        with torch.inference_mode():
            recon = codec.decode(codec.encode(target[None]), length=length)[0]
        stats = per_group[_group(row)]
        stats["roundtrip_si_sdr"].append(float(si_sdr(recon, target)))
        stats["mel_distance"].append(float(mel_distance(recon[None], target[None], rate)))
        if mixture is not None:
            n = min(length, mixture.shape[-1], residual.shape[-1])
            mix, tgt, res, rec = mixture[..., :n], target[..., :n], residual[..., :n], recon[..., :n]
            with torch.inference_mode():
                res_rec = codec.decode(codec.encode(res[None]), length=n)[0]
            codec_t, _ = ratio_mask_separate(mix, rec, res_rec, *mask)
            ideal_t, _ = ratio_mask_separate(mix, tgt, res, *mask)
            stats["codec_mask_si_sdri"].append(float(si_sdri(codec_t, tgt, mix)))
            stats["irm_si_sdri"].append(float(si_sdri(ideal_t, tgt, mix)))
            stats["mixture_si_sdr"].append(float(si_sdr(mix, tgt)))
    groups = {
        name: {key: summarize(values) for key, values in stats.items()} for name, stats in per_group.items()
    }
    everything: dict[str, list[float]] = defaultdict(list)
    for stats in per_group.values():
        for key, values in stats.items():
            everything[key] += values
    groups["all"] = {key: summarize(values) for key, values in everything.items()}
    return groups


def synthetic_signal(seconds: float, rate: int) -> torch.Tensor:
    """``(1, 1, N)``: chirps, tone bursts and noise, deterministic."""
    generator = torch.Generator().manual_seed(0)
    n = int(seconds * rate)
    time_axis = torch.arange(n, dtype=torch.float32) / rate
    sweep = torch.sin(2 * math.pi * (200 + 50 * torch.sin(0.3 * time_axis)) * time_axis)
    bursts = torch.sin(2 * math.pi * 880 * time_axis) * (torch.sin(2 * math.pi * 0.5 * time_axis) > 0.5)
    noise = 0.05 * torch.randn(n, generator=generator)
    return (0.3 * sweep + 0.2 * bursts + noise)[None, None]


def measure_speed(codec_path: str | None, seconds: float) -> dict:
    """RTF of encode+decode and RSS growth over the loaded model, in this (fresh) process."""
    import resource

    torch.set_num_threads(2)
    codec = _load_codec(codec_path)
    wav = synthetic_signal(seconds, codec.sample_rate)
    with torch.inference_mode():  # warm-up on 1 s so one-off allocations are not counted as speed
        codec.decode(codec.encode(wav[..., : codec.sample_rate]))
    base = peak_rss_mb()
    start = time.perf_counter()
    with torch.inference_mode():
        latents = codec.encode(wav)
        out = codec.decode(latents, length=wav.shape[-1])
    elapsed = time.perf_counter() - start
    assert out.shape == wav.shape
    io_mb = 2 * wav.numel() * 4 / 2**20
    return {
        "seconds": seconds,
        "rtf": elapsed / seconds,
        "rss_growth_mb": peak_rss_mb() - base,
        "input_output_mb": io_mb,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--json", default="out/codec_benchmark.json")
    parser.add_argument("--codec", default=None, help="codec folder or DAC .pth (default: shipped)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many manifest items")
    parser.add_argument("--long", action="store_true", help="also measure a 60 min input (slow)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--measure-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure_seconds is not None:  # child process of the speed/memory measurement
        import json

        print(json.dumps(measure_speed(args.codec, args.measure_seconds)))
        return 0

    torch.set_num_threads(2)
    result: dict = {"manifest": args.manifest, "codec": args.codec or "default"}
    if Path(args.manifest).is_file():
        codec = _load_codec(args.codec)
        result["config"] = codec.config.to_dict()
        result["groups"] = evaluate_manifest(codec, read_manifest(args.manifest, args.limit))
        keys = ("roundtrip_si_sdr", "mel_distance", "codec_mask_si_sdri", "irm_si_sdri", "mixture_si_sdr")
        rows = [
            [name, stats.get("roundtrip_si_sdr", {}).get("n", 0)]
            + [stats.get(key, {}).get("median") for key in keys]
            for name, stats in sorted(result["groups"].items())
        ]
        headers = [
            "group",
            "n",
            "round-trip SI-SDR",
            "mel dist",
            "codec-mask SI-SDRi",
            "IRM SI-SDRi",
            "mixture SI-SDR",
        ]
        print("Medians (dB; mel distance: DAC's multi-scale log-mel L1, DAC 8 kbps = 0.93)\n")
        print(markdown_table(headers, rows))
    else:
        print(f"manifest {args.manifest} not found: quality metrics skipped")
    if not args.skip_speed:
        lengths = [10.0, 600.0] + ([3600.0] if args.long else [])
        speed = []
        for seconds in lengths:
            extra = ["--codec", args.codec] if args.codec else []
            speed.append(
                run_json_subprocess(
                    "benchmarks.codec", ["--measure-seconds", str(seconds), *extra], timeout=3600
                )
            )
        result["speed"] = speed
        rows = [
            [
                f"{s.get('seconds', '?')} s",
                s.get("rtf"),
                s.get("rss_growth_mb"),
                s.get("input_output_mb"),
                s.get("error"),
            ]
            for s in speed
        ]
        print("\nEncode+decode on 2 CPU threads\n")
        print(markdown_table(["input", "RTF", "RSS growth MiB", "in+out wav MiB", "error"], rows, digits=3))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
