"""Prompted separation of whole recordings: the small API the CLI, the demo and the HTTP API call.

``Separator.separate`` takes a waveform at any sample rate and channel count and one or more prompts,
and returns one target per prompt plus a shared residual, at the input's rate, channels and length.

The pipeline per chunk (chunks overlap and are cross-faded, so memory is constant in length):
mono mixture at the model rate -> codec latents -> separator (one pass per prompt and candidate) ->
decoded target / residual -> ratio masks on the mixture's STFT (mixture-consistent, the default) ->
masks carried to the input's rate and applied to every channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from encoders.anchors import Anchor, PromptAnchors
from encoders.audio_io import load_audio, resample
from encoders.errors import AudioError, PromptError, SettingError, WeightsError
from encoders.files import publish, temp_beside
from encoders.namer import Naming, PictureNamer
from separation.masking import carry_masks, floor_masks, istft, prompt_masks, share_masks, stft
from separation.model import SPAN_OFF, SPAN_ON, SPAN_UNKNOWN, SeparatorModel
from separation.objectives import Conditioning, predict_sources
from separation.splitter import fuse_masks


@dataclass
class Prompt:
    """What to separate: text, a picture or a video of the source, and optional time spans (seconds)."""

    text: str | None = None
    image: object | None = None  # path or PIL image
    video: str | Path | None = None
    spans: Sequence[tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.text, str):
            self.text = self.text.strip() or None
        if self.text is None and self.image is None and self.video is None:
            raise PromptError("a prompt needs text, an image or a video (all were empty)")
        for span in self.spans or ():
            if len(span) != 2 or not (0 <= float(span[0]) < float(span[1])):
                raise PromptError(f"bad span {span!r}: expected (start, end) seconds with 0 <= start < end")

    def describe(self) -> str:
        parts = [f"text={self.text!r}"] if self.text else []
        parts += [f"image={Path(str(self.image)).name}"] if isinstance(self.image, (str, Path)) else []
        parts += [f"video={Path(str(self.video)).name}"] if self.video else []
        return ", ".join(parts) or "image prompt"


@dataclass
class SeparationResult:
    """Output of :meth:`Separator.separate`.

    Shape:
        targets ``(P, C, N)`` one per prompt; residual ``(C, N)``; candidates ``(P, K, C, N)`` when
        ``candidates > 1`` (targets are then the chosen candidates).
    """

    targets: torch.Tensor
    residual: torch.Tensor
    sample_rate: int
    prompts: list[Prompt]
    candidates: torch.Tensor | None = None
    chosen: list[int] = field(default_factory=list)


@dataclass
class InferenceConfig:
    """Knobs of chunked inference (seconds at the model's rate)."""

    # 16 s against 8 s (session 39, with the splitter, which picks its output once per chunk and picks better from
    # more of the recording): +0.77 dB mean SI-SDRi on 200 val 16 s mixtures (+0.13..+1.44), +0.17 on 200 test 16 s
    # ones (-0.41..+0.72); a recording of 16 s or less is one chunk. Before the splitter, 8 s led (benchmarks/RESULTS.md).
    chunk_seconds: float = 16.0
    overlap_seconds: float = 1.0
    steps: int = 8
    solver: str = "midpoint"
    mixture_consistent: bool = True
    n_fft: int = 512
    hop: int = 128
    mask_power: float = 1.0  # measured: 1.0 beats 2.0 by 0.2-0.3 dB median SI-SDRi on 40 test mixtures
    refine: bool = True  # correct the ratio masks with the bundle's mask refiner when it has one
    # Every target keeps at least this fraction of the mixture (-26 dB; separation.masking.floor_masks). Measured:
    # +0.44 dB mean SI-SDRi on 400 val mixtures and +0.08 on 600 test (the median -0.05 and +0.07) against 0.
    mask_floor: float = 0.05
    # Seconds of audio separated together: as many whole chunks as fit (at least one). Peak memory follows the audio
    # per batch, not the chunk count: 32 s (two 16 s chunks) peaked at 1676 MiB on a 60 min file, 64 s (four) at 1928
    # (session 39). A GPU can take far more.
    batch_seconds: float = 32.0
    # The model hears every chunk at this RMS level (dBFS; the middle of its training levels, -30 to -14) and
    # its estimates are scaled back, so quiet and loud recordings separate alike. None: as recorded.
    input_level_db: float | None = -20.0
    # Near-silent chunks are raised by at most this much. 60 dB reaches a -80 dBFS recording; at 30 dB (before
    # 2026-11-23), half of 150 test mixtures played 30 dB quieter changed by over 0.38 dB SI-SDRi, at 60 none moves.
    max_input_gain_db: float = 60.0
    # Each chunk is separated this many times, delayed by 0, 1/S, 2/S ... of a latent frame (40 ms), and the
    # masks of the passes are averaged (demucs' "shifts"): the codec's frame grid then falls differently on
    # each pass, and their errors partly cancel. Costs S times the separator, codec and refiner.
    shifts: int = 1
    # A text prompt is heard as the nearest training phrasing of the vocabulary when their cosine similarity in
    # the text space reaches this (encoders.anchors); a training phrasing maps to itself. None: as typed.
    # Measured with the vocabulary's held-out paraphrases as prompts, anchored against as typed: +0.70 dB mean
    # SI-SDRi on 600 test mixtures (+0.31..+1.12), +0.08 on 400 val; 0.6 instead of 0 was level on val (+0.07).
    anchor_threshold: float | None = 0.0
    # An anchored text prompt is separated with this many texts, and their masks are averaged like shifts': the
    # anchor, then for a new wording the prompt as typed, then the other phrasings of the anchor's category most
    # similar to the prompt (Separator.heard_phrasings). Costs that many times the separator, decoder and refiner
    # (not the encoder). 1: the anchor alone. Measured, 2 against 1 on training phrasings: +0.07 dB mean SI-SDRi on
    # 600 test mixtures (-0.02..+0.16), +0.04 on 400 val; 10 min RTF 0.060 against 0.039 (benchmarks/RESULTS.md).
    phrasings: int = 2
    # A picture prompt (alone, no text or video) that the bundle's picture namer names with confidence is separated
    # as the text prompt of that category (encoders.namer); others as the picture. Needs a bundle with ``namer/``.
    name_pictures: bool = True
    # With a bundle that has a splitter (separation.splitter: a class-agnostic two-output ConvTasNet), each prompt's
    # mask is joined with the splitter output closest to it as mask^(1-w) * split^w; 0 leaves it out. Measured with
    # the bundle's splitter (grown deeper, 167 CPU minutes in all), 0.5 and splitter_soft (chosen on val among 0.3
    # and 0.5), against 0: +0.59 dB mean SI-SDRi on 600 test mixtures (+0.40..+0.77), +0.89 on 200 16 s ones, +0.76
    # for picture prompts, +0.48 on a held-out source (benchmarks/RESULTS.md, "The splitter"). 0.7 replaced 0.5 by rule 40 (session
    # 40) after three independent 600-mixture test draws each gave text +0.03 to +0.04 (pictures +0.00 to +0.07).
    splitter_weight: float = 0.7
    # The splitter's weight shrinks by the ratio of the two outputs' distances to the prompt's mask (separation.splitter)
    splitter_soft: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~encoders.errors.SettingError` for the first setting out of its range. Construction calls
        it; call it again after changing fields."""
        threshold = self.anchor_threshold
        checks = (
            ("chunk_seconds", self.chunk_seconds > 0, "a positive number of seconds"),
            ("overlap_seconds", self.overlap_seconds >= 0, "a number of seconds, at least 0"),
            ("batch_seconds", self.batch_seconds > 0, "a positive number of seconds"),
            ("steps", self.steps >= 1, "a whole number of ODE steps, at least 1"),
            ("mask_floor", 0.0 <= self.mask_floor < 1.0, "a fraction in [0, 1)"),
            ("shifts", self.shifts >= 1, "a whole number of passes, at least 1"),
            ("anchor_threshold", threshold is None or -1.0 <= threshold <= 1.0, "a cosine similarity in [-1, 1]"),
            ("phrasings", self.phrasings >= 1, "a whole number, at least 1"),
            ("splitter_weight", 0.0 <= self.splitter_weight <= 1.0, "a weight in [0, 1]"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise SettingError(name, getattr(self, name), expected)

    @property
    def chunks_per_batch(self) -> int:
        """Whole chunks in ``batch_seconds`` of audio, at least one."""
        return max(1, math.floor(self.batch_seconds / self.chunk_seconds + 1e-9))


# A prompt this similar to its anchor is that training phrasing (up to case and punctuation), not a new wording.
SAME_WORDING = 0.999


def span_anchors(spans: Sequence[tuple[float, float]] | None, start_s: float, frames: int, frame_rate: float) -> torch.Tensor:
    """Per-latent-frame span anchors for a chunk starting at ``start_s`` seconds. Shape: ``(frames,)``."""
    if not spans:
        return torch.full((frames,), SPAN_UNKNOWN, dtype=torch.long)
    centers = start_s + (torch.arange(frames) + 0.5) / frame_rate
    on = torch.zeros(frames, dtype=torch.bool)
    for begin, end in spans:
        on |= (centers >= float(begin)) & (centers < float(end))
    return torch.where(on, torch.tensor(SPAN_ON), torch.tensor(SPAN_OFF))


def as_prompts(prompts: Sequence[Prompt | str] | Prompt | str | None) -> list[Prompt]:
    """A list of :class:`Prompt` from one prompt, a plain text, or a list of either; refuses an empty one."""
    items = [prompts] if isinstance(prompts, (str, Prompt)) else list(prompts or [])
    if not items:
        raise PromptError("give at least one prompt (text, image or video)")
    for item in items:
        if not isinstance(item, (str, Prompt)):
            raise PromptError(f"a prompt is a text or a Prompt, got {type(item).__name__}: {item!r:.60}")
    return [Prompt(text=item) if isinstance(item, str) else item for item in items]


def output_names(prompts: Sequence[Prompt]) -> list[str]:
    """File names of the separated tracks: ``target.wav`` (or ``target_<i>.wav`` per prompt), then ``residual.wav``."""
    if len(prompts) == 1:
        return ["target.wav", "residual.wav"]
    return [f"target_{i}.wav" for i in range(1, len(prompts) + 1)] + ["residual.wav"]


def prompts_json(prompts: Sequence[Prompt]) -> str:
    """``prompts.json`` beside several targets: which file holds which prompt."""
    import json

    return json.dumps([{"file": n, "prompt": p.describe()} for n, p in zip(output_names(prompts)[:-1], prompts, strict=True)], indent=2)


def _chunk_starts(length: int, chunk: int, step: int) -> list[int]:
    if length <= chunk:
        return [0]
    starts = list(range(0, length - chunk, step))
    starts.append(length - chunk)
    return starts


def _fade_weights(length: int, fade: int, first: bool, last: bool) -> torch.Tensor:
    weights = torch.ones(length)
    if fade > 0:
        ramp = (torch.arange(fade) + 0.5) / fade
        if not first:
            weights[:fade] = ramp
        if not last:
            weights[-fade:] = ramp.flip(0)
    return weights


class Separator:
    """Separates prompted sounds from recordings with a codec, a prompt encoder and a separator model."""

    def __init__(
        self,
        codec,
        prompt_encoder,
        model: SeparatorModel,
        config: InferenceConfig | None = None,
        device: str | torch.device = "cpu",
        judge=None,
        refiner=None,
        namer=None,
        splitter=None,
    ) -> None:
        """``judge``: optional object with ``choose(mixture (C, N), candidates (P, K, C, N), rate, prompts) -> list[int]``
        (:class:`~judge.model.Judge`).
        ``refiner``: optional :class:`~separation.refiner.MaskRefiner` that corrects the ratio masks.
        ``namer``: optional :class:`~encoders.namer.PictureNamer` (see ``InferenceConfig.name_pictures``).
        ``splitter``: optional :class:`~separation.splitter.Splitter` (see ``InferenceConfig.splitter_weight``)."""
        self.device = torch.device(device)
        self.codec = codec.to(self.device).eval()
        self.prompt_encoder = prompt_encoder
        self.model = model.to(self.device).eval()
        self.config = config or InferenceConfig()
        self.judge = judge
        if refiner is not None and refiner.config.sample_rate != codec.sample_rate:
            raise WeightsError(
                f"the mask refiner was trained at {refiner.config.sample_rate} Hz, the codec runs at {codec.sample_rate} Hz"
            )
        self.refiner = refiner.to(self.device).eval() if refiner is not None else None
        self._anchors = None  # encoders.anchors.PromptAnchors, built at the first text prompt
        self._anchor_cache: dict[str, Anchor] = {}
        self.namer = namer
        self._namings: dict[str, Naming] = {}
        if splitter is not None and splitter.sample_rate != codec.sample_rate:
            raise WeightsError(f"the splitter runs at {splitter.sample_rate} Hz, the codec at {codec.sample_rate} Hz")
        self.splitter = splitter.to(self.device) if splitter is not None else None

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu", config: InferenceConfig | None = None
    ) -> "Separator":
        """Load a bundle folder (default: the embedded bundle shipped with promptsep); its ``refiner/``
        folder, when there is one, is the mask refiner, its ``namer/`` folder the picture namer, its
        ``splitter/`` folder the splitter, and its ``judge/`` folder (which needs the splitter) the judge."""
        from encoders.codec import Codec
        from encoders.peav import PromptEncoder
        from promptsep_assets import DEFAULT_BUNDLE
        from separation.refiner import MaskRefiner
        from separation.splitter import Splitter

        bundle = Path(path) if path is not None else DEFAULT_BUNDLE
        codec = Codec.from_pretrained(bundle / "codec")
        prompt_encoder = PromptEncoder.from_pretrained(bundle / "peav", codec=codec)
        model = SeparatorModel.from_pretrained(bundle / "separator")
        refiner = MaskRefiner.from_pretrained(bundle / "refiner") if (bundle / "refiner").is_dir() else None
        namer = PictureNamer.from_pretrained(bundle / "namer", prompt_encoder) if (bundle / "namer").is_dir() else None
        splitter = Splitter.from_pretrained(bundle / "splitter") if (bundle / "splitter").is_dir() else None
        judge = None
        if (bundle / "judge").is_dir():
            from judge.model import Judge

            if splitter is None:
                raise WeightsError(f"{bundle / 'judge'}: the judge reads the bundle's splitter, and {bundle} has none")
            judge = Judge.from_pretrained(bundle / "judge", prompt_encoder, splitter)
        return cls(
            codec, prompt_encoder, model, config=config, device=device, refiner=refiner, namer=namer, splitter=splitter,
            judge=judge,
        )

    # ---------------------------------------------------------------- prompts
    def anchor(self, text: str) -> Anchor | None:
        """The training phrasing nearest to a text prompt (:mod:`encoders.anchors`); None when anchoring is off."""
        if self.config.anchor_threshold is None:
            return None
        if text not in self._anchor_cache:
            if self._anchors is None:
                self._anchors = PromptAnchors.from_vocabulary(self.prompt_encoder)
            self._anchor_cache[text] = self._anchors.nearest([text])[0]
        return self._anchor_cache[text]

    def heard_text(self, text: str) -> str:
        """What the separator hears for a text prompt: its nearest training phrasing when that is at least
        ``config.anchor_threshold`` similar, else the text as given."""
        anchor = self.anchor(text)
        if anchor is not None and anchor.similarity >= self.config.anchor_threshold:
            return anchor.phrasing
        return text

    def heard_phrasings(self, text: str) -> list[str]:
        """The ``config.phrasings`` texts an ensemble separates a text prompt with: :meth:`heard_text` first; then,
        for a new wording, the prompt as typed (a hedge against an anchor of the wrong sound), and the other
        phrasings of the anchor's category most similar to the prompt (the last repeated when the category has
        too few). A prompt that is not anchored is the one text, repeated."""
        count = max(1, self.config.phrasings)
        anchor = self.anchor(text)
        if count == 1 or anchor is None or anchor.similarity < self.config.anchor_threshold:
            texts = [self.heard_text(text)]
        else:
            texts = list(anchor.alternatives)
            if anchor.similarity < SAME_WORDING:
                texts = [texts[0], text, *texts[1:]]
        return (texts + [texts[-1]] * count)[:count]

    def naming(self, prompt: Prompt) -> Naming | None:
        """What the picture namer makes of a prompt's picture; None when the prompt is not a picture alone, the
        bundle has no namer, or ``config.name_pictures`` is off."""
        if self.namer is None or not self.config.name_pictures or prompt.image is None or prompt.text or prompt.video:
            return None
        if not isinstance(prompt.image, (str, Path)):  # a PIL image: nothing to cache it by
            return self.namer.name([prompt.image])[0]
        key = str(prompt.image)
        if key not in self._namings:
            self._namings[key] = self.namer.name([prompt.image])[0]
        return self._namings[key]

    def heard_prompt(self, prompt: Prompt) -> Prompt:
        """The prompt the separator hears: a picture the namer names becomes that category's text prompt (same
        spans); every other prompt is itself."""
        naming = self.naming(prompt)
        if naming is None or naming.name is None:
            return prompt
        return Prompt(text=naming.name, spans=prompt.spans)

    @torch.no_grad()
    def condition(self, prompts: Sequence[Prompt | str] | Prompt | str) -> list[Conditioning]:
        """Embed each prompt once (text tokens, pooled embedding); spans and frames are added per chunk.

        Each prompt's conditioning holds K rows, one per phrasing of :meth:`heard_phrasings` (K =
        ``config.phrasings`` when some text prompt is heard in more than one wording, else 1, so identical passes
        are not run): ``cond (K, E)``, ``tokens (K, L, H)``, ``token_mask (K, L)``. Prompts without text repeat
        their one row. Pictures are first named (:meth:`heard_prompt`).

        Every run starts here, so the config is checked here too (:meth:`InferenceConfig.validate`): a setting
        changed after construction is refused before any work, as at construction.

        Raises:
            SettingError: a setting of ``self.config`` is out of range.
        """
        from encoders.peav import visual_prompt_embeddings  # here: importing transformers costs seconds

        self.config.validate()
        prompts = [self.heard_prompt(p) for p in as_prompts(prompts)]
        heard = {p.text: self.heard_phrasings(p.text) for p in prompts if p.text}
        count = 1 if all(len(set(texts)) == 1 for texts in heard.values()) else self.config.phrasings
        out = []
        for prompt in prompts:
            tokens, mask = None, None
            others = visual_prompt_embeddings(self.prompt_encoder, prompt.image, prompt.video)
            if prompt.text:
                tokens, mask = self.prompt_encoder.text_states(heard[prompt.text][:count])
                texts = self.prompt_encoder.embed_text_states(tokens, mask)  # (K, E)
                cond = torch.stack([texts, *[o.expand_as(texts) for o in others]]).mean(0)
            else:
                cond = torch.stack(others).mean(0).expand(count, -1)
            cond = torch.nn.functional.normalize(cond, dim=-1)
            if tokens is None:
                tokens, mask = cond[:, None, :], torch.ones(count, 1, dtype=torch.bool)
            out.append(Conditioning(cond=cond.to(self.device), tokens=tokens.to(self.device), token_mask=mask.to(self.device)))
        return out

    # ---------------------------------------------------------------- chunks
    @torch.no_grad()
    def _separate_chunks(
        self,
        chunks: torch.Tensor,
        starts_s: list[float],
        prompts: Sequence[Prompt],
        conditions: list[Conditioning],
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Separate a batch of mono model-rate chunks.

        Shape:
            chunks ``(B, N)`` -> (target estimates ``(B, S * K, P, N)``, residual estimates ``(B, S * K, P, N)``),
            decoded waveforms at the model rate, one per shift of ``config.shifts`` (S) and phrasing (the K rows
            of each conditioning).
        """
        n_chunks, length = chunks.shape
        n_phrasings = conditions[0].cond.shape[0]
        if any(c.cond.shape[0] != n_phrasings for c in conditions):
            raise PromptError("every prompt's conditioning needs the same number of phrasings")
        n_prompts = n_phrasings * len(prompts)  # rows per chunk, phrasing-major
        delays = self._shift_delays()
        gains = self._input_gains(chunks).to(self.device).repeat_interleave(len(delays))
        chunks = self._delayed(chunks, delays)  # (B * S, N') chunk b's shifts next to each other
        batch = chunks.shape[0]
        latents = rearrange(self.codec.encode((chunks.to(self.device) * gains[:, None])[:, None]), "b d t -> b t d")
        mixture = self.model.normalize(latents)
        frames = mixture.shape[1]
        mixture = mixture.repeat_interleave(n_prompts, dim=0)
        tokens_len = max(c.tokens.shape[1] for c in conditions)
        tokens = mixture.new_zeros(batch * n_prompts, tokens_len, conditions[0].tokens.shape[-1])
        token_mask = torch.zeros(batch * n_prompts, tokens_len, dtype=torch.bool, device=self.device)
        cond = rearrange(torch.stack([c.cond for c in conditions]), "p k e -> (k p) e").repeat(batch, 1)
        spans = torch.empty(batch * n_prompts, frames, dtype=torch.long)
        for b in range(batch):
            start_s = starts_s[b // len(delays)] - delays[b % len(delays)] / self.sample_rate
            for p, (prompt, c) in enumerate(zip(prompts, conditions, strict=True)):
                frame_spans = span_anchors(prompt.spans, start_s, frames, self.codec.frame_rate)
                for k in range(n_phrasings):
                    row = b * n_prompts + k * len(prompts) + p
                    tokens[row, : c.tokens.shape[1]] = c.tokens[k]
                    token_mask[row, : c.tokens.shape[1]] = c.token_mask[k]
                    spans[row] = frame_spans
        conditioning = Conditioning(cond=cond, tokens=tokens, token_mask=token_mask, spans=spans.to(self.device))
        sources = predict_sources(
            self.model, mixture, conditioning, steps=self.config.steps, solver=self.config.solver, generator=generator
        )
        sources = self.model.denormalize(rearrange(sources, "b t (two d) -> b two t d", two=2))
        decoded = self.codec.decode(rearrange(sources, "b two t d -> (b two) d t"), length=chunks.shape[-1])
        decoded = rearrange(decoded, "(b p two) 1 n -> two b p n", b=batch, p=n_prompts, two=2)
        decoded = decoded / gains[None, :, None, None]
        decoded = torch.stack(  # undo each shift's delay
            [decoded[:, i :: len(delays), :, d : d + length] for i, d in enumerate(delays)], dim=2
        )
        decoded = rearrange(decoded, "two b s (k p) n -> two b (s k) p n", k=n_phrasings)
        return decoded[0].cpu(), decoded[1].cpu()

    def _shift_delays(self) -> list[int]:
        """Model-rate delays of the ``config.shifts`` passes: evenly spaced within one latent frame."""
        shifts = self.config.shifts  # at least 1: condition() validated the config
        return [round(i * self.codec.hop_length / shifts) for i in range(shifts)]

    def _delayed(self, chunks: torch.Tensor, delays: list[int]) -> torch.Tensor:
        """Each chunk once per delay, delayed by it and padded to a whole latent frame more.
        Shape: ``(B, N)`` -> ``(B * S, N + hop)``, or ``(B, N)`` unchanged for the single delay 0."""
        if delays == [0]:
            return chunks
        hop = self.codec.hop_length
        padded = [torch.nn.functional.pad(chunks, (d, hop - d)) for d in delays]
        return rearrange(torch.stack(padded, dim=1), "b s n -> (b s) n")

    def _input_gains(self, chunks: torch.Tensor) -> torch.Tensor:
        """Per-chunk gains that bring ``(B, N)`` chunks to ``config.input_level_db`` RMS. Shape ``(B,)``."""
        level_db = self.config.input_level_db
        if level_db is None:
            return torch.ones(chunks.shape[0])
        level = 10 ** (level_db / 20)
        floor = level * 10 ** (-self.config.max_input_gain_db / 20)
        return level / chunks.float().pow(2).mean(-1).sqrt().clamp(min=floor)

    def mask_stft(self) -> tuple[int, int]:
        """``n_fft`` and ``hop`` of the model-rate STFT the masks are drawn on (the refiner's when it is used)."""
        if self.refiner is not None and self.config.refine:
            return self.refiner.config.n_fft, self.refiner.config.hop
        return self.config.n_fft, self.config.hop

    def masks(
        self,
        mixture: torch.Tensor,
        targets: torch.Tensor,
        residuals: torch.Tensor,
        cond: torch.Tensor | None = None,
        split: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-prompt masks on the model-rate mixture's STFT (:meth:`mask_stft`), scaled to sum to at most one:
        the refiner's when the bundle has one (and ``config.refine``), else the plain ratio masks of
        :func:`~separation.masking.prompt_masks`; joined with the splitter's (``split``, from
        :meth:`~separation.splitter.Splitter.masks`) when given; raised to ``config.mask_floor``.

        Shape:
            mixture ``(N,)`` mono at the model rate; targets, residuals ``(P, N)``; cond ``(P, E)`` the pooled
            prompt embeddings (read by a prompt-conditioned refiner) -> ``(P, F, frames)``.
        """
        cfg = self.config
        n_fft, hop = self.mask_stft()
        if self.refiner is None or not cfg.refine:
            masks = prompt_masks(targets, residuals, n_fft, hop, cfg.mask_power)
        else:
            device = self.device
            cond = cond.to(device) if cond is not None else None
            masks = share_masks(self.refiner.masks(mixture.to(device), targets.to(device), residuals.to(device), cond).cpu())
        if split is not None:
            masks = share_masks(fuse_masks(masks.cpu(), *split, cfg.splitter_weight, cfg.splitter_soft))
        return floor_masks(masks, cfg.mask_floor)

    def _apply(
        self,
        mix_chunk: torch.Tensor,
        model_chunk: torch.Tensor,
        targets: torch.Tensor,
        residuals: torch.Tensor,
        rate: int,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Turn decoded estimates of one chunk into per-prompt targets at the input rate.

        Shape:
            mix_chunk ``(C, L)`` at ``rate``; model_chunk ``(N,)`` its mono mix at the model rate;
            targets/residuals ``(S, P, N)``, one per shift; cond ``(P, E)`` pooled prompt embeddings
            -> ``(P, C, L)``. The shifts' masks are averaged; only the plain decode (not mixture-consistent)
            averages waveforms, where a codec that does not keep phase partly cancels itself.
        """
        cfg = self.config
        channels, length = mix_chunk.shape
        if not cfg.mixture_consistent:
            out = resample(targets.mean(0), self.sample_rate, rate)[..., :length]
            out = torch.nn.functional.pad(out, (0, length - out.shape[-1]))
            return out[:, None].expand(-1, channels, -1).clone()
        ratio = rate / self.sample_rate
        # a recording shorter than one STFT window (a few dozen ms) is zero-padded to one, as its STFT needs
        mask_fft, mask_hop = self.mask_stft()
        short = mask_fft - model_chunk.shape[-1]
        if short > 0:
            model_chunk = F.pad(model_chunk, (0, short))
            targets, residuals = F.pad(targets, (0, short)), F.pad(residuals, (0, short))
            mix_chunk = F.pad(mix_chunk, (0, max(0, math.ceil(model_chunk.shape[-1] * ratio) - length)))
        split = None
        if self.splitter is not None and cfg.splitter_weight > 0:
            split = self.splitter.masks(model_chunk, mask_fft, mask_hop)  # once per chunk, shared by the shifts
        masks = torch.stack([self.masks(model_chunk, t, r, cond, split) for t, r in zip(targets, residuals, strict=True)]).mean(0)
        n_fft, hop = max(16, round(mask_fft * ratio)), max(4, round(mask_hop * ratio))
        spec = stft(mix_chunk, n_fft, hop)  # (C, F, T)
        masks = carry_masks(masks, spec.shape[-2], spec.shape[-1])
        return istft(masks[:, None] * spec[None], n_fft, hop, mix_chunk.shape[-1])[..., :length]

    # ---------------------------------------------------------------- public
    @torch.no_grad()
    def separate(
        self,
        audio: torch.Tensor | str | Path,
        sample_rate: int | None = None,
        prompts: Sequence[Prompt | str] | Prompt | str | None = None,
        candidates: int = 1,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> SeparationResult:
        """Separate one target per prompt and a shared residual.

        Args:
            audio: waveform ``(C, N)`` or ``(N,)`` at ``sample_rate``, or a path (audio or video file).
            prompts: a :class:`Prompt` or a plain text, or a list of either (one target each).
            candidates: k > 1 produces k candidates per prompt (different noise for the flow
                objective, shifted chunk grids for regression); the judge, when loaded, picks one.
            seed: seeds the flow sampler (outputs are deterministic for a seed).
            progress: called as ``progress(done, total)`` after each batch of chunks.

        Returns:
            :class:`SeparationResult`; targets and residual keep the input's rate, channels, length,
            and ``targets.sum(0) + residual == mixture`` up to float rounding.
        """
        if isinstance(audio, (str, Path)):
            audio, sample_rate = load_audio(audio)
        if sample_rate is None:
            raise PromptError("separate() needs the sample rate of a waveform input")
        prompts = as_prompts(prompts)
        if candidates < 1:
            raise PromptError("candidates must be at least 1")
        wav = audio[None] if audio.dim() == 1 else audio
        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise AudioError(f"separate() expects a waveform (N,) or (C, N) with samples, got shape {tuple(audio.shape)}")
        wav = wav.float()
        if not torch.isfinite(wav).all():
            raise AudioError("separate(): the waveform contains NaN or Inf samples")
        conditions = self.condition(prompts)
        runs = []
        for k in range(candidates):
            shift = 0 if k == 0 or self.model.config.objective == "flow" else round(
                k * self.config.overlap_seconds * sample_rate / candidates
            )
            runs.append(self._separate_whole(wav, sample_rate, prompts, conditions, seed + k, shift, progress))
        stacked = torch.stack(runs, dim=1)  # (P, K, C, N)
        chosen = [0] * len(prompts)
        if candidates > 1 and self.judge is not None:
            chosen = self.judge.choose(wav, stacked, sample_rate, prompts)
        targets = torch.stack([stacked[p, chosen[p]] for p in range(len(prompts))])
        residual = wav - targets.sum(0)
        return SeparationResult(
            targets=targets,
            residual=residual,
            sample_rate=sample_rate,
            prompts=prompts,
            candidates=stacked if candidates > 1 else None,
            chosen=chosen,
        )

    def _separate_whole(
        self,
        wav: torch.Tensor,
        rate: int,
        prompts: Sequence[Prompt],
        conditions: list[Conditioning],
        seed: int,
        shift: int,
        progress: Callable[[int, int], None] | None,
    ) -> torch.Tensor:
        """Chunk, separate and cross-fade one pass. Shape: ``(C, N)`` -> targets ``(P, C, N)``."""
        channels, length = wav.shape

        def read(start: int, end: int) -> torch.Tensor:
            return wav[:, start:end]

        out = torch.zeros(len(prompts), channels, length)
        for start, targets, _ in self.stream(read, length, rate, channels, prompts, conditions, seed, shift, progress):
            out[..., start : start + targets.shape[-1]] = targets
        return out

    def stream(
        self,
        read: Callable[[int, int], torch.Tensor],
        length: int,
        rate: int,
        channels: int,
        prompts: Sequence[Prompt],
        conditions: list[Conditioning],
        seed: int = 0,
        shift: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ):
        """Separate a recording read piece by piece; yields finished
        ``(start, targets (P, C, n), mixture (C, n))`` in order.

        ``read(start, end)`` returns samples ``[start, end)`` of the mixture as ``(C, end - start)``;
        each sample is read once per chunk that covers it, and never again for the residual.
        Only a few chunks are held at a time, so memory does not grow with ``length``. ``shift``
        delays the chunk grid by that many samples (another candidate for the judge).
        """
        cfg = self.config
        total = length + shift
        chunk = max(1, round(cfg.chunk_seconds * rate))
        fade = min(round(cfg.overlap_seconds * rate), chunk // 2)
        starts = _chunk_starts(total, chunk, chunk - fade)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        prompt_cond = torch.cat([c.cond[:1] for c in conditions])  # (P, E), the first phrasing's
        hop = self.codec.hop_length
        base = 0  # padded position of out[..., 0]
        out = torch.zeros(len(prompts), channels, 0)
        mixture = torch.zeros(channels, 0)
        weight_sum = torch.zeros(0)

        def read_padded(start: int, end: int) -> torch.Tensor:
            lead = max(0, shift - start)
            piece = read(max(0, start - shift), end - shift) if end > shift else torch.zeros(channels, 0)
            return torch.nn.functional.pad(piece.float(), (lead, 0))

        per_batch = cfg.chunks_per_batch
        for first in range(0, len(starts), per_batch):
            batch_starts = starts[first : first + per_batch]
            mix_chunks = [read_padded(s, min(s + chunk, total)) for s in batch_starts]
            model_chunks = [resample(c.mean(0), rate, self.sample_rate) for c in mix_chunks]
            model_len = math.ceil(max(c.shape[-1] for c in model_chunks) / hop) * hop
            batch = torch.stack([torch.nn.functional.pad(c, (0, model_len - c.shape[-1])) for c in model_chunks])
            starts_s = [(s - shift) / rate for s in batch_starts]
            targets, residuals = self._separate_chunks(batch, starts_s, prompts, conditions, generator)
            end = max(s + c.shape[-1] for s, c in zip(batch_starts, mix_chunks, strict=True))
            grow = end - base - out.shape[-1]
            if grow > 0:
                out = torch.nn.functional.pad(out, (0, grow))
                mixture = torch.nn.functional.pad(mixture, (0, grow))
                weight_sum = torch.nn.functional.pad(weight_sum, (0, grow))
            for i, s in enumerate(batch_starts):
                mix_chunk = mix_chunks[i]
                n_model = model_chunks[i].shape[-1]
                pieces = self._apply(
                    mix_chunk, model_chunks[i], targets[i, ..., :n_model], residuals[i, ..., :n_model], rate, prompt_cond
                )
                w = _fade_weights(mix_chunk.shape[-1], fade, s == 0, s + chunk >= total)
                region = slice(s - base, s - base + mix_chunk.shape[-1])
                out[..., region] += pieces * w
                mixture[..., region] = mix_chunk
                weight_sum[region] += w
            following = first + per_batch
            done = starts[following] if following < len(starts) else total
            finished = out[..., : done - base] / weight_sum[: done - base].clamp(min=1e-8)
            if done > shift:  # drop the delay's leading samples
                skip = max(0, shift - base)
                yield base + skip - shift, finished[..., skip:], mixture[..., skip : done - base]
            out, weight_sum = out[..., done - base :].clone(), weight_sum[done - base :].clone()
            mixture = mixture[..., done - base :].clone()
            base = done
            if progress is not None:
                progress(min(following, len(starts)), len(starts))

    @torch.no_grad()
    def separate_file(
        self,
        path: str | Path,
        prompts: Sequence[Prompt] | Prompt | str,
        folder: str | Path,
        progress: Callable[[int, int], None] | None = None,
        block_seconds: float = 60.0,
    ) -> list[Path]:
        """Separate an audio file straight to ``folder`` (``target.wav`` or ``target_<i>.wav``, and
        ``residual.wav``) with memory that does not grow with the recording's length.

        Files soundfile can read are streamed a block at a time; other inputs (video soundtracks)
        are decoded whole first. Outputs appear only when complete (temporary files, then rename).
        """

        import soundfile as sf

        from encoders.audio_io import load_audio

        prompts = as_prompts(prompts)
        path, folder = Path(path), Path(folder)
        source = None
        try:
            source = sf.SoundFile(str(path))
            rate, channels, length = source.samplerate, source.channels, source.frames
        except (sf.LibsndfileError, RuntimeError, ValueError):
            wav, rate = load_audio(path)  # raises a clear AudioError for unreadable input
            channels, length = wav.shape
        if length <= 0:
            raise AudioError(f"{path}: zero-length audio (no samples)")
        conditions = self.condition(prompts)
        names = output_names(prompts)
        created = [parent for parent in (folder, *folder.parents) if not parent.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        temps = [temp_beside(folder / name) for name in names]
        block_start, block = 0, torch.zeros(channels, 0)

        def read(start: int, end: int) -> torch.Tensor:
            """Samples ``[start, end)``, from a block of ``block_seconds`` read ahead from the file."""
            nonlocal block_start, block
            if source is None:
                return wav[:, start:end]
            if not (block_start <= start and end <= block_start + block.shape[-1]):
                source.seek(start)
                size = min(max(end - start, round(block_seconds * rate)), length - start)
                data = source.read(size, dtype="float32", always_2d=True).T
                if not np.isfinite(data).all():
                    raise AudioError(f"{path}: audio contains NaN or Inf samples")
                block_start, block = start, torch.from_numpy(np.ascontiguousarray(data))
            return block[:, start - block_start : end - block_start]

        writers = [sf.SoundFile(t, "w", samplerate=rate, channels=channels, format="WAV", subtype="FLOAT") for t in temps]
        try:
            for _, targets, mixture in self.stream(read, length, rate, channels, prompts, conditions, progress=progress):
                for writer, target in zip(writers[:-1], targets, strict=True):
                    writer.write(target.T.numpy())
                writers[-1].write((mixture - targets.sum(0)).T.numpy())
            for writer in writers:
                writer.close()
            written = []
            for temp, name in zip(temps, names, strict=True):
                publish(temp, folder / name)
                written.append(folder / name)
        except BaseException:
            for writer in writers:
                writer.close()
            for temp in temps:
                Path(temp).unlink(missing_ok=True)
            for parent in created:  # the folders this call made, innermost first, unless something else is in them
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
            raise
        finally:
            if source is not None:
                source.close()
        if len(prompts) > 1:
            (folder / "prompts.json").write_text(prompts_json(prompts))
        return written
