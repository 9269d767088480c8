"""The judge: how good is a separated track for its prompt, from what can be read off (mixture, track, prompt).

Its score is a regression of the track's SI-SDR against the prompted sound, in dB, from eight features. It ranks
tracks (Spearman 0.49 with the true SI-SDR of separated targets on 300 test mixtures) but is not an estimate of one
track's SI-SDR: the predictions are pulled toward the mean (their mean absolute error, 6.5 dB, is no better than the
mean's). The features:

- **alignment** (DESIGN's judge): the cosine of the track's PE-AV audio embedding with the prompt's, the same for
  the rest of the mixture (mixture - track) and for the mixture, and the first minus the second;
- **agreement with the splitter**: the bundle's class-agnostic two-output splitter (``separation.splitter``) cuts
  the mixture into two sounds; a track that follows one of them closely (the ratio of the power-weighted distances
  of its ratio mask to the nearer and the farther output is small) is a cleanly cut source. On 400 val mixtures this
  ratio alone ranks separations with Spearman -0.53 against SI-SDRi, alignment +0.15 (benchmarks/HISTORY.md,
  "Before the judge");
- **mask sharpness** (power-weighted ``m (1 - m)`` of the track's ratio mask) and the track's **log energy share**.

A ridge regression fitted on the data engine's val mixtures (``promptsep train judge``) maps them to dB; its weights
are the bundle's ``judge/`` folder (``config.json`` + ``model.safetensors``, a few hundred bytes). Long recordings are
read in chunks, so memory stays flat.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from encoders.audio_io import resample
from encoders.errors import AudioError, PromptError, WeightsError
from encoders.files import save_tensors
from encoders.peav import visual_prompt_embeddings
from separation.masking import stft

FEATURES = (
    "align_track",
    "align_rest",
    "align_mixture",
    "align_track_minus_rest",
    "splitter_ratio",
    "mask_sharpness",
    "log_share",
    "splitter_ratio_x_align",
)


@dataclass
class JudgeConfig:
    n_fft: int = 512
    hop: int = 128
    chunk_seconds: float = 16.0
    sample_rate: int = 16000
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    alpha: float = 1.0  # ridge penalty on the standardised features
    fitted_on: str = ""


@dataclass
class JudgeScore:
    """One track's verdict: ``overall`` its score on the dB scale of SI-SDR against the prompted sound (for
    ranking); ``alignment`` the cosine of its embedding with the prompt's; ``features`` every input, by name."""

    overall: float
    alignment: float
    features: dict[str, float]

    def to_dict(self) -> dict:
        return {"overall": round(self.overall, 3), "alignment": round(self.alignment, 4),
                "features": {k: round(v, 4) for k, v in self.features.items()}}


