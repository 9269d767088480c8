"""Time-budgeted training of the separation baselines (ConvTasNet with PIT, the LASS mask net).

    python -m separation.baselines_train --which convtasnet|lass --data data \
        --out runs/baselines/<which> --minutes 12

Training mixtures come from the data engine's on-the-fly ``MixtureSampler`` when it is available
(the same source the separator trains on) and otherwise from the precomputed mixtures of
``DATA/train.jsonl``. Training stops after ``--minutes``; the folder then holds ``config.json``
(model config + training summary, including the median validation SI-SDRi) and
``model.safetensors``.

``--init DIR`` starts from a saved baseline of the same kind and shape (a warm start); ``--model KEY=VALUE``
changes one setting of the model from its default. Together they may make a ConvTasNet deeper: the run starts as
the saved model, with new blocks that add nothing until they learn (``separation.baselines.grow_convtasnet``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from encoders.audio_io import load_audio
from encoders.errors import PromptsepError, WeightsError
from separation.baselines import (
    BASELINE_NAMES,
    TextEmbedder,
    build_baseline,
    grow_convtasnet,
    load_baseline,
    neg_si_sdr_loss,
    oracle_pick,
    pit_loss,
    save_baseline,
)
from separation.metrics import si_sdri

CROP_TRIES = 8
SAMPLE_RETRIES = 20
ACTIVE_FRACTION = 0.25  # a crop's target RMS must reach this fraction of the whole clip's


@dataclass
class Batch:
    """One training batch: mixture, target, residual ``(B, N)`` and one prompt per item."""

    mixture: torch.Tensor
    target: torch.Tensor
    residual: torch.Tensor
    prompts: list[str]


@dataclass
class Example:
    """One mixture with its ground truth, mono ``(N,)`` float32."""

    mixture: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    prompt: str


def read_examples(manifest: Path, sample_rate: int, limit: int | None = None) -> list[Example]:
    """Precomputed mixtures of a manifest (paths relative to its folder) that have target and residual."""
    root = manifest.parent
    examples: list[Example] = []
    with manifest.open() as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            if not row.get("target") or not row.get("residual"):
                continue

            def read(key: str, row: dict = row) -> np.ndarray:
                return load_audio(root / row[key], sample_rate=sample_rate, channels=1)[0][0].numpy()

            examples.append(
                Example(read("audio"), read("target"), read("residual"), str(row.get("prompt") or ""))
            )
            if limit is not None and len(examples) >= limit:
                break
    return examples


def _crop(example: Example, length: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = example.mixture.shape[0]
    if n <= length:
        pad = (0, length - n)
        return tuple(np.pad(a, pad) for a in (example.mixture, example.target, example.residual))  # type: ignore[return-value]
    floor = ACTIVE_FRACTION * float(np.sqrt(np.mean(example.target**2)))
    for _ in range(CROP_TRIES):  # prefer a crop where the target is audible
        start = rng.randrange(n - length + 1)
        if float(np.sqrt(np.mean(example.target[start : start + length] ** 2))) >= floor:
            break
    return tuple(a[start : start + length] for a in (example.mixture, example.target, example.residual))  # type: ignore[return-value]


def _sample_with_retries(sampler, rng: np.random.Generator) -> Example:
    """One sampler mixture; a clip that fails to load (e.g. the data engine rewriting it) is skipped."""
    for attempt in range(SAMPLE_RETRIES):
        try:
            m = sampler.sample(rng)
            return Example(m.mixture, m.target, m.residual, m.prompt)
        except (OSError, RuntimeError, PromptsepError) as error:
            if attempt == SAMPLE_RETRIES - 1:
                raise PromptsepError(
                    f"the data engine's sampler failed {SAMPLE_RETRIES} times in a row: {error}"
                ) from error
            print(f"skipping a mixture whose clip failed to load: {error}")
    raise AssertionError("unreachable")


def batches(
    data: Path, batch_size: int, seconds: float, sample_rate: int, seed: int, source: str = "auto"
) -> Iterator[Batch]:
    """Endless training batches: on-the-fly data-engine mixtures (``source="sampler"``), crops of
    ``data/train.jsonl`` (``"manifest"``), or the first that works (``"auto"``)."""
    length = int(seconds * sample_rate)
    rng = random.Random(seed)
    try:
        if source == "manifest":
            raise ImportError("--source manifest")
        from dataengine.mixing import MixtureSampler

        sampler = MixtureSampler(
            data, split="train", seed=seed, seconds=seconds, rate=sample_rate, augment=True
        )
    except (ImportError, OSError, PromptsepError) as error:
        if source == "sampler":
            raise PromptsepError(
                f"the data engine's MixtureSampler is unavailable for {data}: {error}"
            ) from error
        sampler = None
        manifest = data / "train.jsonl"
        if not manifest.is_file():
            raise PromptsepError(
                f"no training data: the data engine's MixtureSampler is unavailable ({error}) and {manifest} "
                "does not exist; build the data first with `promptsep data build --out DATA`"
            ) from error
        examples = read_examples(manifest, sample_rate)
        if not examples:
            raise PromptsepError(f"{manifest} has no lines with target and residual") from error
        print(f"training on {len(examples)} precomputed mixtures from {manifest} ({error})")
    else:
        print(f"training on on-the-fly mixtures from dataengine.mixing.MixtureSampler({data})")
    np_rng = np.random.default_rng(seed)
    while True:
        rows = []
        for _ in range(batch_size):
            if sampler is not None:
                ex = _sample_with_retries(sampler, np_rng)
            else:
                ex = examples[rng.randrange(len(examples))]
            rows.append((*_crop(ex, length, rng), ex.prompt))
        yield Batch(
            mixture=torch.from_numpy(np.stack([r[0] for r in rows])).float(),
            target=torch.from_numpy(np.stack([r[1] for r in rows])).float(),
            residual=torch.from_numpy(np.stack([r[2] for r in rows])).float(),
            prompts=[r[3] for r in rows],
        )


class Trainer:
    """One optimiser step at a time for either baseline; ``loss`` is the mean negative SI-SDR (dB)."""

    def __init__(self, which: str, model: torch.nn.Module, lr: float, text: TextEmbedder | None = None):
        self.which = which
        self.model = model
        self.text = text
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.pit = pit_loss() if which == "convtasnet" else None

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.which == "convtasnet":
            assert self.pit is not None
            estimates = self.model(batch.mixture)
            return self.pit(estimates, torch.stack([batch.target, batch.residual], dim=1))
        assert self.text is not None
        target, _, _ = self.model(batch.mixture, self.text(batch.prompts))
        return neg_si_sdr_loss(target, batch.target)

    def step(self, batch: Batch, clip: float = 5.0) -> float:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, examples: list[Example]) -> float:
        """Median SI-SDRi (dB) of the target over ``examples`` (ConvTasNet: oracle output choice)."""
        self.model.eval()
        values = []
        for ex in examples:
            mixture = torch.from_numpy(ex.mixture)[None].float()
            target = torch.from_numpy(ex.target)[None].float()
            if self.which == "convtasnet":
                estimate, _ = oracle_pick(self.model(mixture), target)
            else:
                assert self.text is not None
                estimate, _, _ = self.model(mixture, self.text([ex.prompt]))
            values.append(float(si_sdri(estimate, target, mixture)[0]))
        return float(np.median(values)) if values else math.nan


def _warm_start(path: str, which: str, model: torch.nn.Module, model_config: dict) -> torch.nn.Module:
    """The model of the baseline saved at ``path`` (fp32), which must be ``which`` with ``model_config``; or,
    for a ConvTasNet that this run makes deeper (``--model n_blocks=`` / ``n_repeats=``), ``model`` grown from it
    (:func:`~separation.baselines.grow_convtasnet`: the same function at the start)."""
    saved = load_baseline(path)
    if saved.which == which and saved.config.model == model_config:
        return saved.model.float()
    if saved.which == which == "convtasnet":
        try:
            return grow_convtasnet(saved.model.float(), saved.config.model, model, model_config)
        except ValueError:
            pass
    raise PromptsepError(
        f"--init {path} holds a {saved.which} with config {saved.config.model}, "
        f"not this run's {which} with {model_config} (nor a shallower one of it)"
    )


def _model_overrides(pairs: list[str]) -> dict:
    """``["n_blocks=8", "norm_type=gLN"]`` -> ``{"n_blocks": 8, "norm_type": "gLN"}`` (values read as JSON when
    they parse, else kept as text)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PromptsepError(f"--model takes KEY=VALUE, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def train(args: argparse.Namespace) -> dict:
    """Train until the time budget is spent; save and return the training summary."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    overrides = _model_overrides(args.model)
    wanted = {"sample_rate": args.sample_rate, **overrides}
    text = None
    if args.which == "lass":
        text = TextEmbedder(args.text_encoder)
        wanted["text_encoder"] = text.kind
    try:
        model, model_config = build_baseline(args.which, wanted)
    except WeightsError as error:
        raise PromptsepError(f"--model: {error}") from error
    if args.init:
        model = _warm_start(args.init, args.which, model, model_config)
    trainer = Trainer(args.which, model, args.lr, text)
    data = Path(args.data)
    stream = batches(data, args.batch_size, args.seconds, args.sample_rate, args.seed, args.source)
    budget = args.minutes * 60.0
    start = time.monotonic()
    steps, recent = 0, []
    with tqdm(total=round(budget), unit="s", desc=f"train {args.which}") as bar:
        while time.monotonic() - start < budget and (args.max_steps is None or steps < args.max_steps):
            if args.cosine:
                fraction = min((time.monotonic() - start) / budget, 1.0)
                for group in trainer.optimizer.param_groups:
                    group["lr"] = args.lr * 0.5 * (1.0 + math.cos(math.pi * fraction))
            loss = trainer.step(next(stream))
            steps += 1
            recent = (recent + [loss])[-50:]
            bar.n = min(round(time.monotonic() - start), bar.total)
            bar.set_postfix(step=steps, loss=f"{np.mean(recent):.2f}")
    elapsed = time.monotonic() - start
    summary: dict = {
        "steps": steps,
        "minutes": elapsed / 60.0,
        "batch_size": args.batch_size,
        "seconds": args.seconds,
        "lr": args.lr,
        "schedule": "cosine" if args.cosine else "constant",
        "init": str(args.init) if args.init else None,
        "model_overrides": overrides,
        "final_loss": float(np.mean(recent)) if recent else math.nan,
    }
    val_manifest = data / "val.jsonl"
    if args.val_items > 0 and val_manifest.is_file():
        summary["val_items"] = args.val_items
        summary["val_median_si_sdri"] = trainer.evaluate(
            read_examples(val_manifest, args.sample_rate, args.val_items)
        )
    save_baseline(args.out, args.which, model, model_config, summary)
    print(json.dumps(summary, indent=2))
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a separation baseline on a time budget.")
    parser.add_argument("--which", choices=BASELINE_NAMES, required=True)
    parser.add_argument("--data", default="data", help="data-engine folder (train.jsonl, val.jsonl, library)")
    parser.add_argument("--out", required=True, help="output folder for config.json + model.safetensors")
    parser.add_argument("--minutes", type=float, default=12.0, help="wall-clock training budget")
    parser.add_argument("--max-steps", type=int, default=None, help="stop earlier after this many steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="training crop length")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init", default=None, help="start from the weights of a baseline folder of the same kind (warm start)"
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one model setting from the baseline's default (repeatable), e.g. n_blocks=8; with --init a "
        "ConvTasNet may grow deeper (more n_blocks / n_repeats) and starts as the saved one",
    )
    parser.add_argument(
        "--cosine", action="store_true", help="decay the learning rate to 0 over the budget (cosine)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--source",
        default="auto",
        choices=("auto", "sampler", "manifest"),
        help="training mixtures: data-engine sampler, DATA/train.jsonl, or the first available",
    )
    parser.add_argument("--text-encoder", default="auto", choices=("auto", "peav", "minilm"))
    parser.add_argument(
        "--val-items", type=int, default=64, help="validation mixtures scored at the end (0: none)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except PromptsepError as error:
        print(f"baselines_train: error: {error}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
