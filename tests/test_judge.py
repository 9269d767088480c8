"""The judge: its features, its fit, its files, the shipped one on the bundled example, and its CLI."""

import json
from types import SimpleNamespace

import pytest
import torch

from app.cli import main
from encoders.audio_io import load_audio
from encoders.errors import WeightsError
from judge.model import FEATURES, Judge, JudgeScore
from promptsep_assets import EXAMPLES_DIR

MIX, TARGET = EXAMPLES_DIR / "example_mix.wav", EXAMPLES_DIR / "example_target.wav"
STUB = SimpleNamespace(sample_rate=16000)  # the encoder / splitter a judge needs only to fit, save and load


def test_fit_recovers_a_linear_relation_and_predict_applies_it():
    torch.manual_seed(0)
    x = torch.randn(300, len(FEATURES)) * torch.linspace(0.1, 3.0, len(FEATURES))
    y = 2.0 * x[:, 0] - 3.0 * x[:, 4] + 1.5 + 0.01 * torch.randn(300)
    judge = Judge(STUB, STUB).fit(x, y, alpha=1e-6)
    assert torch.allclose(judge.predict(x), y, atol=0.05)
    w = judge.weights
    assert torch.allclose(w["coef"] / w["std"], torch.tensor([2.0, 0, 0, 0, -3.0, 0, 0, 0]), atol=0.01)
    shrunk = Judge(STUB, STUB).fit(x, y, alpha=1e4)  # a large penalty pulls every weight toward 0
    assert shrunk.weights["coef"].abs().sum() < 0.2 * w["coef"].abs().sum()


def test_judge_files_round_trip_and_refuse_what_they_cannot_hold(tmp_path):
    torch.manual_seed(1)
    x, y = torch.randn(50, len(FEATURES)), torch.randn(50)
    judge = Judge(STUB, STUB).fit(x, y)
    judge.config.fitted_on = "test"
    judge.save_pretrained(tmp_path / "judge")
    loaded = Judge.from_pretrained(tmp_path / "judge", STUB, STUB)
    assert torch.equal(loaded.predict(x), judge.predict(x)) and loaded.config.fitted_on == "test"
    (tmp_path / "judge" / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"model.safetensors: missing"):
        Judge.from_pretrained(tmp_path / "judge", STUB, STUB)
    judge.config.features = [*FEATURES[:-1], "loudness"]
    judge.save_pretrained(tmp_path / "odd")
    with pytest.raises(WeightsError, match=r"unknown judge features \['loudness'\]"):
        Judge.from_pretrained(tmp_path / "odd", STUB, STUB)
    with pytest.raises(WeightsError, match="the judge reads 16000 Hz"):
        Judge(SimpleNamespace(sample_rate=8000), STUB)


def test_choose_takes_each_prompts_best_scored_candidate():
    class Fixed(Judge):
        def score(self, mixture, tracks, rate, prompt):
            return [JudgeScore(float(t.mean()), 0.0, {}) for t in tracks]

    candidates = torch.tensor([[0.1, 0.5, 0.2], [0.9, 0.3, 0.4]])[:, :, None, None].expand(2, 3, 1, 10)
    assert Fixed(STUB, STUB).choose(torch.zeros(1, 10), candidates, 16000, ["dog", "piano"]) == [1, 0]


@pytest.fixture(scope="module")
def separator():
    from separation.inference import Separator

    return Separator.from_pretrained()


@pytest.fixture(scope="module")
def example():
    mixture, rate = load_audio(MIX, sample_rate=16000, channels=1)
    target, _ = load_audio(TARGET, sample_rate=16000, channels=1)
    return mixture[0], target[0, : mixture.shape[-1]]


def test_features_of_the_true_target_its_rest_and_the_mixture(separator, example):
    from separation.inference import Prompt

    mixture, target = example
    judge = separator.judge
    tracks = torch.stack([target, mixture - target, mixture])
    f = judge.features(mixture, tracks, judge.prompt_embedding(Prompt(text="dog barking")))
    assert f.shape == (3, len(FEATURES))
    column = {name: f[:, i].tolist() for i, name in enumerate(judge.config.features)}
    assert column["log_share"][2] == pytest.approx(0.0, abs=1e-6)  # the mixture is all of the mixture
    assert column["mask_sharpness"][2] == pytest.approx(0.0, abs=1e-6)  # its mask is 1 everywhere
    # the target's rest is the residual and the other way round
    assert column["align_track_minus_rest"][0] == pytest.approx(-column["align_track_minus_rest"][1], abs=1e-5)
    # the true target follows one of the splitter's two outputs more closely than the untouched mixture does
    assert column["splitter_ratio"][0] < column["splitter_ratio"][2]


def test_the_shipped_judge_prefers_the_true_target(separator, example):
    mixture, target = example
    scores = separator.judge.score(mixture, torch.stack([target, mixture - target, mixture]), 16000, "dog barking")
    assert scores[0].overall > scores[1].overall and scores[0].overall > scores[2].overall
    assert scores[0].alignment > scores[1].alignment  # the dog aligns with "dog barking" more than the man does
    assert set(scores[0].to_dict()) == {"overall", "alignment", "features"}


def test_separate_with_candidates_lets_the_judge_choose(separator, example):
    mixture, _ = example
    result = separator.separate(mixture[None], 16000, "dog barking", candidates=2)
    scores = separator.judge.score(mixture, result.candidates[0], 16000, "dog barking")
    assert result.chosen == [max(range(2), key=lambda k: scores[k].overall)]
    assert torch.equal(result.targets[0], result.candidates[0, result.chosen[0]])


def test_judge_cli_scores_tracks_and_refuses_bad_input(tmp_path, capsys):
    assert main(["judge", str(MIX), str(TARGET), str(MIX), "--prompt", "dog barking", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert [s["track"] for s in scores] == [str(TARGET), str(MIX)]
    assert scores[0]["overall"] > scores[1]["overall"]
    assert main(["judge", str(MIX), str(TARGET)]) == 2
    assert "give the prompt the tracks were separated for" in capsys.readouterr().err
    assert main(["judge", str(MIX), str(tmp_path / "gone.wav"), "-p", "dog"]) == 2
    assert "no such file" in capsys.readouterr().err
    short = tmp_path / "short.wav"
    import soundfile as sf

    sf.write(short, torch.zeros(1000).numpy(), 16000)
    assert main(["judge", str(MIX), str(short), "-p", "dog"]) == 2
    assert "short.wav: 1000 samples at 16000 Hz, the mixture has" in capsys.readouterr().err


def test_train_judge_cli_fits_a_loadable_judge(tmp_path, separator):
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"id": "a", "audio": str(MIX), "target": str(TARGET), "prompt": "dog barking", "category": "dog"},
        {"id": "b", "audio": str(MIX), "target": str(TARGET), "prompt": "a dog barks", "category": "puppy"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "judge"
    assert main(["train", "judge", "--manifest", str(manifest), "--out", str(out), "--jobs", "1",
                 "--records", str(tmp_path / "records.pt")]) == 0
    judge = Judge.from_pretrained(out, separator.prompt_encoder, separator.splitter)
    assert judge.config.fitted_on == "m.jsonl: 2 mixtures x 2 separations"
    records = torch.load(tmp_path / "records.pt", weights_only=True)
    assert records["features"].shape == (2, 4, len(FEATURES)) and records["si_sdr"].shape == (2, 4)
    assert records["si_sdr"].max() <= 30.0  # clipped
