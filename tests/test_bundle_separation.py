"""End to end on the shipped default bundle: the CLI and the Python API on the bundled example."""

import json

import pytest
import soundfile as sf
import torch
from PIL import Image

from app.cli import main
from encoders.audio_io import load_audio
from promptsep_assets import DEFAULT_BUNDLE, EXAMPLES_DIR
from separation.metrics import si_sdr

pytestmark = pytest.mark.skipif(
    not (DEFAULT_BUNDLE / "separator" / "model.safetensors").is_file(), reason="no separator in the default bundle"
)
MIX, TARGET = EXAMPLES_DIR / "example_mix.wav", EXAMPLES_DIR / "example_target.wav"
PROMPT = (EXAMPLES_DIR / "example_prompt.txt").read_text().strip()


@pytest.fixture(scope="module")
def separator():
    from separation.inference import Separator

    return Separator.from_pretrained()


def test_shipped_bundle_improves_si_sdr_on_the_bundled_example(separator):
    mixture, rate = load_audio(MIX)
    truth, _ = load_audio(TARGET)
    result = separator.separate(mixture, rate, PROMPT)
    before = si_sdr(mixture[0], truth[0]).item()
    after = si_sdr(result.targets[0, 0], truth[0]).item()
    assert after > before + 0.5, (before, after)


def test_shipped_refiner_is_used_and_keeps_the_example_improving(separator):
    """The bundle's mask refiner loads, changes the output, and the refined and plain targets both beat the mixture."""
    from separation.inference import InferenceConfig, Separator

    assert separator.refiner is not None and separator.config.refine
    mixture, rate = load_audio(MIX)
    truth, _ = load_audio(TARGET)
    refined = separator.separate(mixture, rate, PROMPT)
    plain_sep = Separator(
        separator.codec, separator.prompt_encoder, separator.model, InferenceConfig(refine=False),
        splitter=separator.splitter,
    )
    plain = plain_sep.separate(mixture, rate, PROMPT)
    change = (refined.targets - plain.targets).pow(2).sum() / plain.targets.pow(2).sum()
    assert change > 1e-3
    torch.testing.assert_close(refined.targets.sum(0) + refined.residual, mixture, atol=1e-5, rtol=0)
    before = si_sdr(mixture[0], truth[0]).item()
    for result in (refined, plain):
        assert si_sdr(result.targets[0, 0], truth[0]).item() > before + 3.0


def test_prompt_matters(separator):
    """The prompted target differs from what an unrelated prompt extracts."""
    mixture, rate = load_audio(MIX)
    dog = separator.separate(mixture, rate, PROMPT).targets[0, 0]
    other = separator.separate(mixture, rate, "a church organ playing").targets[0, 0]
    difference = (dog - other).pow(2).sum() / dog.pow(2).sum()
    assert difference > 0.05


def test_cli_separate_writes_tracks_that_sum_to_the_mixture(tmp_path, capsys):
    stereo = tmp_path / "stereo44k.wav"
    mono, rate = load_audio(MIX, sample_rate=44100)
    sf.write(stereo, torch.cat([mono, 0.5 * mono]).T.numpy(), rate, subtype="FLOAT")
    code = main(["separate", str(stereo), "--prompt", PROMPT, "--prompt", "a man speaking", "--out", str(tmp_path / "out")])
    assert code == 0
    folder = tmp_path / "out" / "stereo44k"
    t1, r1 = load_audio(folder / "target_1.wav")
    t2, _ = load_audio(folder / "target_2.wav")
    residual, r2 = load_audio(folder / "residual.wav")
    original, _ = load_audio(stereo)
    assert r1 == r2 == 44100 and t1.shape == original.shape == residual.shape
    assert torch.allclose(t1 + t2 + residual, original, atol=1e-4)
    assert [p["file"] for p in json.loads((folder / "prompts.json").read_text())] == ["target_1.wav", "target_2.wav"]


