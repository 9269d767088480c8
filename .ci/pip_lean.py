"""Install requirements one wheel at a time, with no pip cache.

`pip install torch==2.11.0` from PyPI brings about 3 GB of CUDA wheels. A plain install downloads every
one of them before unpacking any, and pip's cache keeps a second copy, so the disk briefly holds about
three times the wheels' size. One CI run failed that way ("No space left on device"). Here pip first
resolves the whole set without downloading it (`--dry-run --report`), then installs each resolved
package alone with `--no-deps`: the disk holds the environment plus a single wheel at any moment.

Usage: python .ci/pip_lean.py REQUIREMENT...   (the same arguments `pip install` takes)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def resolve(requirements: list[str]) -> list[str]:
    """Pin every package pip would install for `requirements`, dependencies first as pip lists them."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "plan.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--dry-run",
             "--report", str(report), *requirements],
            check=True,
        )
        plan = json.loads(report.read_text())["install"]
    return [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in plan]


def main(requirements: list[str]) -> int:
    if not requirements:
        print(__doc__)
        return 2
    pins = resolve(requirements)
    for number, pin in enumerate(pins, 1):
        print(f"[{number}/{len(pins)}] {pin}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-deps", pin],
            check=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
