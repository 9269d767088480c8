"""The Gradio demo: its request handler on the shipped bundle, and the same request over HTTP."""

import socket

import pytest
import soundfile as sf

from app.demo import DemoRunner, build_demo, example_requests, parse_spans, theme
from encoders.errors import PromptError
from promptsep_assets import EXAMPLES_DIR

MIX = EXAMPLES_DIR / "example_mix.wav"


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    from separation.inference import Separator

    return DemoRunner(Separator.from_pretrained, tmp_path_factory.mktemp("demo"))


def test_parse_spans():
    assert parse_spans("1.5-4, 6:8") == [(1.5, 4.0), (6.0, 8.0)]
    assert parse_spans(" 0 – 2 ;") == [(0.0, 2.0)]
    assert parse_spans("") is None and parse_spans(None) is None
    with pytest.raises(PromptError, match=r"span '4-2': expected START-END in seconds with START < END"):
        parse_spans("1-2, 4-2")
    with pytest.raises(PromptError, match="span 'soon'"):
        parse_spans("soon")


def test_a_request_gives_target_residual_and_picture_that_add_up(runner):
    result = runner.run(str(MIX), None, "a dog barking", None, "0-3")
    mixture, rate = sf.read(MIX, dtype="float32")
    target, target_rate = sf.read(result.target, dtype="float32")
    residual, _ = sf.read(result.residual, dtype="float32")
    assert target_rate == rate and target.shape == mixture.shape == residual.shape
    assert abs(target + residual - mixture).max() < 1e-4
    assert result.spectrogram.is_file() and result.spectrogram.parent == result.target.parent
    assert result.target.parent.parent == runner.out_root  # each request in its own folder
    assert "Heard the prompt as **a barking dog** (typed: a dog barking)." in result.summary
    assert "Spans: 0-3 s." in result.summary
    assert "The judge scores the target **" in result.summary  # the shipped bundle has a judge


def test_the_judge_endpoint_scores_a_track_and_refuses_bad_requests(runner):
    target = str(EXAMPLES_DIR / "example_target.wav")
    good, bad = runner.judge(str(MIX), target, "dog barking", None), runner.judge(str(MIX), str(MIX), "dog barking", None)
    assert set(good) == {"overall", "alignment", "features"} and good["overall"] > bad["overall"]
    with pytest.raises(PromptError, match="give the mixture and the separated track"):
        runner.judge(str(MIX), None, "dog", None)
    with pytest.raises(PromptError, match="give the prompt the track was separated for"):
        runner.judge(str(MIX), target, " ", None)


def test_a_video_and_a_picture_prompt(runner, tmp_path):
    """A video's soundtrack separates like audio; a picture prompt says what conditioned the separation."""
    import subprocess

    from PIL import Image

    video, picture = tmp_path / "clip.mp4", tmp_path / "dog.png"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x48:d=2", "-i", str(MIX),
                    "-shortest", "-c:v", "libx264", "-c:a", "aac", str(video)], check=True)
    Image.new("RGB", (64, 64), (200, 150, 80)).save(picture)
    result = runner.run(None, str(video), None, str(picture), None)
    info = sf.info(result.target)
    assert info.samplerate == sf.info(MIX).samplerate and abs(info.duration - 2.0) < 0.1
    assert "Conditioned on the picture." in result.summary


@pytest.mark.parametrize(
    "recording,video,text,picture,spans,message",
    [
        (None, None, "dog", None, "", "upload a recording"),
        (str(MIX), str(MIX), "dog", None, "", "an audio file or a video, not both"),
        (str(MIX), None, "  ", None, "", "describe the sound"),
        (str(MIX), None, "dog", None, "3-1", "span '3-1'"),
    ],
)
def test_bad_requests_are_refused_before_any_work(runner, recording, video, text, picture, spans, message):
    before = sorted(runner.out_root.iterdir())
    with pytest.raises(PromptError, match=message):
        runner.run(recording, video, text, picture, spans)
    assert sorted(runner.out_root.iterdir()) == before  # no folder made for a refused request


def test_the_examples_are_the_bundled_mixture_with_prompts_for_its_sounds():
    examples = example_requests()
    assert {row[0] for row in examples} == {str(MIX)} and MIX.is_file()
    assert [row[1] for row in examples][:2] == ["dog barking", "a man speaking"]
    assert all(parse_spans(row[2]) is None or parse_spans(row[2]) == [(0.0, 2.0)] for row in examples)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_demo_answers_over_http(runner):
    from gradio_client import Client, handle_file

    demo = build_demo(runner)
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, theme=theme(),
                        allowed_paths=[str(runner.out_root)])
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        target, residual, picture, summary = client.predict(
            handle_file(str(MIX)), None, "dog barking", None, "", api_name="/separate"
        )
        mixture, _ = sf.read(MIX, dtype="float32")
        assert abs(sf.read(target, dtype="float32")[0] + sf.read(residual, dtype="float32")[0] - mixture).max() < 1e-4
        assert picture.endswith("spectrogram.png") and "Separated in" in summary
        with pytest.raises(Exception, match="describe the sound"):
            client.predict(handle_file(str(MIX)), None, "", None, "", api_name="/separate")
        verdict = client.predict(handle_file(str(MIX)), handle_file(target), "dog barking", None, api_name="/judge")
        assert verdict["overall"] == pytest.approx(runner.judge(str(MIX), target, "dog barking", None)["overall"], abs=1e-3)
    finally:
        demo.close()
