"""The process-wide allocator setting (``encoders.runtime``), checked in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Rounds of four 5 MB blocks, filled, then freed, with glibc's own malloc: the pattern of the codec's first
# layers on a 10 s clip. By default glibc hands the freed 20 MB back (above its trim threshold of twice the
# block size) and the next round faults every page in again; counts the page faults of ten rounds.
PROBE = """
import ctypes, json, resource
from encoders.runtime import keep_freed_memory
applied = [keep_freed_memory(), keep_freed_memory()]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def one_round():
    blocks = [libc.malloc(5 << 20) for _ in range(4)]
    for block in blocks:
        libc.memset(block, 1, 5 << 20)
    for block in blocks:
        libc.free(block)
one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    one_round()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(opt_out: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PROMPTSEP_KEEP_FREED_MEMORY"}
    if opt_out:
        env["PROMPTSEP_KEEP_FREED_MEMORY"] = "0"
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_reuses_large_blocks_and_honours_the_opt_out():
    tuned, default = _probe(opt_out=False), _probe(opt_out=True)
    assert tuned["applied"] == [True, True]
    assert default["applied"] == [False, False]
    pages = (20 << 20) // os.sysconf("SC_PAGE_SIZE")  # per round
    # default glibc: about one fault per page and round
    assert default["faults"] >= 5 * pages
    # tuned, the freed blocks come back from the heap with their pages already there
    assert tuned["faults"] < pages // 10
