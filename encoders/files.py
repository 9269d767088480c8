"""Files promptsep writes: created with the permissions of the user's umask, like any ordinary file.

Outputs are written to a temporary file first and renamed into place, so a failure never leaves a half-written
file. ``tempfile.mkstemp`` and safetensors both create files readable by their owner only (0600); :func:`publish`
(and so :func:`staged` and :func:`save_tensors`) gives them the mode an ordinary ``open(path, "w")`` would (0644 under the usual umask
022), so a web server, a colleague or a second account can read what a separation wrote.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import save_file

from encoders.errors import AudioError


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; read once, at import, before any threads
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def temp_beside(path: str | os.PathLike) -> str:
    """A new empty hidden file in ``path``'s folder (``.<stem>.XXXX<suffix>``), to be written and then published."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    return temp


def publish(temp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give the finished temporary file ``temp`` the umask's mode and rename it to ``path`` (atomic)."""
    os.chmod(temp, FILE_MODE)
    os.replace(temp, path)


@contextmanager
def staged(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write; on success it is published to ``path``, on any error it is
    removed, so ``path`` is either the old file or the complete new one."""
    temp = temp_beside(path)
    try:
        yield temp
        publish(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def save_tensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file``, :func:`staged` (the umask's file mode instead of safetensors' 0600)."""
    with staged(path) as temp:
        save_file(tensors, temp, metadata=metadata)
    return Path(path)


def distinct_stems(files: list[Path]) -> list[str]:
    """A name per input file for its outputs that no other input shares: its stem; where two stems are the same,
    every input's ``<parent>_<stem>``; where those are the same too, ``<parent>_<stem>_<extension>``.

    Raises:
        AudioError: the same file given twice.
    """
    for name_of in (
        lambda f: f.stem,
        lambda f: f"{f.parent.name}_{f.stem}",
        lambda f: f"{f.parent.name}_{f.stem}_{f.suffix.lstrip('.')}".rstrip("_"),
    ):
        names = [name_of(Path(f).absolute()) for f in files]
        if len(set(names)) == len(names):
            return names
    seen: set[Path] = set()
    for f in files:
        if Path(f).resolve() in seen:
            raise AudioError(f"{f} is given twice")
        seen.add(Path(f).resolve())
    raise AudioError(f"cannot name the outputs of {', '.join(map(str, files))} apart; rename one")
