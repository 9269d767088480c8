"""Random generators keyed by names, so a rendering or a benchmark condition is the same on every run and
does not depend on the order things are drawn in."""

from __future__ import annotations

import hashlib

import numpy as np


def keyed_rng(*parts: object) -> np.random.Generator:
    """A generator seeded by the SHA-1 of ``parts`` joined with ``:`` (e.g. ``keyed_rng(seed, name)``)."""
    digest = hashlib.sha1(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
