"""The picture namer (encoders.namer): margin choice, save/load round trip, and what the separator hears."""

import json
import os

import pytest
import torch
from PIL import Image

from encoders.errors import PromptsepError, WeightsError
from encoders.namer import MARGINS, PictureNamer, choose_margin, manifest_pictures
from encoders.peav import load_default_prompt_encoder
from promptsep_assets import DEFAULT_BUNDLE
from separation.inference import InferenceConfig, Prompt, Separator


@pytest.fixture(scope="module")
def encoder():
    return load_default_prompt_encoder()


@pytest.fixture()
def pictures(tmp_path):
    paths = []
    for k, colour in enumerate([(200, 30, 30), (30, 160, 40), (250, 250, 250)]):
        image = Image.new("RGB", (40, 40), colour)
        image.paste((20, 20, 90), (10 + 3 * k, 8, 26, 30))
        paths.append(str(tmp_path / f"p{k}.png"))
        image.save(paths[-1])
    return paths


def test_choose_margin_is_the_smallest_threshold_that_reaches_the_precision():
    margins = [0.005, 0.015, 0.04, 0.09, 0.2]
    assert choose_margin(margins, [False, False, True, True, True], 0.9) == 0.02  # 0.01 still names one wrong
    assert choose_margin(margins, [False, False, True, True, True], 0.7) == 0.01
    assert choose_margin(margins, [False, False, False, True, True], 0.9) == 0.05
    assert choose_margin(margins, [False] * 5, 0.5) == MARGINS[-1]  # never precise enough: the strictest


def test_a_saved_namer_loads_with_the_same_scores_and_honours_its_margin(encoder, pictures, tmp_path):
    namer = PictureNamer(encoder, encoder.video_model, margin=0.0)
    scores = namer.scores(pictures)
    assert scores.shape == (3, len(namer.names)) and scores.abs().max() <= 1.0 + 1e-5
    folder = namer.save(tmp_path / "namer", note="test")
    assert json.loads((folder / "config.json").read_text()) == {"margin": 0.0, "note": "test"}
    loaded = PictureNamer.from_pretrained(folder, encoder)
    torch.testing.assert_close(loaded.scores(pictures), scores, atol=2e-2, rtol=0)  # fp16 weights
    namings = loaded.name(pictures)
    assert all(n.margin >= 0 and n.name == n.best and n.best in namer.names for n in namings)
    loaded.margin = 2.0  # a cosine gap never reaches 2: nothing is named
    assert [n.name for n in loaded.name(pictures)] == [None, None, None]


def test_a_namer_that_does_not_fit_the_visual_tower_is_refused(encoder, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "namer"
    folder.mkdir()
    (folder / "config.json").write_text('{"margin": 0.1}')
    save_file({"video_model.no_such_layer.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="do not fit"):
        PictureNamer.from_pretrained(folder, encoder)
    PictureNamer(encoder, encoder.video_model, margin=0.1).save(folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file(dict(list(state.items())[1:]), str(folder / "model.safetensors"))  # one weight short
    with pytest.raises(WeightsError, match="do not fit"):
        PictureNamer.from_pretrained(folder, encoder)
    with pytest.raises(WeightsError, match="missing"):
        PictureNamer.from_pretrained(tmp_path / "nowhere", encoder)


def test_the_separator_hears_a_named_picture_as_its_category_text(encoder, pictures, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for part in ("codec", "peav", "separator", "refiner"):
        os.symlink(DEFAULT_BUNDLE / part, bundle / part)
    PictureNamer(encoder, encoder.video_model, margin=0.0).save(bundle / "namer")
    separator = Separator.from_pretrained(bundle)
    assert separator.namer is not None
    best = separator.namer.name(pictures[:1])[0].best
    heard = separator.heard_prompt(Prompt(image=pictures[0], spans=[(0.5, 1.0)]))
    assert heard.text == best and heard.image is None and list(heard.spans) == [(0.5, 1.0)]
    with_text = Prompt(text="dog barking", image=pictures[0])
    assert separator.heard_prompt(with_text) is with_text  # a picture with words is left as it is
    separator.namer.margin = 2.0
    separator._namings.clear()
    unnamed = Prompt(image=pictures[1])
    assert separator.heard_prompt(unnamed) is unnamed  # not sure enough: the picture itself
    separator.namer.margin, separator.config = 0.0, InferenceConfig(name_pictures=False)
    assert separator.heard_prompt(unnamed) is unnamed  # switched off


def test_cli_says_what_a_picture_is_heard_as(encoder, pictures, tmp_path, capsys):
    from app.cli import main
    from promptsep_assets import EXAMPLES_DIR

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for part in ("codec", "peav", "separator"):
        os.symlink(DEFAULT_BUNDLE / part, bundle / part)
    PictureNamer(encoder, encoder.video_model, margin=0.0).save(bundle / "namer")
    mix = str(EXAMPLES_DIR / "example_mix.wav")
    args = ["separate", mix, "--image", pictures[0], "--bundle", str(bundle), "--shifts", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out
    assert "is heard as '" in said and "--no-picture-names" in said
    assert main([*args, "--no-picture-names", "--out", str(tmp_path / "b")]) == 0
    assert "is heard as" not in capsys.readouterr().out
    assert (tmp_path / "b" / "example_mix" / "target.wav").is_file()


def test_train_namer_writes_a_namer_with_the_margin_its_pictures_call_for(encoder, pictures, tmp_path):
    from app.cli import main

    namer = PictureNamer(encoder, encoder.video_model, margin=0.0)
    namings = namer.name(pictures)
    labels = [namings[0].best, namings[1].best, "no such category"]  # two right, one wrong
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"image": os.path.basename(p), "category": c}) + "\n" for p, c in zip(pictures, labels, strict=True)))
    assert manifest_pictures(manifest) == dict(zip(pictures, labels, strict=True))
    tower = tmp_path / "tower"
    encoder.save_pretrained(tower)
    assert main(["train", "namer", "--tower", str(tower), "--manifest", str(manifest), "--precision", "0.9", "--out", str(tmp_path / "n")]) == 0
    config = json.loads((tmp_path / "n" / "config.json").read_text())
    expected = choose_margin([n.margin for n in namings], [True, True, False], 0.9)
    assert config["margin"] == pytest.approx(expected) and config["pictures"] == 3
    with pytest.raises(PromptsepError, match="does not exist"):
        manifest_pictures(tmp_path / "absent.jsonl")
