"""benchmarks.compare and the picture-clustered bootstrap of benchmarks.common.paired_difference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.common import paired_difference
from benchmarks.compare import compare, main, picture_source


def test_clustered_bootstrap_counts_a_repeated_item_once():
    rng = np.random.default_rng(0)
    values = rng.normal(0.5, 2.0, size=10)
    copies = 20
    a, b = np.repeat(values, copies), np.zeros(10 * copies)
    labels = np.repeat([f"pic{i}" for i in range(10)], copies)
    items = paired_difference(a, b, resamples=3000)
    pictures = paired_difference(a, b, resamples=3000, clusters=labels)
    ten = paired_difference(values, np.zeros(10), resamples=3000)
    assert pictures["mean"] == pytest.approx(items["mean"]) == pytest.approx(values.mean())
    assert pictures["clusters"] == 10 and items["clusters"] == 200 and pictures["n"] == 200
    # 200 items that are 10 values repeated carry the evidence of 10 draws, not 200
    assert pictures["high"] - pictures["low"] == pytest.approx(ten["high"] - ten["low"], rel=0.15)
    assert pictures["high"] - pictures["low"] > 3 * (items["high"] - items["low"])
    # unequal cluster sizes: every resample's mean is an item mean, so a constant difference has a zero-width interval
    flat = paired_difference([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], clusters=["x", "x", "y"])
    assert flat["low"] == flat["high"] == 1.0
    with pytest.raises(ValueError, match="2 cluster labels for 3 items"):
        paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], clusters=["x", "y"])


def _result(manifest: str, scores: dict[str, dict[str, float]]) -> dict:
    return {"manifest": manifest,
            "items": [{"id": i, "system": s, "si_sdri": v} for s, by_id in scores.items() for i, v in by_id.items()]}


def test_compare_pairs_by_id_and_splits_picture_prompts_by_source(tmp_path, capsys):
    rows = [{"id": f"m{k}", "image": f"images/{'emoji' if k < 6 else 'tuxpaint'}/p{k % 3}.png"} for k in range(8)]
    manifest = tmp_path / "val.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = _result(str(manifest), {"promptsep_visual": {f"m{k}": 1.0 for k in range(8)},
                                   "promptsep_text": {"m0": 2.0, "m1": 3.0}})
    cand = _result(str(manifest), {"promptsep_visual": {f"m{k}": 2.0 if k < 6 else -3.0 for k in range(8)},
                                   "promptsep_text": {"m0": 2.5, "m1": 2.0, "m9": 7.0}})
    by_id = {r["id"]: r for r in rows}
    records = {r["system"]: r for r in compare(base, cand, by_id, resamples=500)}
    text, visual = records["promptsep_text"], records["promptsep_visual"]
    assert text["n"] == 2 and text["difference"]["mean"] == pytest.approx(-0.25) and "by_picture" not in text
    assert visual["difference"]["mean"] == pytest.approx((6 * 1.0 - 2 * 4.0) / 8)
    emoji, stamps = visual["by_source"]["emoji"], visual["by_source"]["tuxpaint"]
    assert (emoji["n"], emoji["clusters"], emoji["mean"]) == (6, 3, 1.0)
    assert (stamps["n"], stamps["clusters"], stamps["mean"]) == (2, 2, -4.0)
    assert visual["by_picture"]["clusters"] == 5  # three emoji and two stamps, distinct by folder

    for name, result in (("base.json", base), ("cand.json", cand)):
        (tmp_path / name).write_text(json.dumps(result))
    assert main([str(tmp_path / "base.json"), str(tmp_path / "cand.json"), "--json", str(tmp_path / "out.json")]) == 0
    printed = capsys.readouterr().out
    assert "tuxpaint" in printed and "-4.00" in printed
    assert {r["system"] for r in json.loads((tmp_path / "out.json").read_text())} == {"promptsep_text", "promptsep_visual"}
    (tmp_path / "other.json").write_text(json.dumps(dict(cand, manifest="data/test.jsonl")))
    assert main([str(tmp_path / "base.json"), str(tmp_path / "other.json")]) == 2
    assert "different manifests" in capsys.readouterr().err
    assert picture_source("images/emoji/bell_0.png") == "emoji" and picture_source(None) is None


def test_compare_pairs_two_systems_on_a_probe_manifest(tmp_path, capsys):
    """`--pair promptsep_visual:promptsep_text`: a probe's picture prompts against the full run's text prompts, on
    the mixtures the probe manifest holds, clustered by the probe's pictures."""
    probe = [{"id": f"m{k}", "image": f"images/gcompris-photos/p{k % 2}.png"} for k in range(4)]
    manifest = tmp_path / "test_photos.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in probe))
    full = _result("test.jsonl", {"promptsep_text": {f"m{k}": 3.0 + k for k in range(6)},
                                  "promptsep_visual": {f"m{k}": 1.0 for k in range(6)}})
    photos = _result(str(manifest), {"promptsep_visual": {f"m{k}": 0.5 for k in range(4)}})
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "photos.json").write_text(json.dumps(photos))
    args = [str(tmp_path / "full.json"), str(tmp_path / "photos.json"), "--manifest", str(manifest)]
    assert main([*args, "--pair", "promptsep_visual:promptsep_text", "--pair", "promptsep_visual:promptsep_visual",
                 "--json", str(tmp_path / "out.json")]) == 0
    records = {r["system"]: r for r in json.loads((tmp_path / "out.json").read_text())}
    versus_text = records["promptsep_visual - promptsep_text"]
    assert versus_text["n"] == 4 and versus_text["difference"]["mean"] == pytest.approx(0.5 - 4.5)
    assert versus_text["by_picture"]["clusters"] == 2
    assert records["promptsep_visual"]["difference"]["mean"] == pytest.approx(-0.5)
    capsys.readouterr()
    assert main([*args, "--pair", "promptsep_visual"]) == 2
    assert "CAND_SYSTEM:BASE_SYSTEM" in capsys.readouterr().err
