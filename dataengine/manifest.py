"""Reading the data engine's JSONL manifests (one mixture per line; see DESIGN's manifest format)."""

from __future__ import annotations

import json
from pathlib import Path

from encoders.errors import PromptsepError

PATH_KEYS = ("audio", "image", "video", "target", "residual")


class ManifestMissing(PromptsepError, FileNotFoundError):
    """A manifest file that does not exist (the CLI prints it as one line; callers may catch FileNotFoundError)."""


def resolve_row(row: dict, root: Path) -> dict:
    """A manifest line with its path fields (``PATH_KEYS``) made absolute against ``root``.

    Empty or null paths stay ``None``; absolute paths are kept as they are.
    """
    out = dict(row)
    for key in PATH_KEYS:
        value = row.get(key)
        if value:
            path = Path(value)
            out[key] = str(path if path.is_absolute() else (root / path))
        else:
            out[key] = None
    return out


def read_manifest(path: str | Path, limit: int | None = None, resolve: bool = True) -> list[dict]:
    """The lines of a JSONL manifest, at most ``limit``; ``resolve``: paths made relative to its folder
    (:func:`resolve_row`), else the lines as written.

    Raises :class:`ManifestMissing` naming the file when it does not exist and ``ValueError`` naming the line number
    for a line that is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestMissing(f"manifest {path} does not exist (build the data with `promptsep data build`)")
    rows: list[dict] = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object per line")
            rows.append(resolve_row(row, path.parent) if resolve else row)
            if limit is not None and len(rows) >= limit:
                break
    return rows
