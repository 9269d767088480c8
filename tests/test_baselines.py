"""Separation baselines (ConvTasNet + PIT, LASS-style FiLM mask net) and the benchmark helpers."""

import json
import math

import numpy as np
import pytest
import torch

from benchmarks.common import markdown_table, read_manifest, resolve_row, summarize, write_json
from encoders.audio_io import save_audio
from encoders.errors import WeightsError
from separation.baselines import (
    ConvTasNetBaselineConfig,
    LassConfig,
    LassNet,
    TextEmbedder,
    build_baseline,
    build_convtasnet,
    grow_convtasnet,
    load_baseline,
    oracle_pick,
    save_baseline,
)
from separation.baselines_train import Batch, Trainer
from separation.baselines_train import main as train_main

RATE = 16000
TINY_TASNET = dict(n_blocks=2, n_repeats=1, bn_chan=16, hid_chan=32, skip_chan=16, n_filters=32)
TINY_LASS = dict(hidden=32, n_blocks=2, text_dim=8)


def fake_text(texts: list[str]) -> torch.Tensor:
    """Deterministic 8-d embedding per string (no model needed)."""
    out = []
    for t in texts:
        g = torch.Generator().manual_seed(sum(map(ord, t)) % 10_000)
        out.append(torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0))
    return torch.stack(out)


