"""How well the judge ranks separations (DESIGN: "Quality bars"), beside alignment alone.

For each mixture of the manifest (text prompts), the bundle's separator makes four tracks (``judge.train``): its
target for the true prompt, its target for another category's prompt, the residual of the first, and the mixture.
Printed, for the bundle's judge and for the track's alignment with the prompt alone (DESIGN's plain judge):

- Spearman correlation of the score with the track's true SI-SDR: over all four kinds of track, over the targets
  separated for the right prompt, and over both separations (right and wrong prompt) pooled;
- how often the two separations of a mixture are scored in the order of their true SI-SDR (``pair_order``, what
  picking between candidates needs);
- the AUC of telling the right prompt from a swapped one: the separated target scored under its own prompt against
  the same track scored under the other category's prompt.

    python -m benchmarks.judge --manifest data/test.jsonl --limit 300 --json runs/judge_test.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu, spearmanr

from benchmarks.common import markdown_table, read_manifest, write_json


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half): Mann-Whitney's U over n1 n2."""
    u = mannwhitneyu(positive, negative, alternative="two-sided").statistic
    return float(u / (len(positive) * len(negative)))


def evaluate(records: dict, judge) -> list[dict]:
    """One row per scorer: ``judge`` (the bundle's) and ``alignment`` (cosine of track and prompt embeddings)."""
    features, swapped, truth = records["features"], records["swapped"], records["si_sdr"].numpy()
    align = judge.config.features.index("align_track")
    scorers = {
        "judge": (judge.predict(features.flatten(0, 1)).reshape(truth.shape).numpy(), judge.predict(swapped).numpy()),
        "alignment": (features[..., align].numpy(), swapped[:, align].numpy()),
    }
    rows = []
    for name, (scores, swapped_scores) in scorers.items():
        rows.append({
            "scorer": name,
            "mixtures": int(truth.shape[0]),
            "spearman_all": float(spearmanr(scores.ravel(), truth.ravel())[0]),
            "spearman_separated": float(spearmanr(scores[:, 0], truth[:, 0])[0]),
            "spearman_separations": float(spearmanr(scores[:, :2].ravel(), truth[:, :2].ravel())[0]),
            "pair_order": float(np.mean(np.sign(scores[:, 0] - scores[:, 1]) == np.sign(truth[:, 0] - truth[:, 1]))),
            "swapped_prompt_auc": auc(scores[:, 0], swapped_scores),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    from judge.model import Judge
    from judge.train import collect_parallel
    from separation.inference import Separator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default="data/test.jsonl")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--bundle", default=None, help="bundle folder (default: the embedded one)")
    parser.add_argument("--judge", default=None, help="a judge/ folder to score with instead of the bundle's")
    parser.add_argument("--jobs", type=int, default=2, help="processes collecting tracks (one thread each)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the swapped prompts")
    parser.add_argument("--records", default=None, help="save the collected features here, or reuse them if the file exists")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    separator = Separator.from_pretrained(args.bundle)
    judge = Judge.from_pretrained(args.judge, separator.prompt_encoder, separator.splitter) if args.judge else separator.judge
    if judge is None:
        print("the bundle has no judge/: pass --judge DIR", file=sys.stderr)
        return 2
    if args.records and Path(args.records).is_file():
        records = torch.load(args.records, weights_only=True)
    else:
        rows = [r for r in read_manifest(args.manifest, args.limit) if r.get("prompt") and r.get("target")]
        records = collect_parallel(rows, args.seed, args.bundle, args.jobs)
        if args.records:
            torch.save({k: v for k, v in records.items() if k != "ids"}, args.records)
    results = evaluate(records, judge)
    keys = ("scorer", "mixtures", "spearman_all", "spearman_separated", "spearman_separations", "pair_order",
            "swapped_prompt_auc")
    print(markdown_table(keys, [[r[k] for k in keys] for r in results], digits=3))
    if args.json:
        write_json(args.json, {"manifest": args.manifest, "limit": args.limit, "fitted_on": judge.config.fitted_on,
                               "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
