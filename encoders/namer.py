"""Picture naming: a picture prompt becomes the text prompt of the sound category it shows, when a visual tower is
sure which one it is.

The separator reads picture embeddings less well than text ones (the shipped bundle's picture prompts trail its text
prompts by about 0.6 dB median SI-SDRi on the test split), and a visual tower trained further does not help by itself:
the separator learnt the old tower's picture embeddings (benchmarks/HISTORY.md, "The visual tower"). A namer sidesteps both. Its own
visual tower (trained apart, ``train encoders --freeze-audio``) scores the picture against every category name of the
data engine's vocabulary in the bundle's text space; when the best name beats the runner-up by at least ``margin``
(cosine), the prompt is separated as that name's text. Otherwise, as for a picture of something the vocabulary does
not name, the picture itself conditions the separator, as without a namer.

A namer folder holds ``config.json`` (margin, how it was chosen) and ``model.safetensors``: the ``video_model.*``
weights of a PE-AV checkpoint whose text side is the bundle's (the text heads are fixed, so any tower trained from the
bundle's qualifies). :func:`build_namer` writes one and derives the margin from labelled pictures.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from encoders.errors import PromptsepError, WeightsError
from encoders.files import save_tensors, staged

if TYPE_CHECKING:  # importing encoders.peav loads transformers; the separator imports this module at start
    from encoders.peav import PromptEncoder

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"  # as every bundle folder
PREFIX = "video_model."
MARGINS = (0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2)  # candidate thresholds build_namer chooses from


@dataclass
class Naming:
    """What the namer made of one picture: the best name, the runner-up's gap, and the name it gives (or None)."""

    best: str
    margin: float
    name: str | None


class PictureNamer:
    """Names pictures after the vocabulary's categories with its own visual tower (see the module docstring)."""

    def __init__(self, encoder: PromptEncoder, video_model: torch.nn.Module, margin: float, names: Sequence[str] | None = None) -> None:
        """``encoder``: the bundle's PE-AV (text side and picture preprocessing); ``video_model``: the namer's visual
        tower (a ``PeVideoModel``); ``names``: the category names (default: the data engine's vocabulary)."""
        if names is None:
            from dataengine.vocabulary import CATEGORIES

            names = sorted(CATEGORIES)
        self.encoder, self.video_model, self.margin, self.names = encoder, video_model.eval(), float(margin), list(names)
        self._name_embeddings: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, encoder: PromptEncoder) -> PictureNamer:
        """Load a namer folder for the bundle whose PE-AV is ``encoder``."""
        path = Path(path)
        for needed in (path / CONFIG_NAME, path / WEIGHTS_NAME):
            if not needed.is_file():
                raise WeightsError(f"picture namer file {needed} is missing (see `promptsep train namer --help`)")
        config = json.loads((path / CONFIG_NAME).read_text())
        state = load_file(str(path / WEIGHTS_NAME))
        video_model = copy.deepcopy(encoder._require_video())
        own = video_model.state_dict()
        stripped = {key.removeprefix(PREFIX): value for key, value in state.items()}
        expected = {key for key in encoder.trainable_state_dict() if key.startswith(PREFIX)}
        wrong = sorted(k for k, v in stripped.items() if k not in own or own[k].shape != v.shape)
        wrong += sorted(expected - set(state))  # a stored tower is whole: no weight may fall back to the bundle's
        if wrong:
            raise WeightsError(f"the picture namer's weights do not fit this bundle's visual tower (e.g. {wrong[:3]})")
        video_model.load_state_dict({k: v.to(own[k].dtype) for k, v in stripped.items()}, strict=False)
        return cls(encoder, video_model.to(encoder.device), config["margin"])

    def save(self, path: str | Path, **notes) -> Path:
        """Write ``config.json`` (the margin plus ``notes``) and the visual tower's trained weights (fp16)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        trained = self.encoder.trainable_state_dict()  # which video_model keys a bundle stores (not the fixed heads)
        weights = self.video_model.state_dict()
        state = {
            key: weights[key.removeprefix(PREFIX)].detach().cpu().to(torch.float16).contiguous()
            for key in trained
            if key.startswith(PREFIX)
        }
        save_tensors(state, path / WEIGHTS_NAME, metadata={"format": "pt", "model": "promptsep-picture-namer"})
        with staged(path / CONFIG_NAME) as tmp:
            Path(tmp).write_text(json.dumps({"margin": self.margin, **notes}, indent=2) + "\n")
        return path

    @torch.no_grad()
    def scores(self, images: Sequence) -> torch.Tensor:
        """Cosine similarity ``(B, N)`` of pictures (paths or PIL images) to each category name."""
        if self._name_embeddings is None:
            self._name_embeddings = self.encoder.embed_text(self.names, space="video")
        pictures = self.encoder.embed_video(self.encoder.image_frames(list(images)), video_model=self.video_model)
        return pictures @ self._name_embeddings.T

    def name(self, images: Sequence) -> list[Naming]:
        """The name each picture is separated as: its best category when that beats the runner-up by ``margin``."""
        top = self.scores(images).topk(2, dim=-1)
        out = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            gap = values[0] - values[1]
            best = self.names[indices[0]]
            out.append(Naming(best=best, margin=gap, name=best if gap >= self.margin else None))
        return out


def choose_margin(margins: Sequence[float], correct: Sequence[bool], precision: float) -> float:
    """The smallest of :data:`MARGINS` at which the pictures named (margin at least that) are right at least
    ``precision`` of the time; the largest when none is."""
    for threshold in MARGINS:
        named = [ok for gap, ok in zip(margins, correct, strict=True) if gap >= threshold]
        if named and sum(named) / len(named) >= precision:
            return threshold
    return MARGINS[-1]


def manifest_pictures(manifest: str | Path) -> dict[str, str]:
    """Picture path (resolved beside the manifest) -> category name, from a data-engine JSONL manifest's lines that
    have both. Raises :class:`~encoders.errors.PromptsepError` when the manifest is missing or has no such line."""
    from dataengine.manifest import read_manifest

    pictures: dict[str, str] = {}
    for row in read_manifest(manifest):
        if row.get("image") and row.get("category"):
            pictures.setdefault(row["image"], row["category"])
    if not pictures:
        raise PromptsepError(f"{manifest} has no lines with both an image and a category")
    return pictures


def build_namer(tower: str | Path, encoder: PromptEncoder, pictures: dict[str, str], precision: float, out: str | Path) -> dict:
    """Write a namer folder at ``out`` from the visual tower of the PE-AV folder ``tower``, its margin chosen on
    ``pictures`` (path -> category name) so that the pictures it names are right ``precision`` of the time.

    Returns the report stored in ``config.json``: margin, pictures, named share and precision at that margin."""
    from encoders.peav import PromptEncoder

    source = PromptEncoder.from_pretrained(tower)
    namer = PictureNamer(encoder, source._require_video(), margin=0.0)
    paths = sorted(pictures)
    namings = [n for start in range(0, len(paths), 64) for n in namer.name(paths[start : start + 64])]
    correct = [n.best == pictures[p] for n, p in zip(namings, paths, strict=True)]
    namer.margin = choose_margin([n.margin for n in namings], correct, precision)
    named = [ok for n, ok in zip(namings, correct, strict=True) if n.margin >= namer.margin]
    report = {
        "pictures": len(paths),
        "named_share": round(len(named) / max(1, len(paths)), 4),
        "precision": round(sum(named) / max(1, len(named)), 4),
        "target_precision": precision,
        "tower": str(tower),
    }
    namer.save(out, **report)
    return {"margin": namer.margin, **report}
