"""The mask refiner: identity at start, level invariance, persistence, its data writer, training and inference."""

import json
from dataclasses import replace

import pytest
import torch
from test_separation import HashPromptEncoder, _tone_library, tiny_codec, tiny_model

from encoders.errors import WeightsError
from separation.inference import InferenceConfig, Prompt, Separator
from separation.masking import prompt_masks
from separation.refiner import MaskRefiner, RefinerConfig
from separation.refiner_train import (
    RefinerTrainConfig,
    evaluate,
    load_refiner_shards,
    train_refiner,
    write_refiner_shards,
)

SMALL = RefinerConfig(channels=32, layers=2)


def _perturbed(config: RefinerConfig = SMALL, seed: int = 0) -> MaskRefiner:
    torch.manual_seed(seed)
    refiner = MaskRefiner(config)
    with torch.no_grad():
        refiner.output.weight.normal_(0, 0.05)
    return refiner.eval()


def _toy_items(count: int, seed: int) -> torch.Tensor:
    """``(count, 4, N)``: mixtures of a tone target and a noise residual, with estimates that leak into each other."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(16000) / 16000
    freqs = 200 + 1800 * torch.rand(count, 1, generator=g)
    target = 0.2 * torch.sin(2 * torch.pi * freqs * t)
    residual = 0.1 * torch.randn(count, 16000, generator=g)
    t_est, r_est = target + 0.6 * residual, residual + 0.6 * target
    return torch.stack([target + residual, target, t_est, r_est], dim=1).half()


def _toy_shards(folder, rate: int | None = None) -> None:
    """``folder/train`` and ``folder/val``: one shard of 32 toy items each (recording ``rate`` when given)."""
    for name, seed in (("train", 0), ("val", 1)):
        (folder / name).mkdir()
        extra = {"rate": rate} if rate else {}
        items = [{"waves": w, "category": "tone", **extra} for w in _toy_items(32, seed)]
        torch.save(items, folder / name / "refine-x-0-00000.pt")


def test_an_untrained_refiner_is_the_plain_ratio_mask():
    torch.manual_seed(0)
    mixture, targets, residuals = torch.randn(3, 2, 8000)
    refined = MaskRefiner(SMALL).masks(mixture, targets, residuals)
    plain = torch.cat([prompt_masks(targets[i : i + 1], residuals[i : i + 1], 512, 128, 1.0) for i in range(2)])
    assert refined.shape == plain.shape == (2, 257, 63)
    assert (refined - plain).abs().max() < 2e-4  # the first mask is clamped to [1e-4, 1 - 1e-4] before its logit


def test_refined_masks_ignore_the_level_and_stay_in_range():
    refiner = _perturbed()
    torch.manual_seed(1)
    mixture, targets, residuals = 0.1 * torch.randn(3, 2, 8000)
    masks = refiner.masks(mixture, targets, residuals)
    assert 0 < masks.min() and masks.max() < 1
    assert (masks - MaskRefiner(SMALL).masks(mixture, targets, residuals)).abs().max() > 1e-2  # it does change them
    louder = refiner.masks(30 * mixture, 30 * targets, 30 * residuals)
    torch.testing.assert_close(louder, masks, atol=1e-4, rtol=1e-3)


def test_save_and_load_round_trip(tmp_path):
    refiner = _perturbed()
    refiner.save_pretrained(tmp_path / "r")
    loaded = MaskRefiner.from_pretrained(tmp_path / "r")
    assert loaded.config == SMALL
    x = 0.1 * torch.randn(3, 1, 4000)
    torch.testing.assert_close(loaded.masks(*x), refiner.half().float().masks(*x), atol=1e-4, rtol=1e-3)
    (tmp_path / "r" / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="model.safetensors is missing"):
        MaskRefiner.from_pretrained(tmp_path / "r")


def test_training_on_leaky_estimates_beats_the_plain_mask(tmp_path):
    _toy_shards(tmp_path)
    cfg = RefinerTrainConfig(
        shards=(str(tmp_path / "train"),), val=str(tmp_path / "val"), out=str(tmp_path / "run"), steps=40, batch=4,
        lr=3e-3, warmup=1, channels=32, layers=1, eval_every=20, save_every=20, reload_every=0,
    )
    final = train_refiner(cfg)
    scores = evaluate(MaskRefiner.from_pretrained(final), load_refiner_shards([tmp_path / "val"])[0])
    assert scores["refined_mean"] > scores["plain_mean"] + 1.0, scores
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [20, 40] and "refined_median" in log[-1]
    train_refiner(RefinerTrainConfig(**{**cfg.__dict__, "steps": 45}), resume=True)
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 45


def test_refiner_shards_hold_the_separators_estimates(tmp_path):
    _tone_library(tmp_path)
    count = write_refiner_shards(str(tmp_path), tmp_path / "shards", shards=1, shard_size=2, seconds=1.0)
    waves, categories, rate = load_refiner_shards([tmp_path / "shards"])
    assert count == 1 and waves.shape == (2, 4, 16000) and waves.dtype == torch.float16
    assert rate == 16000 and all(item["rate"] == 16000 for item in torch.load(next((tmp_path / "shards").iterdir())))
    assert set(categories) <= {"dog", "piano", "bird"}
    assert torch.isfinite(waves).all() and (waves[:, 2:].float().abs().amax(-1) > 0).all()
    with pytest.raises(FileNotFoundError, match="no refiner shards"):
        load_refiner_shards([tmp_path])


def test_a_separator_with_an_identity_refiner_matches_one_without():
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(2, 44100)
    config = InferenceConfig(chunk_seconds=0.5, overlap_seconds=0.1)
    plain = Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), config)
    refined = Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), config, refiner=MaskRefiner(SMALL))
    prompts = [Prompt(text="dog barking"), Prompt(text="piano")]
    a, b = plain.separate(wav, 44100, prompts), refined.separate(wav, 44100, prompts)
    torch.testing.assert_close(b.targets, a.targets, atol=2e-4, rtol=1e-3)
    trained = Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), config, refiner=_perturbed())
    c = trained.separate(wav, 44100, prompts)
    assert c.targets.shape == (2, 2, 44100) and not torch.allclose(c.targets, a.targets, atol=1e-3)
    torch.testing.assert_close(c.targets.sum(0) + c.residual, wav, atol=1e-5, rtol=0)
    off = Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), InferenceConfig(0.5, 0.1, refine=False), refiner=_perturbed())
    torch.testing.assert_close(off.separate(wav, 44100, prompts).targets, a.targets)


def test_benchmark_pairs_each_system_with_its_unrefined_twin():
    from benchmarks.separation import paired_tables

    records = [{"system": s, "id": i, "si_sdri": v} for s, vals in
               (("promptsep_text", [3.0, 2.0, 5.0, 1.0]), ("promptsep_text_unrefined", [2.0, 2.5, 3.0, 1.0]),
                ("convtasnet", [9.0, 9.0, 9.0, 9.0])) for i, v in enumerate(vals)]
    paired = paired_tables(records)
    assert list(paired) == ["promptsep_text"]
    d = paired["promptsep_text"]
    assert d["mean"] == pytest.approx(0.625) and d["n"] == 4 and d["wins"] == pytest.approx(0.5)
    assert d["low"] <= d["mean"] <= d["high"]


def test_a_prompt_conditioned_refiner_starts_unconditioned_and_then_reads_the_prompt():
    config = RefinerConfig(channels=32, layers=2, cond_dim=32)  # the size of HashPromptEncoder's embeddings
    refiner = _perturbed(config)
    torch.manual_seed(2)
    x, cond = 0.1 * torch.randn(3, 2, 8000), torch.randn(2, 32)
    torch.testing.assert_close(refiner.masks(*x, cond), refiner.masks(*x))  # FiLM starts at zero
    with torch.no_grad():
        for block in refiner.blocks:
            block.film.weight.normal_(0, 0.5)
    assert (refiner.masks(*x, cond) - refiner.masks(*x, -cond)).abs().max() > 1e-3
    separator = Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), InferenceConfig(0.5, 0.1), refiner=refiner)
    wav = 0.1 * torch.randn(1, 16000)
    dog, piano = (separator.separate(wav, 16000, p).targets for p in ("dog barking", "piano"))
    plain = Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), InferenceConfig(0.5, 0.1, refine=False))
    assert dog.shape == piano.shape == (1, 1, 16000)
    assert not torch.allclose(dog, plain.separate(wav, 16000, "dog barking").targets, atol=1e-4)


def test_separator_training_can_score_the_refined_mask(tmp_path):
    from separation.train import TrainConfig, masked_target_sisdr, train_separator

    torch.manual_seed(0)
    waves, decoded = 0.1 * torch.randn(2, 2, 8000), 0.1 * torch.randn(4, 8000)
    plain = masked_target_sisdr(decoded, waves)
    torch.testing.assert_close(masked_target_sisdr(decoded, waves, MaskRefiner(SMALL)), plain, atol=1e-2, rtol=0)
    assert (masked_target_sisdr(decoded, waves, _perturbed()) - plain).abs().max() > 1e-2
    _tone_library(tmp_path)
    _perturbed().save_pretrained(tmp_path / "refiner", dtype=torch.float32)
    base = dict(data=str(tmp_path), batch=2, seconds=1.0, pool=4, refresh_every=0, hidden_dim=32, num_layers=1,
                warmup=1, save_every=100, threads=1, wave_items=2, wave_frames=10, wave_weight=1.0)
    train_separator(TrainConfig(out=str(tmp_path / "run"), steps=2, refiner=str(tmp_path / "refiner"), **base))
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["train"]["refiner"] == str(tmp_path / "refiner")
    assert all(abs(v) < 1e4 for v in state["losses"])  # finite: the refined mask's SI-SDR trained the separator


TWO_BRANCH = RefinerConfig(channels=32, layers=2, tf_channels=8, tf_layers=2)


def test_a_trained_refiner_starts_a_two_branch_one_unchanged(tmp_path):
    _perturbed().save_pretrained(tmp_path / "bins", dtype=torch.float32)
    two = MaskRefiner(TWO_BRANCH).init_from(MaskRefiner.from_pretrained(tmp_path / "bins")).eval()
    torch.manual_seed(3)
    x = 0.1 * torch.randn(3, 2, 8000)
    torch.testing.assert_close(two.masks(*x), _perturbed().masks(*x))  # the new branch's output starts at zero
    with torch.no_grad():
        two.tf.output.weight.normal_(0, 0.5)
    masks = two.masks(*x)
    assert masks.shape == (2, 257, 63) and 0 < masks.min() and masks.max() < 1
    assert (masks - _perturbed().masks(*x)).abs().max() > 1e-2
    torch.testing.assert_close(two.masks(*(30 * x)), masks, atol=1e-4, rtol=1e-3)  # still level-invariant
    with pytest.raises(WeightsError, match="cannot start"):
        MaskRefiner(RefinerConfig(channels=16, layers=2, tf_channels=8)).init_from(_perturbed())


def test_frequency_dilated_blocks_grow_on_a_two_branch_refiner_unchanged(tmp_path):
    """Blocks dilated along frequency start as the identity, so a trained two-branch refiner grows them and computes
    the same masks; once trained they see farther along frequency; a refiner cannot lose them."""
    torch.manual_seed(4)
    start = MaskRefiner(TWO_BRANCH)
    with torch.no_grad():
        start.tf.output.weight.normal_(0, 0.5)  # a "trained" branch whose output is not zero
    start.save_pretrained(tmp_path / "two", dtype=torch.float32)
    grown = MaskRefiner(replace(TWO_BRANCH, tf_freq_layers=2)).init_from(MaskRefiner.from_pretrained(tmp_path / "two")).eval()
    assert [b.conv.dilation for b in grown.tf.blocks] == [(1, 1), (1, 2), (2, 1), (4, 1)]
    x = 0.1 * torch.randn(3, 2, 8000)
    torch.testing.assert_close(grown.masks(*x), start.eval().masks(*x))  # the new blocks start as the identity
    with torch.no_grad():
        for block in grown.tf.blocks[2:]:
            block.mix.weight.normal_(0, 0.5)
    assert (grown.masks(*x) - start.masks(*x)).abs().max() > 1e-3
    # the branch's view along frequency: a change at one point of its features reaches farther once grown
    features = torch.randn(1, 4, 257, 40)
    poked = features.clone()
    poked[0, :, 128, 20] += 1.0
    with torch.no_grad():
        reach = [((m.tf(poked) - m.tf(features)).abs()[0, :, 20] > 1e-6).nonzero().flatten() for m in (start, grown)]
    assert (reach[0].min(), reach[0].max()) == (128 - 3, 128 + 3)  # input conv and two time-dilated blocks: 3 bins
    assert (reach[1].min(), reach[1].max()) == (128 - 9, 128 + 9)  # plus frequency dilations 2 and 4
    with pytest.raises(WeightsError, match="cannot start"):
        MaskRefiner(TWO_BRANCH).init_from(grown)


def test_training_a_time_frequency_branch_from_a_trained_refiner(tmp_path):
    _toy_shards(tmp_path)
    _perturbed().save_pretrained(tmp_path / "start", dtype=torch.float32)
    cfg = RefinerTrainConfig(
        shards=(str(tmp_path / "train"),), val=str(tmp_path / "val"), out=str(tmp_path / "run"), steps=30, batch=4,
        lr=3e-3, warmup=1, tf_channels=8, tf_layers=2, init=str(tmp_path / "start"), crop_seconds=0.5,
        eval_every=30, save_every=30, reload_every=0,
    )
    final = MaskRefiner.from_pretrained(train_refiner(cfg))
    assert final.config == RefinerConfig(channels=32, layers=2, tf_channels=8, tf_layers=2)  # the start's width
    val = load_refiner_shards([tmp_path / "val"])[0]
    assert evaluate(final, val)["refined_mean"] > evaluate(_perturbed(), val)["refined_mean"] + 0.5
    with pytest.raises(WeightsError, match="is missing"):
        train_refiner(RefinerTrainConfig(**{**cfg.__dict__, "init": str(tmp_path / "nowhere"), "out": str(tmp_path / "bad")}))
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_the_shards_sample_rate_sets_the_crop_and_the_refiners_rate(tmp_path, monkeypatch):
    """Shards record their rate: a new refiner takes it, crops are seconds at that rate, and a mismatch with a start
    refiner, between shard folders or between refiner and codec is an error."""
    import separation.refiner_train as rt
    from encoders.errors import PromptsepError

    _toy_shards(tmp_path, rate=8000)
    lengths = []
    scored = rt.refined_sisdr
    monkeypatch.setattr(rt, "refined_sisdr", lambda r, batch, cond=None: lengths.append(batch.shape[-1]) or scored(r, batch, cond))
    cfg = RefinerTrainConfig(
        shards=(str(tmp_path / "train"),), out=str(tmp_path / "run"), steps=2, batch=2, warmup=1, channels=8, layers=1,
        crop_seconds=0.5, reload_every=0,
    )
    final = train_refiner(cfg)
    assert lengths == [4000, 4000]  # 0.5 s at the shards' 8 kHz, not at 16 kHz
    assert MaskRefiner.from_pretrained(final).config.sample_rate == 8000
    MaskRefiner(SMALL).save_pretrained(tmp_path / "r16k")  # a 16 kHz refiner cannot start on 8 kHz shards
    with pytest.raises(WeightsError, match="trained at 16000 Hz, the shards are at 8000 Hz"):
        train_refiner(RefinerTrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "run2"), "init": str(tmp_path / "r16k")}))
    assert not (tmp_path / "run2").exists()
    (tmp_path / "old").mkdir()  # shards from before rates were recorded are the default codec's 16 kHz
    torch.save([{"waves": w, "category": "tone"} for w in _toy_items(2, 3)], tmp_path / "old" / "refine-x-0-00000.pt")
    assert load_refiner_shards([tmp_path / "old"])[2] == 16000
    with pytest.raises(PromptsepError, match=r"different sample rates \[8000, 16000\]"):
        load_refiner_shards([tmp_path / "train", tmp_path / "old"])
    with pytest.raises(WeightsError, match="refiner was trained at 8000 Hz, the codec runs at 16000 Hz"):
        Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), refiner=MaskRefiner.from_pretrained(final))
