"""The learning-rate schedule shared by promptsep's trainers (codec, separator, decoder fine-tune)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, steps: int, warmup: int, minutes: float, budget: float, floor: float) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps times a cosine from 1 to ``floor``
    over ``steps`` steps or a ``budget`` of minutes (``minutes``: trained so far, over all resumes;
    ``budget`` 0: none), whichever ends first."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    progress = step / max(1, steps)
    if budget:
        progress = max(progress, minutes / budget)
    progress = min(1.0, progress)
    return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
