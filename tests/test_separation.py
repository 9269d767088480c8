"""The separator network, its objectives and chunked inference, on tiny random-init models."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from einops import rearrange

from encoders.codec import Codec, CodecConfig
from encoders.errors import PromptError, PromptsepError, SettingError, WeightsError
from separation.inference import InferenceConfig, Prompt, Separator, span_anchors
from separation.masking import carry_masks, floor_masks, prompt_masks
from separation.model import (
    SPAN_OFF,
    SPAN_ON,
    SPAN_UNKNOWN,
    SeparatorConfig,
    SeparatorModel,
    average_separators,
)
from separation.objectives import (
    Conditioning,
    flow_matching_loss,
    predict_sources,
    regression_loss,
    sample_flow,
)

EMBED = 32


class HashPromptEncoder:
    """A deterministic stand-in for the PE-AV towers: one random unit vector per prompt string."""

    embed_dim = EMBED

    @staticmethod
    def _vec(key: str, n: int = 1) -> torch.Tensor:
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        g = torch.Generator().manual_seed(seed)
        return torch.nn.functional.normalize(torch.randn(n, EMBED, generator=g), dim=-1)

    def embed_text(self, texts):
        return torch.cat([self._vec(t) for t in texts])

    def text_states(self, texts):
        states = torch.stack([self._vec(t + "#tokens", 5) for t in texts])
        return states, torch.ones(len(texts), 5, dtype=torch.bool)

    def embed_text_states(self, states, mask):
        return torch.nn.functional.normalize(states.mean(1), dim=-1)

    def embed_image(self, images):
        return torch.cat([self._vec(str(i)) for i in images])


def tiny_codec():
    torch.manual_seed(0)
    return Codec(CodecConfig(encoder_dim=4, latent_dim=8, decoder_dim=16, chunk_seconds=4.0, overlap_seconds=0.64)).eval()


def tiny_model(objective="regression"):
    torch.manual_seed(1)
    config = SeparatorConfig(
        latent_dim=8, cond_dim=EMBED, token_dim=EMBED, visual_dim=EMBED, hidden_dim=32, num_layers=2, num_heads=2,
        objective=objective,
    )
    model = SeparatorModel(config)
    # adaLN-zero starts as identity; perturb so tests exercise the conditioning paths
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def separator():
    return Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), InferenceConfig(chunk_seconds=2.0, overlap_seconds=0.5))


def test_model_shapes_and_determinism():
    model = tiny_model()
    mix = torch.randn(2, 25, 8)
    cond = Conditioning(cond=torch.randn(2, EMBED), tokens=torch.randn(2, 3, EMBED), token_mask=torch.ones(2, 3, dtype=torch.bool),
                        visual=torch.randn(2, 25, EMBED), spans=torch.ones(2, 25, dtype=torch.long))
    a = model(mix, **cond.as_kwargs())
    b = model(mix, **cond.as_kwargs())
    assert a.shape == (2, 25, 16) and torch.equal(a, b)
    other = model(mix, **{**cond.as_kwargs(), "cond": torch.randn(2, EMBED)})
    assert not torch.allclose(a, other)  # the prompt changes the output


def test_dropout_acts_in_training_only():
    model = tiny_model()
    mix = torch.randn(2, 25, 8)
    cond = Conditioning(cond=torch.randn(2, EMBED), tokens=torch.randn(2, 3, EMBED))
    clean = model(mix, **cond.as_kwargs())
    model.set_dropout(0.5)
    assert model.config.dropout == 0.5
    assert torch.equal(model(mix, **cond.as_kwargs()), clean)  # eval mode: dropout is off
    model.train()
    noisy_a, noisy_b = model(mix, **cond.as_kwargs()), model(mix, **cond.as_kwargs())
    assert not torch.allclose(noisy_a, clean) and not torch.allclose(noisy_a, noisy_b)
    with pytest.raises(ValueError, match="dropout must be in"):
        model.set_dropout(1.0)


def test_objectives_losses_and_flow_sampler():
    torch.manual_seed(0)
    mix, src = torch.randn(2, 10, 8), torch.randn(2, 10, 16)
    cond = Conditioning(cond=torch.randn(2, EMBED))
    loss, pred = regression_loss(tiny_model(), mix, src, cond)
    assert loss.item() > 0 and pred.shape == src.shape
    flow = tiny_model("flow")
    loss, x1 = flow_matching_loss(flow, mix, src, cond, generator=torch.Generator().manual_seed(0))
    assert loss.item() > 0 and x1.shape == src.shape
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = sample_flow(flow, mix, cond, steps=3, solver="euler", generator=g1)
    s2 = predict_sources(flow, mix, cond, steps=3, solver="euler", generator=g2)
    assert torch.equal(s1, s2)
    with pytest.raises(ValueError, match="unknown ODE solver"):
        sample_flow(flow, mix, cond, solver="rk99")


def test_a_few_steps_reduce_the_regression_loss():
    torch.manual_seed(0)
    model = tiny_model().train()
    mix, src = torch.randn(4, 12, 8), torch.randn(4, 12, 16)
    cond = Conditioning(cond=torch.randn(4, EMBED))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss, _ = regression_loss(model, mix, src, cond)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


def test_consistent_output_loss_trains_through_the_frozen_decoder():
    """-SI-SDR of the masked mixture: finite, in dB, reaches the separator only, and can be lowered."""
    from separation.train import consistent_output_loss

    torch.manual_seed(0)
    codec = tiny_codec().requires_grad_(False)
    model = tiny_model().train()
    frames = 10
    hop = codec.hop_length
    target = torch.sin(torch.arange(frames * hop) * 0.3)[None] * torch.linspace(0, 1, frames * hop)
    residual = 0.5 * torch.randn(1, frames * hop)
    waves = torch.stack([target + residual, target], dim=1).repeat(2, 1, 1)  # (B, 2, N)
    mix = torch.randn(2, frames, 8)
    cond = Conditioning(cond=torch.randn(2, EMBED))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    values = []
    for _ in range(15):
        _, estimate = regression_loss(model, mix, torch.zeros(2, frames, 16), cond)
        loss = consistent_output_loss(model, codec, estimate, waves)
        values.append(loss.item())
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in codec.parameters())
        opt.step()
    assert all(-100 < v < 100 for v in values)
    assert min(values[5:]) < values[0] - 0.1


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "sep", dtype=torch.float32)
    back = SeparatorModel.from_pretrained(tmp_path / "sep")
    mix = torch.randn(1, 7, 8)
    assert torch.allclose(model(mix, torch.ones(1, EMBED)), back(mix, torch.ones(1, EMBED)))
    (tmp_path / "sep" / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="model.safetensors is missing"):
        SeparatorModel.from_pretrained(tmp_path / "sep")


def test_average_separators_is_the_weight_mean_and_refuses_other_architectures(tmp_path):
    from app.cli import main

    first, second = tiny_model(), tiny_model()
    with torch.no_grad():
        for q in second.parameters():
            q.add_(0.1 * torch.randn_like(q))
    first.save_pretrained(tmp_path / "a", dtype=torch.float32)
    second.save_pretrained(tmp_path / "b", dtype=torch.float32)
    mean = average_separators([tmp_path / "a", tmp_path / "b"], [0.25, 0.75])
    key = "output_proj.weight"
    expected = 0.25 * first.state_dict()[key] + 0.75 * second.state_dict()[key]
    assert not torch.allclose(first.state_dict()[key], second.state_dict()[key])
    assert torch.allclose(mean.state_dict()[key], expected, atol=1e-6)
    assert main(["train", "average", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "avg")]) == 0
    halves = SeparatorModel.from_pretrained(tmp_path / "avg").state_dict()[key].float()
    assert torch.allclose(halves, (first.state_dict()[key] + second.state_dict()[key]) / 2, atol=1e-3)  # fp16 file
    other = SeparatorModel(
        SeparatorConfig(latent_dim=8, cond_dim=EMBED, token_dim=EMBED, visual_dim=EMBED, hidden_dim=32, num_layers=1, num_heads=2)
    )
    other.save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="another configuration"):
        average_separators([tmp_path / "a", tmp_path / "c"])


def test_span_anchors():
    anchors = span_anchors([(0.2, 0.4)], start_s=0.0, frames=25, frame_rate=25.0)
    assert anchors[5] == SPAN_ON and anchors[0] == SPAN_OFF and anchors[20] == SPAN_OFF
    assert (span_anchors(None, 0.0, 10, 25.0) == SPAN_UNKNOWN).all()
    shifted = span_anchors([(1.2, 1.4)], start_s=1.0, frames=25, frame_rate=25.0)
    assert torch.equal(anchors, shifted)


def test_masks_sum_to_at_most_one_and_carry():
    torch.manual_seed(0)
    masks = prompt_masks(torch.randn(3, 4000), torch.randn(3, 4000), 256, 64, 2.0)
    assert masks.min() >= 0 and masks.sum(0).max() <= 1 + 1e-5
    carried = carry_masks(masks, n_bins=400, n_frames=90)
    assert carried.shape == (3, 400, 90)
    assert torch.allclose(carried[:, 200], carried[:, 128])  # above the model's Nyquist: the top bin


def test_floored_masks_keep_the_floor_and_still_sum_to_at_most_one():
    torch.manual_seed(0)
    masks = prompt_masks(torch.randn(3, 4000), torch.randn(3, 4000), 256, 64, 1.0)
    masks[0, :, :5] = 0.0  # a prompt the separator silenced in a few frames
    floored = floor_masks(masks, 0.05)
    assert floored.min() >= 0.05 - 1e-6 and floored.sum(0).max() <= 1 + 1e-5
    assert torch.allclose(floored, 0.05 + 0.85 * masks)
    assert torch.equal(floor_masks(masks, 0.0), masks)
    assert torch.allclose(floor_masks(masks, 0.5), torch.full_like(masks, 1 / 3))  # capped at 1 / P


def test_mask_floor_keeps_a_silenced_target_audible(separator, monkeypatch):
    import separation.inference as inference

    torch.manual_seed(0)
    wav = 0.1 * torch.randn(1, 16000)
    monkeypatch.setattr(inference, "prompt_masks", lambda targets, *a: torch.zeros_like(prompt_masks(targets, *a)))
    energies = []
    for floor in (0.0, 0.1):
        config = InferenceConfig(chunk_seconds=2.0, overlap_seconds=0.5, mask_floor=floor)
        floored = Separator(separator.codec, separator.prompt_encoder, separator.model, config)
        result = floored.separate(wav, 16000, [Prompt(text="dog barking")])
        assert torch.allclose(result.targets.sum(0) + result.residual, wav, atol=1e-5)
        energies.append(float(result.targets.pow(2).sum() / wav.pow(2).sum()))
    assert energies[0] < 1e-8  # the separator silenced the target ...
    assert abs(energies[1] - 0.1**2) < 0.1**2 * 0.05  # ... and the floor keeps a tenth of the mixture's amplitude


@pytest.mark.parametrize("rate,channels,seconds", [(16000, 1, 3.0), (44100, 2, 2.3), (22050, 1, 0.7)])
def test_separate_keeps_rate_channels_length_and_sums_to_mixture(separator, rate, channels, seconds):
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(channels, int(rate * seconds))
    result = separator.separate(wav, rate, [Prompt(text="dog barking")])
    assert result.sample_rate == rate
    assert result.targets.shape == (1, channels, wav.shape[-1])
    assert result.residual.shape == wav.shape
    assert torch.allclose(result.targets.sum(0) + result.residual, wav, atol=1e-5)


def test_several_prompts_one_target_each(separator):
    wav = 0.1 * torch.randn(1, 16000)
    prompts = [Prompt(text="dog barking"), Prompt(text="piano"), Prompt(image="pic.png", spans=[(0.1, 0.5)])]
    result = separator.separate(wav, 16000, prompts)
    assert result.targets.shape == (3, 1, 16000)
    assert torch.allclose(result.targets.sum(0) + result.residual, wav, atol=1e-5)
    assert not torch.allclose(result.targets[0], result.targets[1])


def test_a_list_of_plain_texts_is_a_list_of_text_prompts(separator):
    """``separate(wav, rate, ["dog barking", "piano"])`` is the same run as with Prompt objects (it used to fail
    with an AttributeError); anything that is neither a text nor a Prompt is refused by name."""
    wav = 0.1 * torch.randn(1, 16000)
    texts = separator.separate(wav, 16000, ["dog barking", "piano"])
    objects = separator.separate(wav, 16000, [Prompt(text="dog barking"), Prompt(text="piano")])
    assert texts.targets.shape == (2, 1, 16000)
    assert torch.equal(texts.targets, objects.targets)
    assert [p.text for p in texts.prompts] == ["dog barking", "piano"]
    with pytest.raises(PromptError, match="a prompt is a text or a Prompt, got int"):
        separator.separate(wav, 16000, ["dog barking", 3])
    with pytest.raises(PromptError, match="needs text, an image or a video"):
        separator.separate(wav, 16000, ["dog barking", "  "])


def test_chunked_matches_unchunked_where_chunks_agree():
    """Chunking (8 chunks with 0.5 s cross-fades) stays close to one pass over the whole signal."""
    torch.manual_seed(0)
    codec, encoder, model = tiny_codec(), HashPromptEncoder(), tiny_model()
    t = torch.arange(16000 * 8) / 16000
    wav = (0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn_like(t))[None]
    whole = Separator(codec, encoder, model, InferenceConfig(chunk_seconds=10.0)).separate(wav, 16000, "tone")
    chunked = Separator(codec, encoder, model, InferenceConfig(chunk_seconds=1.5, overlap_seconds=0.5)).separate(wav, 16000, "tone")
    error = (whole.targets - chunked.targets).pow(2).mean() / whole.targets.pow(2).mean().clamp(min=1e-12)
    assert error < 0.1  # relative error energy below -10 dB


@pytest.mark.parametrize(
    "setting,value",
    [("chunk_seconds", 0.0), ("overlap_seconds", -0.5), ("batch_seconds", -1.0), ("steps", 0), ("mask_floor", 1.0),
     ("mask_floor", -0.1), ("shifts", 0), ("anchor_threshold", 1.5), ("phrasings", 0), ("splitter_weight", 1.2)],
)
def test_inference_config_refuses_settings_out_of_range(setting, value):
    """Every setting is checked in one place (the CLI names its flag instead of the field); the error is a
    PromptsepError, which the CLI prints in one line."""
    with pytest.raises(SettingError, match=rf"^{setting} {value}: expected ") as caught:
        InferenceConfig(**{setting: value})
    assert isinstance(caught.value, PromptsepError) and caught.value.name == setting
    config = InferenceConfig()
    setattr(config, setting, value)
    with pytest.raises(SettingError):
        config.validate()
    InferenceConfig(anchor_threshold=None, mask_floor=0.0, splitter_weight=1.0, overlap_seconds=0.0)  # edges are fine


def test_batch_seconds_sets_whole_chunks_and_leaves_the_output_alone():
    """A batch holds as many whole chunks as fit in batch_seconds; how chunks are batched does not change the output."""
    assert InferenceConfig(chunk_seconds=16.0, batch_seconds=32.0).chunks_per_batch == 2
    assert InferenceConfig(chunk_seconds=8.0, batch_seconds=32.0).chunks_per_batch == 4
    assert InferenceConfig(chunk_seconds=1.5, batch_seconds=4.0).chunks_per_batch == 2
    assert InferenceConfig(chunk_seconds=16.0, batch_seconds=5.0).chunks_per_batch == 1
    with pytest.raises(SettingError, match=r"batch_seconds 0.0: expected a positive number of seconds"):
        InferenceConfig(batch_seconds=0.0)
    torch.manual_seed(0)
    codec, encoder, model = tiny_codec(), HashPromptEncoder(), tiny_model()
    wav = 0.1 * torch.randn(1, 16000 * 6)
    outputs = [
        Separator(codec, encoder, model, InferenceConfig(chunk_seconds=1.5, overlap_seconds=0.5, batch_seconds=b))
        .separate(wav, 16000, "tone").targets
        for b in (1.5, 4.5, 60.0)  # 1, 3 and every chunk per batch
    ]
    for other in outputs[1:]:
        assert torch.allclose(outputs[0], other, atol=1e-5)


def test_candidates_and_bad_prompts(separator):
    wav = 0.1 * torch.randn(1, 8000)
    result = separator.separate(wav, 16000, "dog", candidates=3)
    assert result.candidates.shape == (1, 3, 1, 8000) and result.chosen == [0]
    with pytest.raises(PromptError, match="needs text, an image or a video"):
        Prompt(text="   ")
    with pytest.raises(PromptError, match="bad span"):
        Prompt(text="dog", spans=[(2.0, 1.0)])
    with pytest.raises(PromptError, match="at least one prompt"):
        separator.separate(wav, 16000, [])


def test_training_pool_reads_manifest_and_rephrases(tmp_path):
    """The latent pool encodes fixed manifest mixtures; conditioning draws a fresh paraphrase per use."""
    import random

    import numpy as np
    import soundfile as sf

    from separation.train import LatentPool, PromptCache, TrainConfig, _conditioning, manifest_mixtures

    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        for key in ("mix", "target", "residual"):
            (tmp_path / key).mkdir(exist_ok=True)
            sf.write(tmp_path / key / f"m{i}.wav", 0.1 * rng.standard_normal(6400).astype("float32"), 16000, subtype="FLOAT")
        lines.append(
            '{"id": "m%d", "audio": "mix/m%d.wav", "target": "target/m%d.wav", "residual": "residual/m%d.wav", '
            '"prompt": "dog barking", "category": "dog", "spans": [[0.0, 0.2]]}' % (i, i, i, i)
        )
    (tmp_path / "train.jsonl").write_text("\n".join(lines))
    fixed = manifest_mixtures(tmp_path / "train.jsonl", limit=2)
    assert len(fixed) == 2 and fixed[0].mixture.shape == (6400,) and fixed[0].category == "dog"
    codec = tiny_codec()
    pool = LatentPool(sampler=None, codec=codec, initial=fixed, size=2, rng=rng, device=torch.device("cpu"))
    assert [e.mixture.shape for e in pool.items] == [(10, 8), (10, 8)]
    assert pool.items[0].sources.shape == (10, 16)
    cache = PromptCache(HashPromptEncoder())
    cfg = TrainConfig(prompt_dropout=0.0, pooled_token_prob=0.0, span_prob=1.0)
    cond = _conditioning(pool.batch(8), cache, cfg, 10, 25.0, random.Random(0), rng, False, torch.device("cpu"))
    assert cond.cond.shape == (8, EMBED) and cond.spans.shape == (8, 10)
    assert (cond.spans[:, :5] == SPAN_ON).all() and (cond.spans[:, 6:] == SPAN_OFF).all()
    assert len(cache.text) > 1  # several phrasings of "dog" were used


def test_prompt_noise_displaces_text_prompts_by_at_most_its_size():
    """--prompt-noise moves each text embedding (and token) off its phrasing, by a relative size up to the limit:
    with 0.6, a cosine to the clean vector of at least about 1 / sqrt(1 + 0.36) = 0.86, and never exactly 1."""
    import random

    from separation.train import PromptCache, TrainConfig, _conditioning, _displaced

    rng = np.random.default_rng(0)
    x = torch.randn(500, 256)
    moved = _displaced(x, rng, 0.6)
    cos = torch.nn.functional.cosine_similarity(moved, x, dim=-1)
    assert moved.shape == x.shape and (cos < 0.9999).all() and cos.min() > 0.8
    assert torch.equal(_displaced(x, rng, 0.0), x)

    class _Item:  # what _conditioning reads of an example
        category, image, spans = "dog", None, None

    cache = PromptCache(HashPromptEncoder())
    for noise in (0.0, 0.6):
        cfg = TrainConfig(prompt_dropout=0.0, pooled_token_prob=0.0, prompt_noise=noise)
        cond = _conditioning([_Item()] * 16, cache, cfg, 10, 25.0, random.Random(0), rng, False, torch.device("cpu"))
        clean = torch.stack([embed for embed, _, _ in cache.text.values()])
        nearest = torch.nn.functional.cosine_similarity(cond.cond[:, None], clean[None], dim=-1).max(dim=1).values
        if noise == 0.0:
            assert torch.allclose(nearest, torch.ones(16), atol=1e-5)  # every row is a phrasing's own embedding
        else:
            assert (nearest < 0.9999).all() and nearest.min() > 0.8


def test_visual_prob_sets_the_share_of_picture_prompts():
    """--visual-prob: an example with a picture is prompted by it with that probability, otherwise by a phrasing;
    a picture prompt is one token (its embedding), and an example without a picture always gets text."""
    import random

    from separation.train import PromptCache, TrainConfig, _conditioning

    class _Pictured:
        category, image, spans = "dog", "dog.png", None

    class _Plain:
        category, image, spans = "dog", None, None

    cache = PromptCache(HashPromptEncoder())
    picture = cache.image_item("dog.png")
    rng = np.random.default_rng(0)
    for share in (0.0, 0.6, 1.0):
        cfg = TrainConfig(prompt_dropout=0.0, pooled_token_prob=0.0, visual_prob=share)
        cond = _conditioning([_Pictured()] * 400, cache, cfg, 10, 25.0, random.Random(1), rng, True, torch.device("cpu"))
        is_picture = torch.isclose(cond.cond, picture[None]).all(dim=1)
        assert abs(is_picture.float().mean().item() - share) < 0.06
        assert (cond.token_mask[is_picture].sum(dim=1) == 1).all()
    cond = _conditioning([_Plain()] * 50, cache, cfg, 10, 25.0, random.Random(1), rng, True, torch.device("cpu"))
    assert not torch.isclose(cond.cond, picture[None]).all(dim=1).any()


@pytest.mark.parametrize("n_prompts", [1, 2])
def test_separate_file_streams_the_same_output_as_in_memory(separator, tmp_path, n_prompts):
    """Streaming a file in small blocks writes what ``separate`` returns, and target + residual == mixture."""
    import soundfile as sf

    torch.manual_seed(0)
    rate = 22050
    wav = 0.1 * torch.randn(2, int(rate * 7.3))
    path = tmp_path / "mix.wav"
    sf.write(path, wav.T.numpy(), rate, subtype="FLOAT")
    prompts = [Prompt(text="dog barking"), Prompt(text="piano")][:n_prompts]
    written = separator.separate_file(path, prompts, tmp_path / "out", block_seconds=1.0)
    names = ["target.wav"] if n_prompts == 1 else ["target_1.wav", "target_2.wav"]
    assert [p.name for p in written] == names + ["residual.wav"]
    targets = torch.stack([torch.from_numpy(sf.read(tmp_path / "out" / n, dtype="float32")[0].T) for n in names])
    residual = torch.from_numpy(sf.read(tmp_path / "out" / "residual.wav", dtype="float32")[0].T)
    expected = separator.separate(wav, rate, prompts)
    assert targets.shape == expected.targets.shape
    torch.testing.assert_close(targets, expected.targets, atol=1e-5, rtol=0)
    torch.testing.assert_close(targets.sum(0) + residual, wav, atol=1e-5, rtol=0)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left
    # readable like any file the user creates (mkstemp alone would leave them 0600)
    mask = os.umask(0)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in written} == {0o666 & ~mask}


def test_candidate_shift_keeps_length_and_mixture_sum(separator):
    wav = 0.1 * torch.randn(1, 16000 * 5)
    result = separator.separate(wav, 16000, "dog barking", candidates=3)
    assert result.candidates.shape == (1, 3, 1, wav.shape[-1])
    assert not torch.allclose(result.candidates[0, 0], result.candidates[0, 1])
    assert torch.allclose(result.targets.sum(0) + result.residual, wav, atol=1e-5)


def test_separate_file_errors_leave_nothing_behind(separator, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(PromptsepError, match="bad.wav"):
        separator.separate_file(bad, "dog", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # a failure in the middle of the stream (NaN in the third second) removes the folders it made, keeps others
    import soundfile as sf

    wav = 0.1 * torch.randn(16000 * 4)
    wav[16000 * 2 + 5] = float("nan")
    sf.write(tmp_path / "nan.wav", wav.numpy(), 16000, subtype="FLOAT")
    (tmp_path / "kept").mkdir()
    with pytest.raises(PromptsepError, match="NaN"):
        separator.separate_file(tmp_path / "nan.wav", "dog", tmp_path / "kept" / "a" / "b", block_seconds=1.0)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


@pytest.mark.parametrize(("rate", "samples"), [(16000, 10), (16000, 300), (16000, 1023), (44100, 700), (8000, 3)])
def test_recordings_shorter_than_a_stft_window_separate(separator, rate, samples):
    """A few milliseconds of audio (under the mask's 1024-point STFT window) separate like any other recording:
    same length and channels, and target + residual == mixture."""
    wav = 0.1 * torch.randn(2, samples)
    result = separator.separate(wav, rate, "dog barking")
    assert result.targets.shape == (1, 2, samples) and result.residual.shape == (2, samples)
    assert torch.isfinite(result.targets).all()
    torch.testing.assert_close(result.targets.sum(0) + result.residual, wav, atol=1e-5, rtol=0)


def test_learning_rate_schedule_is_a_python_float_readable_on_resume(tmp_path):
    """Warm-up, cosine over the time budget across resumes, a plain float the optimizer state can be reloaded with."""
    import numpy as np

    from separation.train import TrainConfig, learning_rate

    cfg = TrainConfig(lr=1e-3, warmup=10, steps=1000, minutes=60.0)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 9, 0.0) == pytest.approx(1e-3, rel=1e-3)
    assert learning_rate(cfg, 20, 30.0) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))  # half the time budget
    assert learning_rate(cfg, 20, 90.0) == pytest.approx(5e-5)  # budget spent: the floor
    cfg_np = TrainConfig(lr=np.float64(1e-3), warmup=10, steps=1000)
    rate = learning_rate(cfg_np, 500, 0.0)
    assert type(rate) is float
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rate)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    state = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    assert state["param_groups"][0]["lr"] == pytest.approx(rate)


@pytest.mark.parametrize("plain", [False, True])
def test_quiet_and_loud_recordings_separate_alike(plain):
    """The model hears every chunk at the same level, so scaling the input scales the outputs and nothing else."""
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(1, 16000 * 2)
    config = InferenceConfig(chunk_seconds=1.0, overlap_seconds=0.25, mixture_consistent=not plain)
    separator = Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), config)
    reference = separator.separate(wav, 16000, "dog barking").targets
    for gain in (0.002, 0.05, 5.0):  # -74, -46 and -6 dBFS; a raise above max_input_gain_db (60 dB) is capped
        scaled = separator.separate(wav * gain, 16000, "dog barking").targets
        torch.testing.assert_close(scaled / gain, reference, atol=1e-5, rtol=1e-3)
    as_recorded = Separator(tiny_codec(), HashPromptEncoder(), tiny_model(), InferenceConfig(input_level_db=None))
    quiet = as_recorded.separate(wav * 0.01, 16000, "dog barking").targets / 0.01
    assert not torch.allclose(quiet, as_recorded.separate(wav, 16000, "dog barking").targets, atol=1e-4)


def test_shard_targets_cut_each_target_to_its_sounding_frames(tmp_path):
    from separation.train import _Example, save_examples, shard_targets

    hop, frames, dim = 4, 10, 3
    target_wave = torch.zeros(frames * hop)
    target_wave[3 * hop : 7 * hop] = 0.5  # sounds in frames 3..6
    sources = torch.arange(frames * 2 * dim, dtype=torch.float32).reshape(frames, 2 * dim)
    sounding = _Example(torch.zeros(frames, dim), sources, "dog", None, [], torch.stack([target_wave, target_wave]).half())
    silent = _Example(torch.zeros(frames, dim), sources, "cat", None, [], torch.zeros(2, frames * hop).half())
    save_examples(tmp_path / "shard-1-00000.pt", [sounding, silent, sounding])
    pairs = shard_targets(tmp_path, hop)
    assert [name for _, name in pairs] == ["dog", "dog"]  # the silent target is left out
    latents, _ = pairs[0]
    assert latents.dtype == torch.float16 and torch.equal(latents.float(), sources[3:7, :dim].T)
    assert len(shard_targets(tmp_path, hop, limit=1)) == 1


def _tone_library(folder) -> None:
    """A three-category data-engine library of one-second tones (train split), enough to draw mixtures."""
    import soundfile as sf

    rows = []
    for k, name in enumerate(["dog", "piano", "bird"]):
        for i in range(2):
            path = folder / f"{name}{i}.wav"
            t = np.arange(16000) / 16000
            sf.write(path, 0.3 * np.sin(2 * np.pi * (200.0 * (k + 1) + 50 * i) * t), 16000)
            rows.append({"id": f"{name}{i}", "audio": path.name, "category": name, "group": "test", "captions": [name],
                         "visual_caption": name, "av_caption": name, "image": None, "split": "train",
                         "source": "test", "duration": 1.0})
    (folder / "library.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_train_separator_starts_from_a_saved_separator_with_init(tmp_path):
    from safetensors.torch import load_file

    from separation.train import TrainConfig, train_separator

    _tone_library(tmp_path)
    base = dict(data=str(tmp_path), batch=2, seconds=1.0, pool=4, refresh_every=0, hidden_dim=32, num_layers=1,
                warmup=1, save_every=100, threads=1, wave_items=2, wave_frames=10)
    first = train_separator(TrainConfig(out=str(tmp_path / "a"), steps=2, **base))
    state = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and len(state["losses"]) == 2 and np.isfinite(state["losses"]).all()
    # --init takes the weights and latent statistics; with a zero learning rate they come back unchanged
    second = train_separator(TrainConfig(out=str(tmp_path / "b"), steps=1, lr=0.0, init=str(first), dropout=0.1, **base))
    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((second / "config.json").read_text())["dropout"] == 0.1  # --dropout reaches an --init model
    with pytest.raises(WeightsError, match="cannot start a flow run"):
        train_separator(TrainConfig(out=str(tmp_path / "c"), steps=1, objective="flow", init=str(first), **base))
    # --peav: the named towers condition the run (a missing folder is an error, not a silent fall-back)
    with pytest.raises(WeightsError, match="missing"):
        train_separator(TrainConfig(out=str(tmp_path / "c"), steps=1, init=str(first), peav=str(tmp_path / "no_peav"), **base))
    # --decoder-lr: the decoder trains with the separator and is written to OUT/codec; the encoder does not move
    from encoders.codec import load_default_codec

    codec = load_default_codec()
    joint = dict(base, decoder_lr=1e-3)
    train_separator(TrainConfig(out=str(tmp_path / "d"), steps=2, init=str(first), **joint))
    tuned = load_file(str(tmp_path / "d" / "codec" / "model.safetensors"))
    own = codec.state_dict()
    assert all(torch.equal(own[k].half(), tuned[k]) for k in own if k.startswith("encoder."))
    assert any(not torch.allclose(own[k].half(), tuned[k]) for k in own if k.startswith("decoder."))
    train_separator(TrainConfig(out=str(tmp_path / "d"), steps=3, init=str(first), **joint), resume=True)
    assert json.loads((tmp_path / "d" / "checkpoint" / "state.json").read_text())["step"] == 3


def test_decoder_fine_tune_trains_only_the_decoder_and_raises_the_masked_sisdr(tmp_path):
    """train decoder: encoder tensors stay bit-identical, decoder tensors move, the oracle-mask SI-SDR rises
    (a tone under noise; the target and residual latents are two fixed codes the decoder has to tell apart)."""
    from separation.decoder_tune import DecoderTuneConfig, decoder_parameters, oracle_mask_loss, tune_decoder
    from separation.train import _Example, save_examples

    torch.manual_seed(0)
    codec = tiny_codec()
    codec.save_pretrained(tmp_path / "codec0")
    hop, frames, dim = codec.hop_length, 12, codec.latent_dim
    t = torch.arange(frames * hop) / codec.sample_rate
    codes = torch.randn(2, dim)
    sources = torch.cat([codes[0].expand(frames, dim), codes[1].expand(frames, dim)], -1)
    examples = []
    for _ in range(4):
        target, residual = 0.3 * torch.sin(2 * torch.pi * 440 * t), 0.2 * torch.randn(frames * hop)
        examples.append(_Example(torch.zeros(frames, dim), sources, "tone", None, [], torch.stack([target + residual, target]).half()))
    (tmp_path / "feed").mkdir()
    save_examples(tmp_path / "feed" / "shard-1-00000.pt", examples)
    batch_sources = torch.stack([e.sources for e in examples])
    batch_waves = torch.stack([e.waves for e in examples]).float()
    with torch.no_grad():
        before = oracle_mask_loss(codec, batch_sources, batch_waves)["sisdr"].item()

    cfg = DecoderTuneConfig(codec=str(tmp_path / "codec0"), feeds=[str(tmp_path / "feed")], out=str(tmp_path / "run"),
                            steps=30, batch=4, frames=8, lr=3e-3, warmup=1, mel_weight=0.01, save_every=10)
    tuned = Codec.from_pretrained(tune_decoder(cfg)).float()
    with torch.no_grad():
        after = oracle_mask_loss(tuned, batch_sources, batch_waves)["sisdr"].item()
    assert after > before + 5.0
    own, new = codec.state_dict(), tuned.state_dict()
    trained = [n for n, _ in tuned.named_parameters() if n.startswith(("quantizer.out_proj.", "decoder."))]
    assert trained and len(decoder_parameters(tuned)) == len(trained)
    for name in own:
        if name.startswith(("encoder.", "quantizer.in_proj.")):
            assert torch.equal(own[name].half(), new[name].half()), name  # the latents do not change
    assert any(not torch.allclose(own[n].float(), new[n].float(), atol=1e-3) for n in trained)
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 30

    with pytest.raises(PromptsepError, match="separator-pool"):
        tune_decoder(DecoderTuneConfig(codec=str(tmp_path / "codec0"), feeds=[str(tmp_path)], out=str(tmp_path / "x"), steps=1))
    assert not (tmp_path / "x").exists()  # nothing written for a bad feed


def test_train_separator_ema_is_the_running_average_and_survives_a_resume(tmp_path):
    from safetensors.torch import load_file

    from separation.train import TrainConfig, train_separator

    _tone_library(tmp_path)
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), steps=1, batch=2, seconds=1.0, pool=4, refresh_every=0,
                      hidden_dim=32, num_layers=1, warmup=1, save_every=100, threads=1, wave_items=2, wave_frames=10, ema=0.5)
    ckpt = tmp_path / "run" / "checkpoint"
    train_separator(cfg)
    raw1, ema1 = (load_file(str(folder / "model.safetensors")) for folder in (ckpt, ckpt / "ema"))
    assert all(torch.equal(ema1[k], raw1[k]) for k in raw1)  # the first update copies the weights
    cfg.steps = 2
    final = load_file(str(train_separator(cfg, resume=True) / "model.safetensors"))
    raw2, ema2 = (load_file(str(folder / "model.safetensors")) for folder in (ckpt, ckpt / "ema"))
    moved = [k for k in raw2 if not torch.equal(raw1[k], raw2[k])]
    assert moved  # the second step changed weights, and the average sits halfway (decay 0.5)
    for k in moved:
        torch.testing.assert_close(ema2[k], 0.5 * (raw1[k] + raw2[k]))
        torch.testing.assert_close(final[k].float(), ema2[k], atol=1e-3, rtol=1e-3)  # final: the average, shipped fp16


class FrameCodec(torch.nn.Module):
    """A lossless stand-in codec: each latent frame is the hop's samples themselves."""

    sample_rate, hop_length = 16000, 8
    frame_rate = sample_rate / hop_length

    def encode(self, wav):
        return rearrange(wav, "b 1 (t h) -> b h t", h=self.hop_length)

    def decode(self, latents, length=None):
        return rearrange(latents, "b h t -> b 1 (t h)")[..., :length]


class PassThroughModel(torch.nn.Module):
    """A separator stand-in whose latents pass unchanged (with ``predict_sources`` patched to copy them)."""

    config = SeparatorConfig(latent_dim=8, cond_dim=EMBED, token_dim=EMBED, visual_dim=EMBED)

    def normalize(self, latents):
        return latents

    def denormalize(self, latents):
        return latents


def test_shifted_passes_are_realigned_before_they_are_combined(monkeypatch):
    import separation.inference as inference

    # target = the mixture's own latents, residual = silence: every shifted pass decodes to the chunk itself,
    # so the averaged output is the mixture exactly only if each pass's delay is undone to the sample.
    monkeypatch.setattr(
        inference, "predict_sources", lambda model, mixture, cond, **kw: torch.cat([mixture, 0 * mixture], -1)
    )
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(1, 5 * 1603)
    config = InferenceConfig(chunk_seconds=0.2, overlap_seconds=0.05, mixture_consistent=False, shifts=3, phrasings=1)
    separator = Separator(FrameCodec(), HashPromptEncoder(), PassThroughModel(), config)
    assert separator._shift_delays() == [0, 3, 5]
    chunks = 0.1 * torch.randn(2, 64)
    targets, residuals = separator._separate_chunks(chunks, [0.0, 1.0], [Prompt(text="x")], separator.condition([Prompt(text="x")]), torch.Generator())
    assert targets.shape == residuals.shape == (2, 3, 1, 64)  # (chunks, shifts, prompts, samples)
    torch.testing.assert_close(targets, chunks[:, None, None].expand(-1, 3, 1, -1))
    result = separator.separate(wav, 16000, "x")
    torch.testing.assert_close(result.targets[0], wav, atol=1e-6, rtol=0)


def test_shifts_average_the_masks_of_shifted_passes(separator):
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(2, 44100)
    outputs = {}
    for shifts in (1, 2):
        config = InferenceConfig(chunk_seconds=2.0, overlap_seconds=0.5, shifts=shifts)
        shifted = Separator(separator.codec, separator.prompt_encoder, separator.model, config)
        result = shifted.separate(wav, 44100, [Prompt(text="dog barking"), Prompt(text="piano")])
        assert result.targets.shape == (2, 2, 44100)
        assert torch.allclose(result.targets.sum(0) + result.residual, wav, atol=1e-5)
        outputs[shifts] = result.targets
    change = (outputs[2] - outputs[1]).pow(2).sum() / outputs[1].pow(2).sum()
    assert 1e-6 < change < 0.5  # another estimate of the same masks, not the same one and not a different sound
    with pytest.raises(SettingError, match="shifts 0"):
        InferenceConfig(shifts=0)
    changed = InferenceConfig()
    changed.shifts = 0  # changed after construction: the run refuses it in the same words, before any work
    with pytest.raises(SettingError, match="shifts 0: expected a whole number of passes, at least 1"):
        Separator(separator.codec, separator.prompt_encoder, separator.model, changed).separate(wav, 44100, "dog")


def test_spliced_examples_silence_the_target_where_another_mixture_takes_over():
    from separation.train import _Example, spliced

    frames, dim, hop = 10, 3, 4
    target, residual = torch.full((frames, dim), 2.0), torch.full((frames, dim), 3.0)
    example = _Example(torch.ones(frames, dim), torch.cat([target, residual], -1), "dog", None, [[0.0, 0.2]],
                       torch.ones(2, frames * hop, dtype=torch.float16))
    other = _Example(torch.full((frames, dim), 5.0), torch.zeros(frames, 2 * dim), "rain", None, [],
                     torch.full((2, frames * hop), 7.0, dtype=torch.float16))
    silence = torch.full((frames, dim), -1.0)
    late = spliced(example, other, 4, True, silence, hop)  # the dog for 4 frames, then rain alone
    assert late.mixture[:, 0].tolist() == [1.0] * 4 + [5.0] * 6
    assert late.sources[:, 0].tolist() == [2.0] * 4 + [-1.0] * 6  # target: the dog, then silence
    assert late.sources[:, dim].tolist() == [3.0] * 4 + [5.0] * 6  # residual: the rain mixture is all residual
    assert late.waves[0, ::hop].tolist() == [1.0] * 4 + [7.0] * 6 and late.waves[1, ::hop].tolist() == [1.0] * 4 + [0.0] * 6
    assert late.spans == [] and late.category == "dog" and example.mixture.eq(1.0).all()  # the pool item is untouched
    early = spliced(example, other, 4, False, silence, hop)  # rain alone for 4 frames, then the dog
    assert early.sources[:, 0].tolist() == [-1.0] * 4 + [2.0] * 6
    assert early.waves[1, ::hop].tolist() == [0.0] * 4 + [1.0] * 6


def test_output_folders_keep_inputs_apart(tmp_path, capsys):
    """Inputs whose names collide get folders that keep them apart (never one output overwriting another); a file
    given twice, or a manifest whose ids repeat, is refused before any model loads."""
    from app.cli import main
    from encoders.files import distinct_stems as output_folders

    a, b = tmp_path / "a", tmp_path / "b"
    assert output_folders([a / "x.wav", a / "y.wav"]) == ["x", "y"]
    assert output_folders([a / "x.wav", b / "x.wav"]) == ["a_x", "b_x"]
    assert output_folders([a / "x.wav", a / "x.mp3", b / "x.wav"]) == ["a_x_wav", "a_x_mp3", "b_x_wav"]
    with pytest.raises(PromptsepError, match="given twice"):
        output_folders([a / "x.wav", a / "x.wav"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "one", "audio": "x.wav", "prompt": "dog"}\n\n{"id": "one", "audio": "y.wav", "prompt": "cat"}\n')
    assert main(["separate", "--manifest", str(manifest), "--out", str(tmp_path / "out")]) == 2
    assert "m.jsonl:3: id 'one' repeats line 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("wav", "message"),
    [
        (torch.full((1, 16000), float("nan")), "NaN or Inf"),
        (torch.tensor([[0.0, float("inf")] * 8000]), "NaN or Inf"),
        (torch.zeros(1, 1, 16000), r"\(N,\) or \(C, N\)"),
        (torch.zeros(2, 0), "with samples"),
    ],
)
def test_separate_refuses_waveforms_it_cannot_separate(separator, wav, message):
    """NaN or Inf samples, a batch axis or no samples at all raise a one-line AudioError, not NaN output or a
    convolution's error deep inside the codec."""
    from encoders.errors import AudioError

    with pytest.raises(AudioError, match=message):
        separator.separate(wav, 16000, "dog barking")
