"""The default model bundle and bundled examples, shipped as package data.

A bundle is one folder with a sub-folder per component (``codec/``, ``peav/``, ``separator/``,
``refiner/``, ``judge/``; the last two optional), each holding ``config.json`` and ``model.safetensors``.
"""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
DEFAULT_BUNDLE = ASSETS_DIR / "default"
EXAMPLES_DIR = ASSETS_DIR / "examples"