class Judge:
    """Scores separated tracks against their prompt (:meth:`score`) and picks among candidates (:meth:`choose`)."""

    def __init__(self, encoder, splitter, config: JudgeConfig | None = None, weights: dict[str, Tensor] | None = None):
        self.encoder = encoder
        self.splitter = splitter
        self.config = config or JudgeConfig()
        if encoder.sample_rate != self.config.sample_rate or splitter.sample_rate != self.config.sample_rate:
            raise WeightsError(
                f"the judge reads {self.config.sample_rate} Hz; the PE-AV tower runs at {encoder.sample_rate} Hz and "
                f"the splitter at {splitter.sample_rate} Hz"
            )
        n = len(self.config.features)
        weights = weights or {"mean": torch.zeros(n), "std": torch.ones(n), "coef": torch.zeros(n), "bias": torch.zeros(1)}
        if any(weights[k].shape[-1] != n for k in ("mean", "std", "coef")):
            raise WeightsError(f"judge weights do not match its {n} features")
        self.weights = {k: v.float() for k, v in weights.items()}

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def prompt_embedding(self, prompt) -> Tensor:
        """The prompt's embedding ``(E,)``: its text's, its picture's, or their normalised mean when it has both."""
        embeds = visual_prompt_embeddings(self.encoder, prompt.image, prompt.video)
        if prompt.text:
            embeds.insert(0, self.encoder.embed_text([prompt.text]))
        if not embeds:
            raise PromptError("the judge needs a prompt with text, an image or a video")
        mean = torch.cat(embeds).mean(0)
        return mean / mean.norm().clamp(min=1e-12)

    @torch.no_grad()
    def features(self, mixture: Tensor, tracks: Tensor, prompt_embedding: Tensor) -> Tensor:
        """Features ``(K, len(FEATURES))`` of each track in ``tracks (K, N)`` for one mono mixture ``(N,)`` at the
        judge's rate and one prompt embedding ``(E,)``; with several, ``(Q, E)``, the tracks are read once and the
        features come out ``(Q, K, len(FEATURES))``."""
        cfg = self.config
        mixture, tracks = mixture.float().cpu(), tracks.float().cpu()
        if tracks.dim() != 2 or mixture.dim() != 1 or tracks.shape[-1] != mixture.shape[-1]:
            raise AudioError(f"expected tracks (K, N) of the mixture's length, got {tuple(tracks.shape)} and {tuple(mixture.shape)}")
        if mixture.shape[-1] < cfg.n_fft:
            pad = cfg.n_fft - mixture.shape[-1]
            mixture, tracks = torch.nn.functional.pad(mixture, (0, pad)), torch.nn.functional.pad(tracks, (0, pad))
        chunk = round(cfg.chunk_seconds * cfg.sample_rate)
        k = tracks.shape[0]
        near, far, sharp, total = torch.zeros(k), torch.zeros(k), torch.zeros(k), torch.zeros(())
        for start in range(0, mixture.shape[-1], chunk):
            mix = mixture[start : start + chunk]
            if mix.shape[-1] < cfg.n_fft:  # a tail shorter than one window: the previous chunks speak for it
                continue
            part = tracks[:, start : start + chunk]
            split, power = self.splitter.masks(mix, cfg.n_fft, cfg.hop)
            mags = stft(torch.cat([part, mix[None] - part]), cfg.n_fft, cfg.hop).abs()
            mask = mags[:k] / (mags[:k] + mags[k:]).clamp(min=1e-8)  # (K, F, T)
            distance = ((mask[:, None] - split[None]).square() * power).flatten(2).sum(-1)  # (K, 2)
            near += distance.min(1).values
            far += distance.max(1).values
            sharp += (mask * (1 - mask) * power).flatten(1).sum(-1)
            total += power.sum()
        total = total.clamp(min=1e-12)
        ratio = near / far.clamp(min=1e-12)
        share = tracks.square().sum(-1) / mixture.square().sum().clamp(min=1e-12)
        embeds = torch.stack(
            [self.encoder.embed_long_audio(x[None]).cpu() for x in (*tracks, *(mixture[None] - tracks), mixture)]
        )
        align = prompt_embedding.cpu().float() @ embeds.T  # (..., 2K + 1)
        align_track, align_rest = align[..., :k], align[..., k : 2 * k]
        ratio = ratio.expand_as(align_track)
        columns = {
            "align_track": align_track,
            "align_rest": align_rest,
            "align_mixture": align[..., -1:].expand_as(align_track),
            "align_track_minus_rest": align_track - align_rest,
            "splitter_ratio": ratio,
            "mask_sharpness": (sharp / total).expand_as(align_track),
            "log_share": torch.log10(share.clamp(min=1e-6)).expand_as(align_track),
            "splitter_ratio_x_align": ratio * (align_track - align_rest),
        }
        return torch.stack([columns[name] for name in cfg.features], dim=-1)

    def predict(self, features: Tensor) -> Tensor:
        """The score in dB of feature rows ``(K, F)``."""
        w = self.weights
        return ((features - w["mean"]) / w["std"]) @ w["coef"] + w["bias"]

    # ------------------------------------------------------------------ public
    def score(self, mixture: Tensor, tracks: Tensor, rate: int, prompt) -> list[JudgeScore]:
        """Score each track of ``tracks (K, C, N)`` or ``(K, N)`` (any channels; read as mono) separated from
        ``mixture (C, N)`` or ``(N,)`` at ``rate`` for ``prompt`` (a :class:`~separation.inference.Prompt` or a text)."""
        from separation.inference import as_prompts

        prompts = as_prompts(prompt)
        if len(prompts) != 1:
            raise PromptError(f"the judge scores tracks for one prompt at a time, got {len(prompts)}")
        prompt = prompts[0]
        mixture = mixture.float()
        mixture = mixture.mean(0) if mixture.dim() == 2 else mixture
        tracks = tracks.float()
        tracks = tracks.mean(1) if tracks.dim() == 3 else tracks
        if tracks.dim() != 2 or tracks.shape[-1] != mixture.shape[-1]:
            raise AudioError(
                f"each track needs the mixture's length ({mixture.shape[-1]} samples); got tracks of shape {tuple(tracks.shape)}"
            )
        mixture = resample(mixture, rate, self.config.sample_rate)
        tracks = resample(tracks, rate, self.config.sample_rate)
        features = self.features(mixture, tracks, self.prompt_embedding(prompt))
        overall = self.predict(features)
        index = self.config.features.index("align_track")
        return [
            JudgeScore(float(overall[i]), float(features[i, index]), dict(zip(self.config.features, features[i].tolist(), strict=True)))
            for i in range(tracks.shape[0])
        ]

    def choose(self, mixture: Tensor, candidates: Tensor, rate: int, prompts: Sequence) -> list[int]:
        """The best candidate per prompt: ``candidates (P, K, C, N)`` separated from ``mixture (C, N)``."""
        chosen = []
        for p, prompt in enumerate(prompts):
            overall = [score.overall for score in self.score(mixture, candidates[p], rate, prompt)]
            chosen.append(overall.index(max(overall)))
        return chosen

    # ------------------------------------------------------------------ fitting and files
    def fit(self, features: Tensor, targets: Tensor, alpha: float | None = None) -> Judge:
        """Fit the ridge regression of ``targets (M,)`` (dB) on ``features (M, F)``, in place."""
        alpha = self.config.alpha if alpha is None else alpha
        features, targets = features.double(), targets.double()
        mean, std = features.mean(0), features.std(0).clamp(min=1e-8)
        x = (features - mean) / std
        bias = targets.mean()
        gram = x.T @ x + alpha * torch.eye(x.shape[1], dtype=x.dtype)
        coef = torch.linalg.solve(gram, x.T @ (targets - bias))
        self.config.alpha = alpha
        self.weights = {"mean": mean.float(), "std": std.float(), "coef": coef.float(), "bias": bias.float().reshape(1)}
        return self

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        save_tensors({k: v.contiguous() for k, v in self.weights.items()}, path / "model.safetensors")
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, encoder, splitter) -> Judge:
        """Load a ``judge/`` folder; ``encoder`` and ``splitter`` are the bundle's (the judge stores neither)."""
        path = Path(path)
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise WeightsError(f"{path / name}: missing (a judge folder holds config.json and model.safetensors)")
        data = json.loads((path / "config.json").read_text())
        config = JudgeConfig(**{k: v for k, v in data.items() if k in JudgeConfig.__dataclass_fields__})
        unknown = set(config.features) - set(FEATURES)
        if unknown:
            raise WeightsError(f"{path}: unknown judge features {sorted(unknown)}")
        return cls(encoder, splitter, config, load_file(str(path / "model.safetensors")))
