"""Prompt anchoring on the shipped bundle's text tower: nearest training phrasings, and the separator hearing them."""

import pytest
import torch

from dataengine.vocabulary import CATEGORIES
from encoders.anchors import PromptAnchors
from encoders.errors import PromptError
from promptsep_assets import DEFAULT_BUNDLE, EXAMPLES_DIR

pytestmark = pytest.mark.skipif(
    not (DEFAULT_BUNDLE / "separator" / "model.safetensors").is_file(), reason="no separator in the default bundle"
)


@pytest.fixture(scope="module")
def separator():
    from separation.inference import InferenceConfig, Separator

    return Separator.from_pretrained(config=InferenceConfig(anchor_threshold=0.0, phrasings=1))


@pytest.fixture(scope="module")
def anchors(separator):
    return PromptAnchors.from_vocabulary(separator.prompt_encoder)


def test_anchors_hold_every_training_phrasing_and_no_heldout_one(anchors):
    training = {p for c in CATEGORIES.values() for p in c.phrasings}
    heldout = {p for c in CATEGORIES.values() for p in c.heldout}
    assert set(anchors.phrasings) == training
    assert not heldout & set(anchors.phrasings)
    assert anchors.embeddings.shape == (len(anchors.phrasings), anchors.prompt_encoder.embed_dim)
    torch.testing.assert_close(anchors.embeddings.norm(dim=-1), torch.ones(len(anchors.phrasings)))


def test_a_training_phrasing_is_its_own_anchor(anchors):
    texts = ["dog barking", "a man speaking", "piano playing", "fire crackling"]
    for text, anchor in zip(texts, anchors.nearest(texts), strict=True):
        assert anchor.phrasing == text
        assert anchor.similarity == pytest.approx(1.0, abs=1e-4)


def test_paraphrases_find_their_category(anchors):
    found = {a.prompt: a.category for a in anchors.nearest(["a gentleman speaks", "a lady speaks", "a spanish speaker"])}
    assert found == {"a gentleman speaks": "male speech", "a lady speaks": "female speech", "a spanish speaker": "spanish speech"}


def test_anchors_need_one_category_per_phrasing(separator):
    with pytest.raises(PromptError, match="one category each"):
        PromptAnchors(separator.prompt_encoder, ["dog barking", "piano"], ["dog"])


def test_separator_hears_the_anchor_and_keeps_training_phrasings(separator):
    from separation.inference import InferenceConfig, Separator

    assert separator.heard_text("a gentleman speaks") in CATEGORIES["male speech"].phrasings
    assert separator.heard_text("dog barking") == "dog barking"
    parts = (separator.codec, separator.prompt_encoder, separator.model)
    strict = Separator(*parts, InferenceConfig(anchor_threshold=1.0, phrasings=1), refiner=separator.refiner, splitter=separator.splitter)
    assert strict.heard_text("a gentleman speaks") == "a gentleman speaks"
    off = Separator(*parts, InferenceConfig(anchor_threshold=None, phrasings=1), refiner=separator.refiner, splitter=separator.splitter)
    assert off.anchor("a gentleman speaks") is None and off.heard_text("a gentleman speaks") == "a gentleman speaks"

    # a paraphrase separates exactly as its anchor; a training phrasing exactly as with anchoring off
    from encoders.audio_io import load_audio

    mixture, rate = load_audio(EXAMPLES_DIR / "example_mix.wav")
    mixture = mixture[:, : 3 * rate]
    anchor = separator.heard_text("a canine barking loudly")
    assert anchor != "a canine barking loudly"
    torch.testing.assert_close(
        separator.separate(mixture, rate, "a canine barking loudly").targets, off.separate(mixture, rate, anchor).targets
    )
    torch.testing.assert_close(
        separator.separate(mixture, rate, "dog barking").targets, off.separate(mixture, rate, "dog barking").targets
    )


