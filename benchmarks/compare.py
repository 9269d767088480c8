"""Paired comparison of two ``benchmarks/separation.py --json`` results on the same manifest (candidate - base).

For every system both results scored: the mean SI-SDRi difference over the mixtures both scored, its 95 % bootstrap
interval and how often the candidate is better. Picture-prompted systems (``*visual*``, ``*both*``) also get an
interval that resamples whole pictures (mixtures prompted by one picture succeed or fail together, so they are not independent
draws) and a line per picture source (the folder the picture lies in, e.g. ``emoji``, ``tuxpaint``).

    python -m benchmarks.compare BASE.json CAND.json [--manifest M] [--json OUT]

``--pair CAND_SYSTEM:BASE_SYSTEM`` compares two different systems instead, e.g. a picture probe's picture prompts
(``data/test_photos.jsonl``) against the same mixtures' text prompts in the full split's run:

    python -m benchmarks.compare TEST600.json PHOTOS.json --manifest data/test_photos.jsonl \
        --pair promptsep_visual:promptsep_text
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import markdown_table, paired_difference, read_manifest, si_sdri_by_system, write_json

PICTURE_SYSTEMS = ("visual", "both")  # systems whose prompt holds the line's picture


def picture_source(path: str | None) -> str | None:
    """The folder a prompt picture lies in (``images/emoji/bell_0.png`` -> ``emoji``)."""
    return Path(path).parent.name or None if path else None


def compare(base: dict, cand: dict, rows: dict[str, dict], resamples: int = 4000,
            pairs: list[tuple[str, str]] | None = None) -> list[dict]:
    """One record per system scored in both: medians, means, the paired difference and, for picture prompts, the
    picture-clustered interval and the difference per picture source.

    Args:
        base, cand: ``benchmarks.separation`` JSON results.
        rows: manifest lines by id (their ``image`` names each picture prompt).
        pairs: ``(candidate system, base system)`` to compare instead of each system with itself; a record's
            ``system`` is then ``"CAND - BASE"``.
    """
    a, b = si_sdri_by_system(base["items"]), si_sdri_by_system(cand["items"])
    if pairs is None:
        pairs = [(system, system) for system in sorted(set(a) & set(b))]
    records = []
    for cand_system, base_system in pairs:
        ids = sorted(set(a.get(base_system, {})) & set(b.get(cand_system, {})))
        if not ids:
            continue
        x, y = [b[cand_system][i] for i in ids], [a[base_system][i] for i in ids]
        system = cand_system if cand_system == base_system else f"{cand_system} - {base_system}"
        record = {
            "system": system, "n": len(ids),
            "base_median": float(np.median(y)), "base_mean": float(np.mean(y)),
            "cand_median": float(np.median(x)), "cand_mean": float(np.mean(x)),
            "difference": paired_difference(x, y, resamples=resamples),
        }
        pictures = [rows.get(i, {}).get("image") for i in ids]
        if any(kind in cand_system for kind in PICTURE_SYSTEMS) and all(pictures):
            record["by_picture"] = paired_difference(x, y, resamples=resamples, clusters=pictures)
            sources = defaultdict(list)
            for k, picture in enumerate(pictures):
                sources[picture_source(picture)].append(k)
            record["by_source"] = {
                source: paired_difference([x[k] for k in ks], [y[k] for k in ks], resamples=resamples,
                                          clusters=[pictures[k] for k in ks])
                for source, ks in sorted(sources.items())
            }
        records.append(record)
    return records


def _interval(d: dict) -> str:
    return f"{d['mean']:+.2f} ({d['low']:+.2f}..{d['high']:+.2f})"


def report(records: list[dict]) -> str:
    """The comparison as markdown tables."""
    rows = [
        [r["system"], r["n"], f"{r['base_median']:.2f} / {r['base_mean']:.2f}", f"{r['cand_median']:.2f} / {r['cand_mean']:.2f}",
         _interval(r["difference"]), f"{100 * r['difference']['wins']:.0f} %",
         _interval(r["by_picture"]) if "by_picture" in r else "—"]
        for r in records
    ]
    text = markdown_table(
        ["system", "n", "base median / mean", "candidate median / mean", "difference (mixtures)", "better on",
         "difference (pictures resampled)"],
        rows,
    )
    sources = [
        [r["system"], source, d["n"], d["clusters"], _interval(d)]
        for r in records for source, d in r.get("by_source", {}).items()
    ]
    if sources:
        text += "\n\nper picture source (pictures resampled)\n" + markdown_table(
            ["system", "source", "mixtures", "pictures", "difference"], sources
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="benchmarks.separation --json result of the reference")
    parser.add_argument("candidate", type=Path, help="the same benchmark of the candidate")
    parser.add_argument("--manifest", type=Path, default=None, help="the manifest both ran on (default: the one the base names)")
    parser.add_argument(
        "--pair", action="append", default=[], metavar="CAND_SYSTEM:BASE_SYSTEM",
        help="compare the candidate's CAND_SYSTEM with the base's BASE_SYSTEM (repeatable; default: each system "
        "both scored with itself), e.g. promptsep_visual:promptsep_text",
    )
    parser.add_argument("--resamples", type=int, default=4000, help="bootstrap resamples")
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base, cand = (json.loads(Path(p).read_text()) for p in (args.base, args.candidate))
    manifest = args.manifest or Path(base.get("manifest") or "")
    if base.get("manifest") != cand.get("manifest") and args.manifest is None:
        print(f"the results name different manifests ({base.get('manifest')} and {cand.get('manifest')}); "
              "give --manifest to compare them anyway", file=sys.stderr)
        return 2
    if not manifest.is_file():
        print(f"manifest {manifest} not found; give --manifest", file=sys.stderr)
        return 2
    pairs = [tuple(pair.split(":", 1)) for pair in args.pair]
    if any(len(pair) != 2 or not all(pair) for pair in pairs):
        print(f"--pair takes CAND_SYSTEM:BASE_SYSTEM, got {args.pair}", file=sys.stderr)
        return 2
    rows = {row["id"]: row for row in read_manifest(manifest)}
    records = compare(base, cand, rows, resamples=args.resamples, pairs=pairs or None)
    if not records:
        print("the two results share no system and mixture", file=sys.stderr)
        return 2
    print(report(records))
    if args.json:
        write_json(args.json, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
