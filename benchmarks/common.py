"""Small helpers every benchmark shares: manifests, summaries, markdown tables, JSON, speed and memory.

Benchmarks run from the repository root as modules (``python -m benchmarks.separation ...``).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from dataengine.manifest import PATH_KEYS, read_manifest, resolve_row  # noqa: F401 - shared with every benchmark
from encoders.files import staged


def mask_settings() -> tuple[int, int, float]:
    """STFT size, hop and mask power of promptsep's mixture-consistent output (its inference defaults)."""
    from separation.inference import InferenceConfig

    cfg = InferenceConfig()
    return cfg.n_fft, cfg.hop, cfg.mask_power


DEFAULT_MANIFEST = Path("data") / "test.jsonl"


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """Median, mean and count of the finite values (``None`` where there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"median": None, "mean": None, "n": 0}
    return {"median": float(np.median(finite)), "mean": float(np.mean(finite)), "n": len(finite)}


def si_sdri_by_system(items: Iterable[dict]) -> dict[str, dict[str, float]]:
    """``{system: {item id: SI-SDRi}}`` of a separation benchmark's per-item records (unscored items left out)."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        if item.get("si_sdri") is not None:
            out.setdefault(item["system"], {})[item["id"]] = float(item["si_sdri"])
    return out


def paired_difference(
    a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0, clusters: Sequence | None = None
) -> dict[str, float]:
    """Mean of ``a - b`` over paired items, its 95 % bootstrap interval and how often ``a`` wins.

    ``clusters``: one label per item (e.g. the picture that prompted it). The bootstrap then draws whole clusters
    with replacement, so items that share a label, and so fail or succeed together, count as one draw; the
    interval widens accordingly. ``None``: every item is its own cluster."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    labels = np.arange(len(diff)) if clusters is None else np.asarray([str(c) for c in clusters])
    if len(labels) != len(diff):
        raise ValueError(f"{len(labels)} cluster labels for {len(diff)} items")
    finite = np.isfinite(diff)
    diff, labels = diff[finite], labels[finite]
    if not len(diff):
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "wins": float("nan"), "n": 0}
    _, member = np.unique(labels, return_inverse=True)
    sums, counts = np.bincount(member, weights=diff), np.bincount(member).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), (resamples, len(sums)))
    means = sums[draws].sum(1) / counts[draws].sum(1)  # the item mean of each resampled set of clusters
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(diff.mean()), "low": float(low), "high": float(high), "wins": float((diff > 0).mean()),
        "n": len(diff), "clusters": len(sums),
    }


def format_cell(value: Any, digits: int = 2) -> str:
    """Numbers with ``digits`` decimals, ``None``/NaN as an em dash, everything else as ``str``."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "—" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub markdown table; numbers right-aligned, text left-aligned."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError("every row needs one cell per header")
    numeric = [
        all(isinstance(row[i], (int, float, np.number)) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
    for row in rows:
        lines.append("| " + " | ".join(format_cell(cell, digits) for cell in row) + " |")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (NaN/Inf become ``null``, numpy scalars plain numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp, open(tmp, "w") as handle:
        json.dump(_jsonable(data), handle, indent=2, allow_nan=False)
        handle.write("\n")
    return path


def real_time_factor(fn: Callable[[], Any], audio_seconds: float, repeats: int = 1) -> float:
    """Wall-clock seconds of ``fn()`` (best of ``repeats``) divided by the audio's duration."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / audio_seconds


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_json_subprocess(module: str, args: Sequence[str], timeout: float | None = None) -> dict:
    """Run ``python -m module args...`` in a fresh interpreter and parse the JSON object on its last
    stdout line (used to measure peak memory per input length without earlier runs polluting it).

    Returns ``{"error": ...}`` when the child fails or times out.
    """
    cmd = [sys.executable, "-m", module, *args]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parent.parent
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: " + " / ".join(tail)}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"no JSON on the last line: {lines[-1][:200]}"}