def test_cli_reference_report_and_errors(tmp_path, capsys):
    code = main(["separate", str(MIX), "--prompt", PROMPT, "--reference", str(TARGET), "--out", str(tmp_path)])
    assert code == 0 and "SI-SDRi" in capsys.readouterr().out
    assert main(["separate", str(tmp_path / "missing.wav"), "--prompt", "dog", "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["separate", str(MIX), "--out", str(tmp_path)]) == 2
    assert "at least one --prompt" in capsys.readouterr().err
    assert main(["separate", str(MIX), "--prompt", "dog", "--mask-floor", "1.5", "--out", str(tmp_path / "f")]) == 2
    assert "--mask-floor 1.5" in capsys.readouterr().err and not (tmp_path / "f").exists()
    assert main(["separate", str(MIX), "--prompt", "dog", "--shifts", "0", "--out", str(tmp_path / "s")]) == 2
    assert "--shifts 0" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert main(["separate", str(MIX), "--prompt", "dog", "--batch-seconds", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--batch-seconds 0" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main(["separate", str(MIX), "--prompt", "dog", "--splitter-weight", "1.5", "--out", str(tmp_path / "w")]) == 2
    assert "--splitter-weight 1.5: expected a weight in [0, 1]" in capsys.readouterr().err and not (tmp_path / "w").exists()
    assert main(["separate", str(MIX), "--prompt", "dog", "--steps", "0", "--out", str(tmp_path / "n")]) == 2
    assert "--steps 0: expected a whole number of ODE steps, at least 1" in capsys.readouterr().err
    # a picture or video prompt that is not there is refused before any model loads or any input is read
    missing = tmp_path / "no-dog.png"
    assert main(["separate", str(MIX), "--image", str(missing), "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: image prompt not found" in err and "inputs failed" not in err and not (tmp_path / "i").exists()
    assert main(["separate", str(MIX), "--video", str(tmp_path / "no.mp4"), "--out", str(tmp_path / "v")]) == 2
    assert "no.mp4: video prompt not found; pass an existing video file" in capsys.readouterr().err
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": str(MIX), "prompt": PROMPT}) + "\n"
                        + json.dumps({"id": "b", "audio": str(MIX), "image": "gone.png"}) + "\n")
    assert main(["separate", "--manifest", str(manifest), "--out", str(tmp_path / "m")]) == 2
    assert f"{manifest}:2: {tmp_path / 'gone.png'}: image prompt not found" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_cli_manifest_mode(tmp_path):
    rows = [
        {"id": "a", "audio": str(MIX), "prompt": PROMPT},
        {"id": "b", "audio": str(MIX), "prompt": "a man speaking", "spans": [[0.0, 2.0]]},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["separate", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--spectrogram"]) == 0
    for name in ("a", "b"):
        assert (tmp_path / "out" / name / "target.wav").is_file()
        assert (tmp_path / "out" / name / "residual.wav").is_file()
        with Image.open(tmp_path / "out" / name / "spectrogram.png") as picture:  # mixture, target, residual
            assert picture.format == "PNG" and picture.size == (1000, 500)


def test_shipped_splitter_loads_and_joins_in_by_default(separator):
    """The bundle's splitter loads and joins in by default (weight 0.7): the target differs from the one with
    ``splitter_weight`` 0, is still well above the mixture on the bundled example, and target + residual is still
    the mixture."""
    from separation.inference import InferenceConfig, Separator
    from separation.splitter import Splitter

    assert isinstance(separator.splitter, Splitter) and separator.config.splitter_weight == 0.7
    mixture, rate = load_audio(MIX)
    truth, _ = load_audio(TARGET)
    joined = separator.separate(mixture, rate, PROMPT)
    plain_sep = Separator(
        separator.codec, separator.prompt_encoder, separator.model, InferenceConfig(splitter_weight=0.0),
        refiner=separator.refiner, splitter=separator.splitter,
    )
    plain = plain_sep.separate(mixture, rate, PROMPT)
    change = (joined.targets - plain.targets).pow(2).sum() / plain.targets.pow(2).sum()
    assert change > 1e-3
    torch.testing.assert_close(joined.targets.sum(0) + joined.residual, mixture, atol=1e-5, rtol=0)
    assert si_sdr(joined.targets[0, 0], truth[0]).item() > si_sdr(mixture[0], truth[0]).item() + 3.0