def toy_batch(batch: int = 2, n: int = 4000) -> Batch:
    """Target: a sine per item; residual: white noise. Fixed seed."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n) / RATE
    target = torch.stack([0.5 * torch.sin(2 * math.pi * (440 + 110 * i) * t) for i in range(batch)])
    residual = 0.3 * torch.randn(batch, n, generator=g)
    return Batch(target + residual, target, residual, ["sine tone"] * batch)


def test_convtasnet_shapes_and_oracle_pick():
    model = build_convtasnet(ConvTasNetBaselineConfig(**TINY_TASNET))
    out = model(torch.randn(3, 4000))
    assert out.shape == (3, 2, 4000)
    target = torch.randn(2, 4000)
    other = torch.randn(2, 4000)
    estimates = torch.stack([torch.stack([other[0], target[0]]), torch.stack([target[1], other[1]])])
    chosen, rest = oracle_pick(estimates, target)
    assert torch.equal(chosen, target) and torch.equal(rest, other)


def test_lass_shapes_mask_range_and_mixture_consistency():
    net = LassNet(LassConfig(**TINY_LASS))
    mixture = torch.randn(2, 8000)
    with torch.no_grad():
        target, residual, mask = net(mixture, fake_text(["a", "b"]))
    frames = 8000 // net.config.hop_length + 1
    assert target.shape == residual.shape == (2, 8000)
    assert mask.shape == (2, net.config.n_fft // 2 + 1, frames)
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    assert torch.allclose(target + residual, mixture, atol=1e-5)


def test_lass_full_mask_passes_the_mixture_through():
    net = LassNet(LassConfig(**TINY_LASS))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(30.0)  # sigmoid -> 1
    mixture = torch.randn(1, 8000)
    with torch.no_grad():
        target, residual, _ = net(mixture, fake_text(["x"]))
    assert torch.allclose(target, mixture, atol=1e-4)
    assert float(residual.abs().max()) < 1e-4


def test_lass_conditioning_changes_the_output():
    torch.manual_seed(0)
    net = LassNet(LassConfig(**TINY_LASS))
    for block in net.blocks:  # FiLM starts at identity; give it weights
        torch.nn.init.normal_(block.film.weight, std=0.5)
    mixture = torch.randn(1, 8000)
    with torch.no_grad():
        a, _, _ = net(mixture, fake_text(["dog barking"]))
        b, _, _ = net(mixture, fake_text(["church bell"]))
    assert float((a - b).abs().max()) > 1e-3


@pytest.mark.parametrize("which,config", [("convtasnet", TINY_TASNET), ("lass", TINY_LASS)])
def test_training_steps_reduce_the_loss(which, config):
    torch.manual_seed(0)
    model, _ = build_baseline(which, config)
    text = TextEmbedder.from_function(fake_text, "fake") if which == "lass" else None
    trainer = Trainer(which, model, lr=3e-3, text=text)
    batch = toy_batch(n=2000)
    with torch.no_grad():
        before = float(trainer.loss(batch))
    for _ in range(12):
        trainer.step(batch)
    with torch.no_grad():
        after = float(trainer.loss(batch))
    assert after < before - 1.0, (before, after)


def test_text_embedder_caches_per_prompt():
    calls: list[list[str]] = []

    def counting(texts: list[str]) -> torch.Tensor:
        calls.append(list(texts))
        return fake_text(texts)

    embedder = TextEmbedder.from_function(counting, "fake")
    first = embedder(["dog", "cat", "dog"])
    second = embedder(["cat", "dog"])
    assert first.shape == (3, 8)
    assert torch.equal(first[0], first[2]) and torch.equal(second[0], first[1])
    assert calls == [["cat", "dog"]]


def test_save_load_round_trip(tmp_path):
    for which, config in (("convtasnet", TINY_TASNET), ("lass", TINY_LASS)):
        model, model_config = build_baseline(which, config)
        save_baseline(tmp_path / which, which, model, model_config, {"steps": 3})
        text = TextEmbedder.from_function(fake_text, "fake")
        loaded = load_baseline(tmp_path / which, text=text)
        assert loaded.which == which and loaded.sample_rate == RATE
        assert loaded.config.training == {"steps": 3}
        mixture, reference = torch.randn(1, 4000), torch.randn(1, 4000)
        target, residual = loaded.separate(mixture, ["dog"], reference)
        model.eval()
        with torch.no_grad():
            if which == "convtasnet":
                expected, _ = oracle_pick(model(mixture), reference)
            else:
                expected, _, _ = model(mixture, fake_text(["dog"]))
        assert target.shape == residual.shape == (1, 4000)
        assert torch.allclose(target, expected, atol=1e-6)


def test_missing_baseline_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(WeightsError, match=r"config\.json is missing.*baselines_train"):
        load_baseline(tmp_path / "convtasnet")


def test_unknown_config_key_is_a_weights_error():
    with pytest.raises(WeightsError, match="unknown keys"):
        build_baseline("lass", {"hiden": 3})
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("demucs")


def write_toy_data(data) -> None:
    """Two precomputed toy mixtures as ``train.jsonl`` and ``val.jsonl`` under ``data``."""
    rows = []
    batch = toy_batch(batch=2, n=8000)
    for i in range(2):
        for key, wav in (
            ("mix", batch.mixture[i]),
            ("target", batch.target[i]),
            ("residual", batch.residual[i]),
        ):
            save_audio(data / key / f"m{i}.wav", wav[None], RATE)
        rows.append(
            {
                "id": f"m{i}",
                "audio": f"mix/m{i}.wav",
                "target": f"target/m{i}.wav",
                "residual": f"residual/m{i}.wav",
                "prompt": "sine tone",
            }
        )
    for split in ("train", "val"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def train_args(data, out, *extra: str) -> list[str]:
    return [
        "--which", "convtasnet", "--data", str(data), "--out", str(out), "--source", "manifest",
        "--batch-size", "1", "--seconds", "0.25", *extra,
    ]  # fmt: skip


def test_train_cli_on_a_manifest(tmp_path):
    """Two steps of the real entry point on precomputed mixtures; writes a loadable baseline."""
    data = tmp_path / "data"
    write_toy_data(data)
    out = tmp_path / "run"
    assert train_main(train_args(data, out, "--max-steps", "2", "--val-items", "2")) == 0
    summary = json.loads((out / "config.json").read_text())["training"]
    assert (
        summary["steps"] == 2 and summary["val_items"] == 2 and math.isfinite(summary["val_median_si_sdri"])
    )
    assert summary["schedule"] == "constant" and summary["init"] is None
    assert load_baseline(out).which == "convtasnet"


def test_train_cli_warm_start_and_cosine(tmp_path, capsys):
    """``--init`` starts from a saved baseline's weights (no step: the very same weights); ``--cosine`` is
    recorded; a folder of another kind or shape is refused with exit code 2 and nothing written."""
    data = tmp_path / "data"
    write_toy_data(data)
    first = tmp_path / "first"
    assert train_main(train_args(data, first, "--max-steps", "1", "--val-items", "0", "--seed", "3")) == 0
    warm = tmp_path / "warm"
    code = train_main(
        train_args(data, warm, "--max-steps", "0", "--val-items", "0", "--init", str(first), "--cosine")
    )
    assert code == 0
    summary = json.loads((warm / "config.json").read_text())["training"]
    assert summary["steps"] == 0 and summary["schedule"] == "cosine" and summary["init"] == str(first)
    before = load_baseline(first).model.state_dict()
    after = load_baseline(warm).model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    small = tmp_path / "small"
    model, config = build_baseline("convtasnet", dict(TINY_TASNET, sample_rate=RATE))
    save_baseline(small, "convtasnet", model, config)
    refused = tmp_path / "refused"
    code = train_main(train_args(data, refused, "--max-steps", "1", "--val-items", "0", "--init", str(small)))
    assert code == 2 and not refused.exists()
    assert f"--init {small} holds a convtasnet with config" in capsys.readouterr().out


def test_grow_convtasnet_computes_the_same_then_learns():
    """A ConvTasNet grown deeper (more blocks per repeat, more repeats) gives the very same output at first; its new
    blocks then receive gradient; other changes (width) or shrinking are refused."""
    torch.manual_seed(0)
    small, config = build_baseline("convtasnet", dict(TINY_TASNET, sample_rate=RATE))
    deep, deep_config = build_baseline("convtasnet", dict(TINY_TASNET, sample_rate=RATE, n_blocks=3, n_repeats=2))
    deep = grow_convtasnet(small, config, deep, deep_config)
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in small.parameters())
    mixture = torch.randn(2, 4000)
    with torch.no_grad():
        torch.testing.assert_close(deep(mixture), small(mixture), atol=1e-5, rtol=1e-4)
    deep(mixture).pow(2).mean().backward()
    new_block = deep.masker.TCN[2]  # repeat 0, block 2: not in the small model
    assert float(new_block.skip_conv.weight.grad.abs().sum()) > 0  # its skip feeds the masks directly
    wider, wider_config = build_baseline("convtasnet", dict(TINY_TASNET, sample_rate=RATE, hid_chan=64))
    with pytest.raises(ValueError, match="cannot grow"):
        grow_convtasnet(small, config, wider, wider_config)
    with pytest.raises(ValueError, match="cannot grow"):
        grow_convtasnet(deep, deep_config, small, config)


def test_train_cli_model_settings_and_growth(tmp_path, capsys):
    """``--model n_blocks=3`` with ``--init`` of a 2-block run saves a deeper model that starts as the saved one;
    a setting the model does not have is refused with exit code 2 and nothing written."""
    data = tmp_path / "data"
    write_toy_data(data)
    tiny = [f"{k}={v}" for k, v in TINY_TASNET.items()]
    first = tmp_path / "first"
    model_args = [a for kv in tiny for a in ("--model", kv)]
    assert train_main(train_args(data, first, "--max-steps", "1", "--val-items", "0", *model_args)) == 0
    grown = tmp_path / "grown"
    code = train_main(
        train_args(data, grown, "--max-steps", "0", "--val-items", "0", "--init", str(first), *model_args,
                   "--model", "n_blocks=3")
    )  # fmt: skip
    assert code == 0
    saved = json.loads((grown / "config.json").read_text())
    assert saved["model"]["n_blocks"] == 3 and saved["training"]["model_overrides"]["n_blocks"] == 3
    mixture = torch.randn(1, 4000)
    with torch.no_grad():
        torch.testing.assert_close(
            load_baseline(grown).model(mixture), load_baseline(first).model(mixture), atol=1e-5, rtol=1e-4
        )
    refused = tmp_path / "refused"
    code = train_main(train_args(data, refused, "--max-steps", "1", "--val-items", "0", "--model", "blocks=3"))
    assert code == 2 and not refused.exists()
    assert "--model: ConvTasNet config has unknown keys ['blocks']" in capsys.readouterr().out


# ------------------------------------------------------------------------------ benchmark helpers
def test_markdown_table_format():
    table = markdown_table(
        ["system", "SI-SDRi", "n"], [["irm", 12.3456, 3], ["mix", None, 0], ["x|y", float("nan"), 1]]
    )
    assert table.splitlines() == [
        "| system | SI-SDRi | n |",
        "|---|---:|---:|",
        "| irm | 12.35 | 3 |",
        "| mix | — | 0 |",
        "| x\\|y | — | 1 |",
    ]
    with pytest.raises(ValueError, match="one cell per header"):
        markdown_table(["a", "b"], [[1]])


def test_manifest_paths_resolve_against_the_manifest_folder(tmp_path):
    folder = tmp_path / "split"
    folder.mkdir()
    lines = [
        {"id": "a", "audio": "mix/a.wav", "image": None, "target": "/abs/t.wav", "prompt": "dog"},
        {"id": "b", "audio": "mix/b.wav", "image": "img/b.png"},
    ]
    (folder / "test.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    rows = read_manifest(folder / "test.jsonl")
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["audio"] == str(folder / "mix" / "a.wav")
    assert rows[0]["target"] == "/abs/t.wav" and rows[0]["image"] is None and rows[0]["residual"] is None
    assert rows[0]["prompt"] == "dog" and rows[1]["image"] == str(folder / "img" / "b.png")
    assert len(read_manifest(folder / "test.jsonl", limit=1)) == 1
    assert resolve_row({"audio": "x.wav"}, folder)["audio"] == str(folder / "x.wav")


def test_manifest_errors_name_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_manifest(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "audio": "a.wav"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_manifest(bad)


def test_summarize_and_write_json(tmp_path):
    stats = summarize([1.0, 3.0, float("nan"), 8.0, None])
    assert stats == {"median": 3.0, "mean": 4.0, "n": 3}
    assert summarize([]) == {"median": None, "mean": None, "n": 0}
    path = write_json(
        tmp_path / "out" / "r.json", {"a": np.float32(1.5), "b": float("inf"), "c": [np.int64(2)]}
    )
    assert json.loads(path.read_text()) == {"a": 1.5, "b": None, "c": [2]}


def test_benchmark_room_and_gain_conditions(tmp_path):
    """--room remixes reverberant sources (seeded by the row id), --gain-db scales all three tracks."""
    from benchmarks.separation import load_row_audio, parse_room

    rng = np.random.default_rng(0)
    target = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    residual = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    for name, wav in (("t", target), ("r", residual), ("m", target + residual)):
        save_audio(tmp_path / f"{name}.wav", torch.from_numpy(wav)[None], RATE)
    row = {"id": "a", "audio": str(tmp_path / "m.wav"), "target": str(tmp_path / "t.wav"), "residual": str(tmp_path / "r.wav")}

    dry = load_row_audio(row)
    wet = load_row_audio(row, room=(0.3, 1.0))
    assert all(v.shape == (RATE,) for v in wet.values())
    torch.testing.assert_close(wet["mixture"], wet["target"] + wet["residual"])
    # the direct path survives (DRR -6..+6 dB), but the tail makes the target a different signal
    correlation = float(torch.dot(wet["target"], dry["target"]) / (wet["target"].norm() * dry["target"].norm()))
    assert 0.4 < correlation < 0.95
    torch.testing.assert_close(load_row_audio(row, room=(0.3, 1.0))["target"], wet["target"])  # same id, same room
    other = load_row_audio({**row, "id": "b"}, room=(0.3, 1.0))
    assert not torch.allclose(other["target"], wet["target"])

    loud = load_row_audio(row, gain_db=20.0)
    torch.testing.assert_close(loud["target"], 10 * dry["target"])
    # --rate: the rows at another rate, e.g. a 44.1 kHz recording; only rate-free systems may be asked for
    fine = load_row_audio(row, rate=3 * RATE)
    assert all(v.shape == (3 * RATE,) for v in fine.values())
    torch.testing.assert_close(fine["mixture"], fine["target"] + fine["residual"], atol=1e-5, rtol=0)
    from benchmarks.separation import main

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit, match="only mixture, oracle_irm"):
        main(["--manifest", str(manifest), "--rate", "44100", "--systems", "convtasnet", "--no-speed"])

    assert parse_room(None) is None and parse_room("0.5") == (0.5, 0.5) and parse_room("0.3,1") == (0.3, 1.0)
    for bad in ("1,0.3", "x", "0,1", "0.1,0.2,0.3"):
        with pytest.raises(SystemExit, match="--room takes LO,HI"):
            parse_room(bad)


def test_benchmark_refuses_settings_out_of_range_and_a_bundle_it_cannot_load(tmp_path):
    """A promptsep setting out of range stops the benchmark with the flag's name (it used to skip promptsep with a
    note and score the other systems), and so does a --bundle that does not load."""
    from benchmarks.separation import main

    rng = np.random.default_rng(1)
    row = {"id": "a"}
    for name in ("target", "residual"):
        path = tmp_path / f"{name}.wav"
        save_audio(path, torch.from_numpy((0.1 * rng.standard_normal(RATE)).astype(np.float32))[None], RATE)
        row[name] = str(path)
    row["audio"] = row["target"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(row) + "\n")
    common = ["--manifest", str(manifest), "--no-speed", "--systems", "mixture"]
    with pytest.raises(SystemExit, match=r"--mask-floor 1\.5: expected a fraction in \[0, 1\)"):
        main([*common, "--mask-floor", "1.5"])
    with pytest.raises(SystemExit, match=r"--splitter-weight 2\.0: expected a weight in \[0, 1\]"):
        main([*common, "--splitter-weight", "2"])
    with pytest.raises(WeightsError):
        main([*common, "--bundle", str(tmp_path / "no-such-bundle")])
