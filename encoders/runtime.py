"""Process-wide CPU settings for inference.

The codec's first layers hold a few channels at the full audio rate, so one 10 s clip makes activations of
5 MB each, freed and allocated again a few dozen times per call. glibc serves blocks that size with fresh
``mmap`` pages (or trims them off the heap when freed), and touching new pages costs about as much as the
convolutions themselves. :func:`keep_freed_memory` raises glibc's thresholds once per process so those
blocks come back from the heap instead.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD_MB = 32
"""Blocks below this size come from the heap (glibc's ``M_MMAP_THRESHOLD``; its default starts at 128 KiB and
rises with use to at most 32 MiB, the largest value glibc accepts)."""

TRIM_THRESHOLD_MB = 64
"""Free memory kept at the top of the heap before it goes back to the system (``M_TRIM_THRESHOLD``; glibc keeps
twice the current mmap threshold, so 10 MiB once 5 MB blocks are freed: two freed activations are already handed
back, and the next two fault their pages in again)."""

OPT_OUT_ENV = "PROMPTSEP_KEEP_FREED_MEMORY"
"""Set to ``0`` to leave glibc's allocator as it is."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); True when they are set.

    Does nothing (False) off glibc (macOS, Windows, musl) or when ``PROMPTSEP_KEEP_FREED_MEMORY=0``.
    Values are unchanged; only allocation gets cheaper. Memory the process has freed stays in it, up to
    :data:`TRIM_THRESHOLD_MB` above what it uses, which the separation benchmark's peak RSS includes.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(OPT_OUT_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return _applied
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on (no library search)
    except (OSError, AttributeError):  # not glibc
        return _applied
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MB << 20)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_MB << 20)
    )
    return _applied