def test_cli_says_what_it_hears_and_refuses_a_bad_threshold(tmp_path, capsys):
    from app.cli import main

    mix = EXAMPLES_DIR / "example_mix.wav"
    assert main(["separate", str(mix), "--prompt", "a gentleman speaks", "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out
    assert "prompt 'a gentleman speaks' is heard as '" in said and "--no-anchor" in said
    assert (tmp_path / "a" / "example_mix" / "target.wav").is_file()
    assert "no sound the separator was trained on is close" not in said
    assert main(["separate", str(mix), "--prompt", "zzqx blorp", "--out", str(tmp_path / "far")]) == 0
    assert "note: no sound the separator was trained on is close to 'zzqx blorp'" in capsys.readouterr().out
    assert main(["separate", str(mix), "--prompt", "a gentleman speaks", "--no-anchor", "--out", str(tmp_path / "b")]) == 0
    assert "is heard as" not in capsys.readouterr().out
    assert main(["separate", str(mix), "--prompt", "dog barking", "--anchor-threshold", "2", "--out", str(tmp_path / "c")]) == 2
    assert "--anchor-threshold 2.0: expected a cosine similarity in [-1, 1]" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert main(["separate", str(mix), "--prompt", "dog barking", "--phrasings", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--phrasings 0: expected a whole number, at least 1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()



def test_phrasing_ensemble_rows_and_masks(separator):
    """``phrasings=K``: K rows per prompt (the anchor first, then its category's nearest phrasings); K identical rows
    give the single-phrasing output; distinct ones change it and keep target + residual == mixture."""
    from PIL import Image

    from encoders.audio_io import load_audio
    from separation.inference import InferenceConfig, Prompt, Separator

    def with_config(**kwargs):
        parts = (separator.codec, separator.prompt_encoder, separator.model)
        return Separator(*parts, InferenceConfig(**kwargs), refiner=separator.refiner, splitter=separator.splitter)

    two = with_config(anchor_threshold=0.0, phrasings=2)
    # a new wording: the anchor, then the prompt as typed; a training phrasing: two phrasings of its sound
    assert two.heard_phrasings("a canine barking loudly") == [two.heard_text("a canine barking loudly"), "a canine barking loudly"]
    texts = two.heard_phrasings("dog barking")
    assert texts[0] == "dog barking" and texts[1] != texts[0] and texts[1] in CATEGORIES["dog"].phrasings
    assert two.heard_phrasings("Dog barking!")[1] in CATEGORIES["dog"].phrasings  # case and punctuation: no new wording
    as_typed = with_config(anchor_threshold=None, phrasings=2)
    assert as_typed.heard_phrasings("a canine barking loudly") == ["a canine barking loudly"] * 2

    picture = Prompt(image=Image.new("RGB", (64, 64), (200, 120, 40)))
    conditions = two.condition([Prompt(text="dog barking"), picture])
    assert [tuple(c.cond.shape[:1]) + tuple(c.tokens.shape[:1]) + tuple(c.token_mask.shape[:1]) for c in conditions] == [(2, 2, 2)] * 2
    assert two.condition([picture])[0].cond.shape[0] == 1  # no text prompt: one row

    mixture, rate = load_audio(EXAMPLES_DIR / "example_mix.wav")
    mixture = mixture[:, : 3 * rate]
    typed_once = with_config(anchor_threshold=None, phrasings=1).separate(mixture, rate, "a canine barking loudly").targets
    typed_twice = as_typed.separate(mixture, rate, "a canine barking loudly").targets
    torch.testing.assert_close(typed_twice, typed_once, atol=1e-5, rtol=0)
    single = separator.separate(mixture, rate, "a canine barking loudly").targets
    result = two.separate(mixture, rate, "a canine barking loudly")
    assert (result.targets - single).pow(2).sum() / single.pow(2).sum() > 1e-4
    torch.testing.assert_close(result.targets.sum(0) + result.residual, mixture, atol=1e-5, rtol=0)
