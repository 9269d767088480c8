"""Separation quality, speed and memory of promptsep beside references and baselines.

    python -m benchmarks.separation --manifest data/test.jsonl --json out/separation.json \
        [--limit N] [--baselines runs/baselines] [--long] [--no-speed]

Quality (per manifest line, target track, mono at the model rate): SI-SDRi and museval
SDR/SIR/SAR for

- ``mixture``: the unprocessed mixture as the estimate (SI-SDRi 0 by definition);
- ``codec_oracle``: ``decode(encode(target))`` with the default codec (the ceiling of plain decoding);
- ``codec_oracle_mask``: the decoded true target and residual turned into a ratio mask on the
  mixture (promptsep's mixture-consistent output; its ceiling with this codec);
- ``oracle_irm``: the ideal ratio mask ``|T| / (|T| + |R|)`` on the mixture STFT, with the same STFT
  settings as the mixture-consistent output (``benchmarks.common.mask_settings``);
- ``promptsep_text`` / ``promptsep_visual``: the shipped separator with the line's text prompt or
  its picture (``image``); ``promptsep_both``: one prompt with both (the mean of their embeddings);
- ``convtasnet`` (oracle choice of its two outputs) and ``lass`` (text-conditioned mask net), the
  baselines trained by ``separation.baselines_train``, loaded from ``--baselines DIR/<name>``.

Medians and means per system, overall and per ``group`` (falling back to ``category``).
Speed: real-time factor of ``Separator.separate`` on 2 CPU threads and peak RSS, for 10 s and
10 min synthetic inputs (and 60 min with ``--long``), each length in its own process; batched
throughput on CUDA when a GPU is present. Prints markdown tables and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import (
    DEFAULT_MANIFEST,
    markdown_table,
    mask_settings,
    paired_difference,
    peak_rss_mb,
    read_manifest,
    run_json_subprocess,
    si_sdri_by_system,
    summarize,
    write_json,
)
from dataengine.seeding import keyed_rng
from encoders.audio_io import load_audio
from encoders.errors import SettingError
from separation.masking import ratio_mask_separate
from separation.metrics import bss_eval, si_sdri

SAMPLE_RATE = 16000
METRICS = ("si_sdri", "sdr", "sir", "sar")
SPEED_SECONDS = (10.0, 600.0)
LONG_SECONDS = 3600.0
SPEED_PROMPT = "dog barking"
PROMPT_SETS = ("manifest", "heldout", "user")
LIBRARY_DEFAULT = object()  # an option left at InferenceConfig's default
# systems that take audio at any rate (--rate); the codec oracles and the baselines run at the model's
ANY_RATE_SYSTEMS = ("mixture", "oracle_irm", "promptsep_text", "promptsep_visual", "promptsep_both",
                    "promptsep_text_unrefined", "promptsep_visual_unrefined")
# direct-to-reverberant ratio of each source under --room (dB): from a near, dry source to a far one
ROOM_DRR_DB = (-6.0, 6.0)

# (target estimate (N,), residual estimate (N,)) from one manifest row and its loaded audio
System = Callable[[dict, dict[str, torch.Tensor]], "tuple[torch.Tensor, torch.Tensor] | None"]


# ------------------------------------------------------------------------------------ references
def score(
    estimate: torch.Tensor, residual_estimate: torch.Tensor, audio: dict[str, torch.Tensor], rate: int = SAMPLE_RATE
) -> dict[str, float]:
    """SI-SDRi and museval SDR/SIR/SAR of one target estimate; ``(N,)`` tensors at ``rate``."""
    out = {"si_sdri": float(si_sdri(estimate.double(), audio["target"].double(), audio["mixture"].double()))}
    try:
        bss = bss_eval(
            estimate.numpy(),
            residual_estimate.numpy(),
            audio["target"].numpy(),
            audio["residual"].numpy(),
            rate,
        )
        out.update(sdr=bss.sdr, sir=bss.sir, sar=bss.sar)
    except Exception:  # noqa: BLE001 - museval rejects silent references; the item keeps its SI-SDRi
        out.update(sdr=math.nan, sir=math.nan, sar=math.nan)
    return out


# ------------------------------------------------------------------------------------ systems
def build_systems(
    baselines_dir: Path | None,
    notes: list[str],
    bundle: str | None = None,
    mask_floor: float | None = None,
    shifts: int = 1,
    overrides: dict | None = None,
    rate: int = SAMPLE_RATE,
) -> dict[str, System]:
    """Every system that can run here; what cannot is named in ``notes``. ``bundle``: promptsep's model
    bundle (default: the embedded one); with a mask refiner in it, the same separator without the refiner
    is scored too (``*_unrefined``). ``mask_floor``: promptsep's :attr:`InferenceConfig.mask_floor`
    (default: the library's); ``shifts``: its :attr:`InferenceConfig.shifts`; ``overrides``: other
    :class:`InferenceConfig` fields to set (e.g. ``anchor_threshold``, ``phrasings``). ``rate``: the sample rate
    the rows' audio is loaded at; promptsep separates at it (only the systems in :data:`ANY_RATE_SYSTEMS` are
    meaningful at a rate other than the model's)."""
    mask = mask_settings()
    systems: dict[str, System] = {
        "mixture": lambda row, a: (a["mixture"], a["mixture"]),
        "oracle_irm": lambda row, a: ratio_mask_separate(a["mixture"], a["target"], a["residual"], *mask),
    }
    try:
        from encoders.codec import load_default_codec

        codec = load_default_codec().eval()

        @torch.no_grad()
        def codec_oracle(row: dict, a: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            n = a["target"].shape[-1]
            both = torch.stack([a["target"], a["residual"]])[:, None]
            decoded = codec.decode(codec.encode(both), length=n)[:, 0]
            return decoded[0], decoded[1]

        systems["codec_oracle"] = codec_oracle

        def codec_oracle_mask(row: dict, a: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            target, residual = codec_oracle(row, a)
            return ratio_mask_separate(a["mixture"], target, residual, *mask)

        systems["codec_oracle_mask"] = codec_oracle_mask
    except Exception as error:  # noqa: BLE001
        notes.append(f"codec_oracle skipped: {error}")

    from separation.inference import InferenceConfig, Prompt, Separator

    floor = {} if mask_floor is None else {"mask_floor": mask_floor}
    # outside the try below: a setting out of range is the caller's error (SettingError), not a system to skip
    config = InferenceConfig(shifts=shifts, **floor, **(overrides or {}))
    try:
        separator = Separator.from_pretrained(bundle, config=config)
        unrefined = None
        if separator.refiner is not None:
            unrefined = Separator(separator.codec, separator.prompt_encoder, separator.model, config=config)

        def promptsep(kind: str, separator: Separator = separator) -> System:
            @torch.no_grad()
            def run(row: dict, a: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
                if kind == "text":
                    if not row.get("prompt"):
                        return None
                    prompt = Prompt(text=row["prompt"])
                elif kind == "both":
                    if not (row.get("prompt") and row.get("image")):
                        return None
                    prompt = Prompt(text=row["prompt"], image=row["image"])
                else:
                    if not row.get("image"):
                        return None
                    prompt = Prompt(image=row["image"])
                res = separator.separate(a["mixture"][None], rate, [prompt])
                return res.targets[0, 0].float(), res.residual[0].float()

            return run

        systems["promptsep_text"] = promptsep("text")
        systems["promptsep_visual"] = promptsep("visual")
        systems["promptsep_both"] = promptsep("both")
        if unrefined is not None:
            systems["promptsep_text_unrefined"] = promptsep("text", unrefined)
            systems["promptsep_visual_unrefined"] = promptsep("visual", unrefined)
    except Exception as error:  # noqa: BLE001
        if bundle is not None:  # a bundle the caller named must load; only the embedded default may be absent
            raise
        notes.append(f"promptsep skipped: {type(error).__name__}: {error}")

    if baselines_dir is not None:
        from separation.baselines import BASELINE_NAMES, load_baseline

        for name in BASELINE_NAMES:
            folder = baselines_dir / name
            if not (folder / "model.safetensors").is_file():
                print(f"baseline {name}: not trained ({folder})")
                notes.append(f"{name} not trained ({folder})")
                continue
            baseline = load_baseline(folder)

            def run_baseline(
                row: dict, a: dict[str, torch.Tensor], baseline=baseline
            ) -> tuple[torch.Tensor, torch.Tensor]:
                target, residual = baseline.separate(
                    a["mixture"][None], [row.get("prompt") or ""], a["target"][None]
                )
                return target[0], residual[0]

            systems[name] = run_baseline
    return systems


def select_systems(systems: dict[str, System], names: list[str] | None) -> dict[str, System]:
    """Keep only ``names`` (all when ``None``); an unknown name raises ``ValueError`` listing the choices."""
    if not names:
        return systems
    unknown = sorted(set(names) - set(systems))
    if unknown:
        raise ValueError(f"unknown or unavailable systems {unknown}; available: {sorted(systems)}")
    return {name: systems[name] for name in names}


def load_row_audio(
    row: dict, room: tuple[float, float] | None = None, gain_db: float = 0.0, rate: int = SAMPLE_RATE
) -> dict[str, torch.Tensor]:
    """Mixture, target and residual of a manifest row, mono float32 ``(N,)`` at ``rate``.

    ``room=(lo, hi)``: put both sources in one reverberant room (:func:`reverberant`; RT60 drawn from
    ``[lo, hi]`` s, each source at its own place); the target reference is the reverberant target and the
    mixture is remixed; the room is keyed by the row's id, so every system and every run hears the same audio.
    ``gain_db`` scales all three (a quiet or loud recording).
    """
    audio = {}
    for key, field in (("mixture", "audio"), ("target", "target"), ("residual", "residual")):
        wav, _ = load_audio(row[field], sample_rate=rate, channels=1)
        audio[key] = wav[0]
    n = min(v.shape[-1] for v in audio.values())
    audio = {k: v[:n] for k, v in audio.items()}
    if room is not None:
        audio = reverberant(audio, room, str(row.get("id", "")), rate)
    if gain_db:
        audio = {k: v * 10 ** (gain_db / 20) for k, v in audio.items()}
    return audio


def reverberant(
    audio: dict[str, torch.Tensor], room: tuple[float, float], key: str, rate: int = SAMPLE_RATE
) -> dict[str, torch.Tensor]:
    """Target and residual each heard in one synthetic room: the dry source (direct path) plus its own
    reverberant tail (:func:`dataengine.augment.synthetic_rir`), at a direct-to-reverberant ratio drawn from
    ``ROOM_DRR_DB`` per source; one RT60 from ``room``. :func:`~dataengine.seeding.keyed_rng` on ``key`` draws it all.
    The mixture is the sum of the two; lengths are kept."""
    from scipy.signal import fftconvolve

    from dataengine.augment import synthetic_rir

    lo, hi = room
    if not 0 < lo <= hi:
        raise ValueError(f"room RT60 range must satisfy 0 < lo <= hi, got {room}")
    rng = keyed_rng("room", key)
    rt60 = float(rng.uniform(lo, hi))
    n = audio["target"].shape[-1]
    out = {}
    for name in ("target", "residual"):
        dry = audio[name].numpy()
        tail = fftconvolve(dry, synthetic_rir(rng, rate, rt60))[:n]
        gain = 10 ** (-float(rng.uniform(*ROOM_DRR_DB)) / 20)  # the tail has the dry signal's energy
        out[name] = torch.from_numpy((dry + gain * tail).astype(np.float32))
    return {"mixture": out["target"] + out["residual"], **out}


def evaluate_quality(
    rows: list[dict],
    systems: dict[str, System],
    room: tuple[float, float] | None = None,
    gain_db: float = 0.0,
    rate: int = SAMPLE_RATE,
) -> tuple[dict, list[dict]]:
    """Score every system on every row (audio as :func:`load_row_audio` with ``room``, ``gain_db`` and ``rate``);
    returns (summary per system and group, per-item records)."""
    records: list[dict] = []
    for row in tqdm(rows, desc="separation", unit="mix"):
        if not row.get("target") or not row.get("residual"):
            continue
        audio = load_row_audio(row, room, gain_db, rate)
        group = row.get("group") or row.get("category") or "all"
        for name, system in systems.items():
            start = time.perf_counter()
            out = system(row, audio)
            if out is None:
                continue
            estimate, residual = out
            record = {
                "id": row.get("id"),
                "system": name,
                "group": group,
                "seconds": time.perf_counter() - start,
            }
            record.update(score(estimate.detach().float(), residual.detach().float(), audio, rate))
            records.append(record)
    summary: dict = {}
    for name in systems:
        mine = [r for r in records if r["system"] == name]
        groups = defaultdict(list)
        for r in mine:
            groups[r["group"]].append(r)
        summary[name] = {
            "overall": {m: summarize(r[m] for r in mine) for m in METRICS},
            "groups": {
                g: {m: summarize(r[m] for r in rs) for m in METRICS} for g, rs in sorted(groups.items())
            },
        }
    return summary, records


def quality_tables(summary: dict) -> str:
    """Markdown: one row per system (medians + SI-SDRi mean), then SI-SDRi medians per group."""
    headers = ["system", "SI-SDRi med", "SI-SDRi mean", "SDR med", "SIR med", "SAR med", "n"]
    rows = []
    for name, data in summary.items():
        o = data["overall"]
        rows.append(
            [
                name,
                o["si_sdri"]["median"],
                o["si_sdri"]["mean"],
                o["sdr"]["median"],
                o["sir"]["median"],
                o["sar"]["median"],
                o["si_sdri"]["n"],
            ]
        )
    text = markdown_table(headers, rows)
    groups = sorted({g for data in summary.values() for g in data["groups"]})
    if groups:
        names = list(summary)
        group_rows = [
            [g] + [summary[n]["groups"].get(g, {}).get("si_sdri", {}).get("median") for n in names]
            for g in groups
        ]
        text += "\n\nSI-SDRi median (dB) per group\n\n" + markdown_table(["group", *names], group_rows)
    return text


# ------------------------------------------------------------------------------------ speed
def speed_worker(seconds: float, threads: int) -> dict:
    """Time ``Separator.separate_file`` (the CLI's streamed path) on ``seconds`` of synthetic audio.

    The input WAV is written block by block to a temporary folder before timing; the report has the
    real-time factor and the peak RSS of this process (which never holds the whole recording).
    """
    import tempfile

    import soundfile as sf

    torch.set_num_threads(threads)
    from separation.inference import Prompt, Separator

    separator = Separator.from_pretrained()
    start = time.perf_counter()
    separator.anchor(SPEED_PROMPT)  # the text anchors are embedded once per Separator, like loading its weights
    anchors_s = time.perf_counter() - start
    if separator.splitter is not None and separator.config.splitter_weight > 0:
        separator.splitter.load()  # its weights load at first use; counted with loading, not in the RTF
    rss_loaded = peak_rss_mb()
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.wav"
        with sf.SoundFile(path, "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16") as handle:
            remaining = int(seconds * SAMPLE_RATE)
            while remaining > 0:
                block = min(remaining, 60 * SAMPLE_RATE)
                handle.write((0.1 * torch.randn(block, generator=generator)).clamp(-1, 1).numpy())
                remaining -= block
        start = time.perf_counter()
        separator.separate_file(path, [Prompt(text=SPEED_PROMPT)], Path(folder) / "out")
        elapsed = time.perf_counter() - start
    return {
        "seconds": seconds,
        "threads": threads,
        "wall_s": elapsed,
        "rtf": elapsed / seconds,
        "anchors_s": anchors_s,
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": peak_rss_mb(),
    }


def cuda_throughput(seconds: float = 10.0, batch: int = 8) -> dict:
    """× real time of batched separation on CUDA (``batch`` mixtures of ``seconds`` in one call each)."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    from separation.inference import Prompt, Separator

    try:
        separator = Separator.from_pretrained(device="cuda")
    except TypeError:
        return {"skipped": "Separator.from_pretrained has no device argument"}
    wav = 0.1 * torch.randn(1, int(seconds * SAMPLE_RATE), device="cuda")
    prompts = [Prompt(text=SPEED_PROMPT)]
    separator.separate(wav, SAMPLE_RATE, prompts)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batch):
        separator.separate(wav, SAMPLE_RATE, prompts)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"x_real_time": batch * seconds / elapsed, "device": torch.cuda.get_device_name()}


def measure_speed(lengths: list[float], threads: int, timeout: float | None) -> list[dict]:
    """One fresh process per length so that its peak RSS belongs to that length alone."""
    results = []
    for seconds in tqdm(lengths, desc="speed", unit="length"):
        out = run_json_subprocess(
            "benchmarks.separation", ["--speed-worker", str(seconds), "--threads", str(threads)], timeout
        )
        out.setdefault("seconds", seconds)
        results.append(out)
    return results


def speed_table(results: list[dict]) -> str:
    rows = [
        [
            f"{r['seconds'] / 60:.1f} min" if r["seconds"] >= 60 else f"{r['seconds']:.0f} s",
            r.get("rtf"),
            r.get("rss_after_load_mb"),
            r.get("peak_rss_mb"),
            r.get("error", ""),
        ]
        for r in results
    ]
    return markdown_table(["input", "RTF", "RSS after load MiB", "peak RSS MiB", "note"], rows, digits=3)


# ------------------------------------------------------------------------------------ main
def paired_tables(records: list[dict]) -> dict:
    """For each ``X`` scored beside ``X_unrefined``: the paired SI-SDRi difference (mask refiner on - off), printed."""
    by_system = si_sdri_by_system(records)
    out = {}
    for name in sorted(by_system):
        other = by_system.get(f"{name}_unrefined")
        if not other:
            continue
        ids = sorted(set(by_system[name]) & set(other))
        out[name] = paired_difference([by_system[name][i] for i in ids], [other[i] for i in ids])
        d = out[name]
        print(f"{name} - {name}_unrefined: mean SI-SDRi difference {d['mean']:+.2f} dB "
              f"(95 % bootstrap {d['low']:+.2f}..{d['high']:+.2f}), better on {100 * d['wins']:.0f} % of {d['n']}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--limit", type=int, default=None, help="only the first N manifest lines")
    parser.add_argument(
        "--baselines", default=None, help="folder with convtasnet/ and lass/ (runs/baselines)"
    )
    parser.add_argument("--bundle", default=None, help="promptsep model bundle folder (default: the embedded one)")
    parser.add_argument("--systems", default=None, help="comma-separated subset of systems to score")
    parser.add_argument(
        "--mask-floor", type=float, default=None, help="promptsep's mask floor (default: InferenceConfig's)"
    )
    parser.add_argument(
        "--shifts", type=int, default=1, help="promptsep's shifted passes per chunk, masks averaged (InferenceConfig.shifts)"
    )
    parser.add_argument(
        "--room",
        default=None,
        metavar="LO,HI",
        help="reverberant condition: each source gets its own synthetic room tail (RT60 drawn from LO..HI "
        "seconds per mixture, e.g. 0.3,1.0; direct-to-reverberant ratio -6..+6 dB); the reference is the "
        "reverberant target",
    )
    parser.add_argument(
        "--gain-db", type=float, default=0.0, help="scale every mixture and reference by this many dB (loudness)"
    )
    parser.add_argument(
        "--prompts",
        choices=PROMPT_SETS,
        default="manifest",
        help="text prompts: the manifest's (training phrasings of the target's category); 'heldout', one of "
        "the category's held-out paraphrases, never used in training; or 'user', one of its short search-box wordings "
        "(\"the dog\", \"barking\"), also never used (picked per line by its id)",
    )
    parser.add_argument(
        "--anchor-threshold",
        type=parse_anchor_threshold,
        default=LIBRARY_DEFAULT,
        help="promptsep's prompt anchoring (InferenceConfig.anchor_threshold): a similarity, or 'off'",
    )
    parser.add_argument(
        "--phrasings", type=int, default=None, help="promptsep's phrasings per text prompt (InferenceConfig.phrasings)"
    )
    parser.add_argument(
        "--chunk-seconds", type=float, default=None,
        help="promptsep's chunk length in seconds (InferenceConfig.chunk_seconds; mixtures longer than a chunk are "
        "separated in overlapping chunks, see `promptsep data long`)",
    )
    parser.add_argument(
        "--overlap-seconds", type=float, default=None, help="overlap of promptsep's chunks (InferenceConfig.overlap_seconds)"
    )
    parser.add_argument(
        "--splitter-weight", type=float, default=None,
        help="weight of the bundle's splitter in promptsep's masks (InferenceConfig.splitter_weight; 0 turns it off)",
    )
    parser.add_argument(
        "--splitter-hard", dest="splitter_soft", action="store_false", default=None,
        help="keep the splitter's weight fixed instead of scaling it by how clearly one of its outputs is the prompt's "
        "(InferenceConfig.splitter_soft)",
    )
    parser.add_argument(
        "--rate", type=int, default=SAMPLE_RATE,
        help=f"load and score every mixture at this sample rate (default {SAMPLE_RATE}, the model's); promptsep gets "
        "the audio at it, as from a 44.1 or 48 kHz recording (a data build with --rate 44100 has such manifests). "
        f"Only {', '.join(ANY_RATE_SYSTEMS)} run at another rate",
    )
    parser.add_argument("--long", action="store_true", help="also time a 60 min input")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed and memory measurements")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality measurements")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed-timeout", type=float, default=3600.0, help="seconds per speed subprocess")
    parser.add_argument("--speed-worker", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def reworded_rows(rows: list[dict], prompts: str = "heldout") -> list[dict]:
    """``rows`` with each text prompt replaced by an unseen wording of its category: one of its held-out
    paraphrases (``"heldout"``) or of its search-box wordings (``"user"``), keyed by the line's id, so every
    run and system gets the same one; lines without a category or such a wording keep theirs."""
    from dataengine.vocabulary import CATEGORIES, USER_WORDINGS

    out = []
    for row in rows:
        category = CATEGORIES.get(row.get("category") or "")
        if category is not None and row.get("prompt"):
            wordings = category.heldout if prompts == "heldout" else USER_WORDINGS.get(category.name, ())
            if wordings:
                pick = int(keyed_rng(f"{prompts}-prompt", str(row.get("id", ""))).integers(len(wordings)))
                row = dict(row, prompt=wordings[pick])
        out.append(row)
    return out


def parse_anchor_threshold(text: str) -> float | None:
    """``--anchor-threshold``: ``"off"`` -> None (prompts as typed), else a similarity."""
    if text == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a similarity or 'off', got {text!r}") from None


def parse_room(text: str | None) -> tuple[float, float] | None:
    """``"0.3,1.0"`` -> ``(0.3, 1.0)``; a single number is a fixed RT60. ``SystemExit`` with a message otherwise."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 0 < values[0] <= values[1] <= 10:
        raise SystemExit(f"--room takes LO,HI reverberation times in seconds (0 < LO <= HI <= 10), got {text!r}")
    return values[0], values[1]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.speed_worker is not None:
        print(json.dumps(speed_worker(args.speed_worker, args.threads)))
        return 0
    room = parse_room(args.room)
    torch.set_num_threads(args.threads)
    notes: list[str] = []
    result: dict = {
        "manifest": args.manifest, "notes": notes, "room": room, "gain_db": args.gain_db, "prompts": args.prompts,
        "rate": args.rate,
    }
    if not args.no_quality:
        rows = read_manifest(args.manifest, args.limit)
        if args.prompts != "manifest":
            rows = reworded_rows(rows, args.prompts)
        baselines = Path(args.baselines) if args.baselines else None
        overrides = {} if args.anchor_threshold is LIBRARY_DEFAULT else {"anchor_threshold": args.anchor_threshold}
        for key in ("phrasings", "chunk_seconds", "overlap_seconds", "splitter_weight", "splitter_soft"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        names = args.systems.split(",") if args.systems else None
        other_rate = args.rate != SAMPLE_RATE
        if other_rate and any(name not in ANY_RATE_SYSTEMS for name in names or []):
            raise SystemExit(f"--rate {args.rate}: only {', '.join(ANY_RATE_SYSTEMS)} run at another rate")
        try:
            systems = build_systems(baselines, notes, args.bundle, args.mask_floor, args.shifts, overrides, args.rate)
        except SettingError as error:
            raise SystemExit(error.flag_message()) from None
        if other_rate and names is None:
            names = [name for name in ANY_RATE_SYSTEMS if name in systems]
        systems = select_systems(systems, names)
        summary, records = evaluate_quality(rows, systems, room, args.gain_db, args.rate)
        result.update(quality=summary, items=records)
        print(quality_tables(summary))
        result["paired"] = paired_tables(records)
    if not args.no_speed:
        lengths = list(SPEED_SECONDS) + ([LONG_SECONDS] if args.long else [])
        speed = measure_speed(lengths, args.threads, args.speed_timeout)
        result["speed"] = speed
        try:
            result["cuda"] = cuda_throughput()
        except Exception as error:  # noqa: BLE001
            result["cuda"] = {"skipped": f"{type(error).__name__}: {error}"}
        print("\n" + speed_table(speed))
        print(f"\nCUDA batched throughput: {result['cuda']}")
    for note in notes:
        print(f"note: {note}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
