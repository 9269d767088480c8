"""Fitting the judge: (mixture, prompt, track) triples from a manifest, scored against the true target.

For each mixture the shipped separator makes tracks of every quality the judge must rank: its target for the true
prompt, its target for another category's prompt (a wrong separation), the residual of the first, and the unprocessed
mixture. Each track's true SI-SDR against the prompted sound (clipped to +-30 dB) is what the judge learns to predict
from its features under the true prompt; it is fitted on the two separations (``FIT_TRACKS``). The same records serve the judge benchmark, which also scores the first
track under the swapped prompt (telling a right prompt from a wrong one).
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

TRACKS = ("separated", "wrong_prompt", "residual", "mixture")
# The judge is fitted on the separations (a target for the right prompt and one for a wrong prompt): what it ranks
# when it picks among candidates. Fitted on all four kinds, it learns mostly to tell a residual or an untouched
# mixture from a separation, and ranks separations far worse: 5-fold on 400 val mixtures, Spearman with SI-SDR over
# the right-prompt separations 0.41 against 0.13 (over all four kinds 0.34 against 0.40; benchmarks/RESULTS.md, "The judge").
FIT_TRACKS = (0, 1)
CLIP_DB = 30.0


def swapped_prompts(rows: list[dict], seed: int) -> list[str]:
    """A prompt of another category for each row (deterministic for ``seed``)."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        others = [r["prompt"] for r in rows if r.get("category") != row.get("category") and r.get("prompt")]
        if not others:
            raise ValueError("the manifest needs prompts of at least two categories to swap them")
        out.append(rng.choice(others))
    return out


def collect(rows: list[dict], swapped: list[str], bundle: str | None = None, threads: int = 1, position: int = 0) -> dict:
    """Features and true SI-SDRs of the tracks of ``rows`` (text prompts; resolved manifest rows)."""
    from encoders.audio_io import load_audio
    from judge.model import Judge
    from separation.inference import Prompt, Separator
    from separation.metrics import si_sdr

    torch.set_num_threads(threads)
    separator = Separator.from_pretrained(bundle)
    judge = separator.judge or Judge(separator.prompt_encoder, separator.splitter)
    rate = judge.config.sample_rate
    features, swapped_features, targets, ids = [], [], [], []
    for row, other in tqdm(list(zip(rows, swapped, strict=True)), desc="judge triples", position=position, leave=False):
        mixture, _ = load_audio(row["audio"], sample_rate=rate, channels=1)
        truth, _ = load_audio(row["target"], sample_rate=rate, channels=1)
        mixture, truth = mixture[0], truth[0, : mixture.shape[-1]]
        right = separator.separate(mixture, rate, row["prompt"]).targets[0, 0]
        wrong = separator.separate(mixture, rate, other).targets[0, 0]
        tracks = torch.stack([right, wrong, mixture - right, mixture])
        prompts = torch.stack([judge.prompt_embedding(Prompt(text=text)) for text in (row["prompt"], other)])
        own, swapped = judge.features(mixture, tracks, prompts)  # the tracks read once for both prompts
        features.append(own)
        swapped_features.append(swapped[0])
        targets.append(torch.stack([si_sdr(t, truth) for t in tracks]).clamp(-CLIP_DB, CLIP_DB))
        ids.append(row["id"])
    return {"features": torch.stack(features), "swapped": torch.stack(swapped_features), "si_sdr": torch.stack(targets), "ids": ids}


def collect_parallel(rows: list[dict], seed: int = 0, bundle: str | None = None, jobs: int = 1) -> dict:
    """:func:`collect` over ``jobs`` processes of one thread each (the rows split in contiguous shares)."""
    swapped = swapped_prompts(rows, seed)
    jobs = max(1, min(jobs, len(rows)))
    bounds = [round(i * len(rows) / jobs) for i in range(jobs + 1)]
    if jobs == 1:
        return collect(rows, swapped, bundle, threads=max(1, os.cpu_count() or 1))
    with ProcessPoolExecutor(jobs) as pool:
        futures = [
            pool.submit(collect, rows[a:b], swapped[a:b], bundle, 1, i)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]
        parts = [future.result() for future in futures]
    return {
        "features": torch.cat([p["features"] for p in parts]),
        "swapped": torch.cat([p["swapped"] for p in parts]),
        "si_sdr": torch.cat([p["si_sdr"] for p in parts]),
        "ids": sum((p["ids"] for p in parts), []),
    }


def train_judge(manifest: str | Path, out: str | Path, limit: int | None = None, seed: int = 0, alpha: float = 1.0,
                bundle: str | None = None, jobs: int = 1, records: str | Path | None = None) -> dict:
    """Collect triples from ``manifest`` (or reuse ``records``, a file an earlier run saved), fit, write ``out``."""
    from dataengine.manifest import read_manifest
    from judge.model import Judge
    from separation.inference import Separator

    records_path = Path(records) if records else None
    if records_path is not None and records_path.is_file():
        data = torch.load(records_path, weights_only=True)
    else:
        rows = [r for r in read_manifest(manifest, limit) if r.get("prompt") and r.get("target")]
        if not rows:
            raise ValueError(f"{manifest}: no line with a text prompt and a target")
        data = collect_parallel(rows, seed, bundle, jobs)
        if records_path is not None:
            records_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: v for k, v in data.items() if k != "ids"}, records_path)
    separator = Separator.from_pretrained(bundle)
    judge = Judge(separator.prompt_encoder, separator.splitter)
    fit = list(FIT_TRACKS)
    judge.config.fitted_on = f"{Path(manifest).name}: {data['features'].shape[0]} mixtures x {len(fit)} separations"
    judge.fit(data["features"][:, fit].flatten(0, 1), data["si_sdr"][:, fit].flatten(), alpha)
    judge.save_pretrained(out)
    return data
