"""The Gradio demo: upload a recording (audio or video), describe the sound (text and/or a picture, optionally the
seconds where it sounds), and hear the target and the residual beside a picture of where the sound went.

Everything runs locally: the models come from the bundle, Gradio's analytics are off and the page asks for no web
fonts, so the demo works on a machine with no internet. ``promptsep demo`` starts it.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from encoders.errors import PromptError, PromptsepError

SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[-:–]\s*(\d+(?:\.\d+)?)\s*$")


def parse_spans(text: str | None) -> list[tuple[float, float]] | None:
    """Spans typed as ``1.5-4, 6:8`` (seconds) -> ``[(1.5, 4.0), (6.0, 8.0)]``; empty text -> None.

    Raises:
        PromptError: a part that is not ``START-END`` with START < END.
    """
    if text is None or not text.strip():
        return None
    spans = []
    for part in re.split(r"[,;]", text):
        if not part.strip():
            continue
        match = SPAN.match(part)
        if match is None or float(match.group(1)) >= float(match.group(2)):
            raise PromptError(f"span {part.strip()!r}: expected START-END in seconds with START < END, e.g. 1.5-4")
        spans.append((float(match.group(1)), float(match.group(2))))
    return spans or None


@dataclass
class DemoResult:
    target: Path
    residual: Path
    spectrogram: Path
    summary: str


class DemoRunner:
    """Separates one request of the demo into a fresh folder under ``out_root``; the separator loads on first use."""

    def __init__(self, load_separator: Callable[[], object], out_root: str | os.PathLike | None = None) -> None:
        self._load = load_separator
        self._separator = None
        self.out_root = Path(out_root) if out_root is not None else Path(tempfile.mkdtemp(prefix="promptsep-demo-"))
        self.out_root.mkdir(parents=True, exist_ok=True)

    @property
    def separator(self):
        """The separator, loaded on first use."""
        if self._separator is None:
            self._separator = self._load()
        return self._separator

    def load(self) -> None:
        """Load the separator now (a bad bundle then fails before the demo serves, and the first request is not slow)."""
        _ = self.separator

    def run(
        self,
        recording: str | None,
        video: str | None,
        text: str | None,
        picture: str | None,
        spans: str | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> DemoResult:
        """Separate ``recording`` (or ``video``'s soundtrack) with the prompt made of ``text`` and/or ``picture``.

        Raises:
            PromptError: no recording, two recordings, no prompt, or spans that do not parse.
            PromptsepError: what the separator refuses (an unreadable file, a missing picture).
        """
        from app.spectrogram import plot_separation
        from separation.inference import Prompt

        if recording and video:
            raise PromptError("give one recording: an audio file or a video, not both")
        source = recording or video
        if not source:
            raise PromptError("upload a recording (audio or video) first")
        text = (text or "").strip() or None
        if text is None and not picture:
            raise PromptError("describe the sound: type a text prompt, upload a picture of its source, or both")
        prompt = Prompt(text=text, image=picture or None, spans=parse_spans(spans))
        folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.out_root))
        started = time.perf_counter()
        separator = self.separator
        target, residual = separator.separate_file(source, [prompt], folder, progress=progress)
        label = f"target: {prompt.describe()}"
        picture_path = plot_separation([target, residual], [label, "residual"], folder / "spectrogram.png")
        verdict = self._verdict(target, residual, prompt)
        return DemoResult(target, residual, picture_path, self._summary(prompt, time.perf_counter() - started, verdict))

    def _verdict(self, target: Path, residual: Path, prompt) -> list | None:
        """The judge's scores of the target and the residual (None when the bundle has no judge)."""
        judge = self.separator.judge
        if judge is None:
            return None
        import torch

        from encoders.audio_io import load_audio

        (target_wav, rate), (residual_wav, _) = load_audio(target), load_audio(residual)
        return judge.score(target_wav + residual_wav, torch.stack([target_wav, residual_wav]), rate, prompt)

    def judge(self, mixture: str | None, track: str | None, text: str | None, picture: str | None) -> dict:
        """The judge's verdict on ``track`` separated from ``mixture`` for the prompt (the demo's /judge endpoint).

        Raises:
            PromptError: a missing file or prompt, a track of another length, or a bundle without a judge.
        """
        import torch

        from encoders.audio_io import load_audio
        from separation.inference import Prompt

        if not mixture or not track:
            raise PromptError("give the mixture and the separated track")
        text = (text or "").strip() or None
        if text is None and not picture:
            raise PromptError("give the prompt the track was separated for: text, a picture, or both")
        judge = self.separator.judge
        if judge is None:
            raise PromptError("this bundle has no judge/")
        mix, rate = load_audio(mixture)
        one, _ = load_audio(track, sample_rate=rate, channels=1)
        if one.shape[-1] != mix.shape[-1]:
            raise PromptError(f"the track has {one.shape[-1]} samples at {rate} Hz, the mixture {mix.shape[-1]}")
        (score,) = judge.score(mix, torch.stack([one[0]]), rate, Prompt(text=text, image=picture or None))
        return score.to_dict()

    def _summary(self, prompt, seconds: float, verdict: list | None = None) -> str:
        separator = self.separator
        lines = []
        if prompt.text:
            heard = separator.heard_text(prompt.text)
            lines.append(f"Heard the prompt as **{heard}**" + ("" if heard == prompt.text else f" (typed: {prompt.text})") + ".")
        naming = separator.naming(prompt)
        if naming is not None:
            lines.append(
                f"The picture reads as **{naming.best}**"
                + ("; separated as that sound." if naming.name else "; not sure enough to name it, so the picture itself conditions.")
            )
        elif prompt.image is not None:
            lines.append("Conditioned on the picture" + (" and the text." if prompt.text else "."))
        if prompt.spans:
            lines.append("Spans: " + ", ".join(f"{a:g}-{b:g} s" for a, b in prompt.spans) + ".")
        if verdict is not None:
            lines.append(
                f"The judge scores the target **{verdict[0].overall:.1f}** (residual: {verdict[1].overall:.1f}; higher is better, "
                "a ranking score on SI-SDR's dB scale); "
                f"the target's alignment with the prompt is {verdict[0].alignment:.2f}."
            )
        lines.append(f"Separated in {seconds:.1f} s. Target + residual add up to the recording exactly.")
        return "\n\n".join(lines)


def build_demo(runner: DemoRunner):
    """The Gradio Blocks app over ``runner``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported; the CLI's import of this module sets nothing
    import gradio as gr

    def separate(recording, video, text, picture, spans, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
        def report(done: int, total: int) -> None:
            progress((done, total), desc="separating", unit="chunks")

        try:
            result = runner.run(recording, video, text, picture, spans, progress=report)
        except PromptsepError as error:
            raise gr.Error(str(error)) from None
        return str(result.target), str(result.residual), str(result.spectrogram), result.summary

    with gr.Blocks(title="promptsep") as demo:
        gr.Markdown(
            "# promptsep\nIsolate a sound in a recording from a prompt. Upload audio or a video, say what to isolate "
            "(text, a picture of its source, or both), and get the **target** and the **residual** (everything else)."
        )
        with gr.Row():
            with gr.Column():
                with gr.Tab("Audio"):
                    recording = gr.Audio(label="recording", type="filepath", sources=["upload", "microphone"])
                with gr.Tab("Video"):
                    video = gr.Video(label="video (its soundtrack is separated)", sources=["upload"])
                text = gr.Textbox(label="text prompt", placeholder="dog barking")
                picture = gr.Image(label="picture of the source (optional)", type="filepath", sources=["upload"])
                spans = gr.Textbox(label="when it sounds (optional, seconds)", placeholder="1.5-4, 6-8")
                button = gr.Button("Separate", variant="primary")
            with gr.Column():
                target = gr.Audio(label="target", type="filepath", interactive=False)
                residual = gr.Audio(label="residual", type="filepath", interactive=False)
                spectrogram = gr.Image(label="where the sound went", type="filepath", interactive=False)
                summary = gr.Markdown()
        button.click(
            separate, [recording, video, text, picture, spans], [target, residual, spectrogram, summary],
            api_name="separate",
        )
        gr.Examples(examples=example_requests(), inputs=[recording, text, spans], label="try the bundled example")

        def judge(mixture, track, text, picture):
            try:
                return runner.judge(mixture, track, text, picture)
            except PromptsepError as error:
                raise gr.Error(str(error)) from None

        with gr.Accordion("Judge a separation", open=False):
            gr.Markdown(
                "Score any separated track (from promptsep or elsewhere) against its prompt, on the dB scale of its "
                "SI-SDR against the prompted sound: a score to rank tracks by, not an estimate of one track's SI-SDR."
            )
            with gr.Row():
                judge_mixture = gr.Audio(label="mixture", type="filepath", sources=["upload"])
                judge_track = gr.Audio(label="separated track", type="filepath", sources=["upload"])
            with gr.Row():
                judge_text = gr.Textbox(label="text prompt")
                judge_picture = gr.Image(label="picture prompt (optional)", type="filepath", sources=["upload"])
            judge_button = gr.Button("Judge")
            verdict = gr.JSON(label="verdict")
            judge_button.click(judge, [judge_mixture, judge_track, judge_text, judge_picture], verdict, api_name="judge")
    return demo


def example_requests() -> list[list[str]]:
    """The bundled example mixture (a dog barking over a man speaking) with a prompt for each of its sounds."""
    from promptsep_assets import EXAMPLES_DIR

    mixture = str(EXAMPLES_DIR / "example_mix.wav")
    prompt = (EXAMPLES_DIR / "example_prompt.txt").read_text().strip()
    return [[mixture, prompt, ""], [mixture, "a man speaking", ""], [mixture, "canine yapping", "0-2"]]


def theme():
    """Gradio's default look with the system's fonts (the default theme fetches Google's, which needs the web)."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def register(commands, train_commands) -> None:
    p = commands.add_parser(
        "demo",
        help="start the Gradio demo in the browser",
        description="Start the Gradio demo: upload a recording, give a prompt, hear the target and the residual. "
        "It runs offline; open the address it prints.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder (default: the embedded one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", type=Path, default=None, help="folder for the separated files (default: a temporary one)")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from separation.inference import Separator

    runner = DemoRunner(lambda: Separator.from_pretrained(args.bundle, device=args.device), args.out)
    runner.load()
    demo = build_demo(runner)
    demo.queue().launch(
        server_name=args.host, server_port=args.port, share=False, theme=theme(), allowed_paths=[str(runner.out_root)]
    )
    return 0
