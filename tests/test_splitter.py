"""The splitter (separation.splitter): a class-agnostic two-output ConvTasNet whose masks are joined with promptsep's."""

import shutil

import pytest
import torch
from test_separation import HashPromptEncoder, tiny_codec, tiny_model

from encoders.errors import WeightsError
from separation.baselines import build_baseline, save_baseline
from separation.inference import InferenceConfig, Prompt, Separator
from separation.splitter import Splitter, fuse_masks

SMALL = {"n_blocks": 2, "n_repeats": 1, "bn_chan": 16, "hid_chan": 16, "skip_chan": 16, "n_filters": 16}


def tiny_splitter() -> Splitter:
    torch.manual_seed(3)
    model, config = build_baseline("convtasnet", SMALL)
    return Splitter(model, config["sample_rate"])


def test_fuse_masks_joins_each_prompt_with_its_closest_output():
    """Each prompt takes the splitter output nearest its own mask (weighted by the mixture's power) and the
    result is the weighted geometric mean; weight 0 leaves the masks as they are."""
    torch.manual_seed(0)
    split = torch.rand(2, 5, 7)
    split = torch.stack([split[0], 1 - split[0]])
    masks = torch.stack([(split[1] + 0.05 * torch.rand(5, 7)).clamp(0, 1), (split[0] - 0.05).clamp(0, 1)])
    power = torch.rand(5, 7) + 0.1
    fused = fuse_masks(masks, split, power, 0.3)
    expected = torch.stack([masks[0] ** 0.7 * split[1] ** 0.3, masks[1] ** 0.7 * split[0] ** 0.3])
    torch.testing.assert_close(fused, expected)
    assert fuse_masks(masks, split, power, 0.0) is masks
    # where the mixture has no power, a bin does not count towards the choice
    power_elsewhere = torch.zeros(5, 7)
    power_elsewhere[0, 0] = 1.0
    one_bin = torch.zeros(1, 5, 7)
    one_bin[0, 0, 0] = split[1, 0, 0]
    torch.testing.assert_close(fuse_masks(one_bin, split, power_elsewhere, 1.0), split[1:2])


def test_splitter_masks_sum_to_one_on_the_mixture_stft():
    splitter = tiny_splitter()
    mixture = 0.1 * torch.randn(16000)
    masks, power = splitter.masks(mixture, 512, 128)
    assert masks.shape == (2, 257, 126) and power.shape == (257, 126)
    assert ((masks >= 0) & (masks <= 1)).all()
    torch.testing.assert_close(masks.sum(0), torch.ones(257, 126), atol=1e-4, rtol=0)


def test_separator_with_a_splitter_keeps_the_mixture_sum_and_weight_zero_turns_it_off():
    wav = 0.1 * torch.randn(2, 16000 * 3)
    args = (tiny_codec(), HashPromptEncoder(), tiny_model())
    plain = Separator(*args, InferenceConfig(chunk_seconds=2.0, overlap_seconds=0.5)).separate(wav, 16000, "dog")
    joined = Separator(
        *args, InferenceConfig(chunk_seconds=2.0, overlap_seconds=0.5, splitter_weight=0.3), splitter=tiny_splitter()
    )
    off = Separator(
        *args, InferenceConfig(chunk_seconds=2.0, overlap_seconds=0.5, splitter_weight=0.0), splitter=tiny_splitter()
    )
    result = joined.separate(wav, 16000, [Prompt(text="dog"), Prompt(text="piano")])
    assert result.targets.shape == (2, 2, wav.shape[-1])
    torch.testing.assert_close(result.targets.sum(0) + result.residual, wav, atol=1e-5, rtol=0)
    assert not torch.allclose(joined.separate(wav, 16000, "dog").targets, plain.targets, atol=1e-4)
    torch.testing.assert_close(off.separate(wav, 16000, "dog").targets, plain.targets)
    short = joined.separate(wav[:, :40], 16000, "dog")  # shorter than the STFT window and the splitter's kernel
    torch.testing.assert_close(short.targets.sum(0) + short.residual, wav[:, :40], atol=1e-5, rtol=0)


def test_bundle_splitter_loads_from_its_folder_and_other_baselines_are_refused(tmp_path):
    from promptsep_assets import DEFAULT_BUNDLE

    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle, ignore=shutil.ignore_patterns("splitter"))
    model, config = build_baseline("convtasnet", SMALL)
    save_baseline(bundle / "splitter", "convtasnet", model, config)
    separator = Separator.from_pretrained(bundle)
    assert isinstance(separator.splitter, Splitter)
    assert separator.splitter._model is None  # the weights wait for the first use
    assert separator.splitter.load() is separator.splitter and separator.splitter._model is not None
    assert separator.splitter.model.state_dict().keys() == model.state_dict().keys()
    lass, lass_config = build_baseline("lass", {"hidden": 8, "n_blocks": 1})
    save_baseline(tmp_path / "lass", "lass", lass, lass_config)
    with pytest.raises(WeightsError, match="not 'lass'"):
        Splitter.from_pretrained(tmp_path / "lass")


def test_soft_fusion_trusts_the_splitter_as_far_as_its_pick_is_clear():
    """With ``soft``, the weight is ``weight * (1 - d_near / d_far)``: full where one output matches the prompt's
    mask exactly, none where both are equally far."""
    split = torch.stack([torch.full((3, 4), 0.8), torch.full((3, 4), 0.2)])
    power = torch.ones(3, 4)
    exact = split[:1].clone()
    torch.testing.assert_close(fuse_masks(exact, split, power, 0.5, soft=True), exact ** 0.5 * split[:1] ** 0.5)
    middle = torch.full((1, 3, 4), 0.5)
    torch.testing.assert_close(fuse_masks(middle, split, power, 0.5, soft=True), middle)
    near_first = torch.full((1, 3, 4), 0.6)  # distances 0.04 and 0.16 per bin: w = 0.5 * (1 - 0.25)
    torch.testing.assert_close(fuse_masks(near_first, split, power, 0.5, soft=True), 0.6 ** 0.625 * 0.8 ** 0.375 * torch.ones(1, 3, 4))
