"""Prompt anchoring: a text prompt worded unlike any training prompt is read as the nearest one.

The separator learnt its text conditioning from a fixed set of phrasings per category (the data engine's
vocabulary, :func:`~dataengine.vocabulary.paraphrase`). A user's own wording of the same sound ("a
gentleman speaks" for "a man speaking") lands elsewhere in the text space, and the separator follows
it less well: on 400 validation mixtures, the vocabulary's held-out paraphrases cost 0.73 dB mean
SI-SDRi against the training phrasings (benchmarks/RESULTS.md, "Unseen wordings").

:class:`PromptAnchors` embeds every training phrasing once with the bundle's own text tower and maps a
prompt to its nearest phrasing by cosine similarity in the shared space. The separator then hears that
phrasing when the similarity reaches a threshold; a prompt that already is a training phrasing maps
to itself (similarity 1), so it is unchanged. The check is on the text after
:func:`~encoders.prompts.canonical_text_prompt`, as the tower reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from encoders.errors import PromptError


@dataclass(frozen=True)
class Anchor:
    """The training phrasing nearest to a prompt."""

    prompt: str  # as given
    phrasing: str  # the nearest training phrasing
    category: str  # its category
    similarity: float  # cosine in the prompt encoder's text space, in [-1, 1]
    alternatives: tuple[str, ...] = ()  # its category's phrasings, most similar to the prompt first (``phrasing`` first)


class PromptAnchors:
    """The training phrasings of a vocabulary, embedded once, and nearest-phrasing lookup.

    Args:
        prompt_encoder: a :class:`~encoders.peav.PromptEncoder` (its ``embed_text`` is the space compared in).
        phrasings: the training prompts; ``categories``: the category of each.
    """

    def __init__(self, prompt_encoder, phrasings: Sequence[str], categories: Sequence[str], batch: int = 128) -> None:
        if not phrasings or len(phrasings) != len(categories):
            raise PromptError(f"anchors need phrasings and one category each (got {len(phrasings)} and {len(categories)})")
        self.prompt_encoder = prompt_encoder
        self.phrasings = list(phrasings)
        self.categories = list(categories)
        with torch.no_grad():
            self.embeddings = torch.cat(
                [prompt_encoder.embed_text(self.phrasings[i : i + batch]).float() for i in range(0, len(self.phrasings), batch)]
            )

    @classmethod
    def from_vocabulary(cls, prompt_encoder) -> PromptAnchors:
        """Anchors on every training phrasing of the data engine's vocabulary (never the held-out ones)."""
        from dataengine.vocabulary import CATEGORIES

        pairs = [(p, name) for name, c in CATEGORIES.items() for p in c.phrasings]
        return cls(prompt_encoder, [p for p, _ in pairs], [n for _, n in pairs])

    @torch.no_grad()
    def nearest(self, texts: Sequence[str]) -> list[Anchor]:
        """The nearest training phrasing of each text prompt, with the other phrasings of its category ranked."""
        texts = list(texts)
        if not texts:
            return []
        sims = self.prompt_encoder.embed_text(texts).float().to(self.embeddings.device) @ self.embeddings.T
        best = sims.max(dim=1)
        out = []
        for text, row, j, score in zip(texts, sims, best.indices.tolist(), best.values.tolist(), strict=True):
            category = self.categories[j]
            ranked = [self.phrasings[k] for k in row.argsort(descending=True).tolist() if self.categories[k] == category]
            out.append(Anchor(text, self.phrasings[j], category, float(score), tuple(dict.fromkeys([self.phrasings[j], *ranked]))))
        return out
