"""Errors a user can cause. The CLI prints them in one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class PromptsepError(Exception):
    """Base class of every error promptsep raises on purpose (bad input, missing weights, ...)."""


class AudioError(PromptsepError):
    """An audio or video file could not be read or written; the message names the file and the problem."""


class PromptError(PromptsepError):
    """A prompt (text, image, video or span) is missing or malformed."""


class SettingError(PromptsepError, ValueError):
    """A setting (of :class:`separation.inference.InferenceConfig`) is out of its range. ``name`` is the setting's
    field name, so a front end can name its own flag for it (the CLI's ``--mask-floor`` for ``mask_floor``). Also a
    ``ValueError``, which the config raised before."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        super().__init__(f"{name} {value}: expected {expected}")
        self.name, self.value, self.expected = name, value, expected

    def flag_message(self) -> str:
        """The same message naming the command-line flag of the setting (``--mask-floor`` for ``mask_floor``)."""
        return f"--{self.name.replace('_', '-')} {self.value}: expected {self.expected}"


class WeightsError(PromptsepError):
    """Model weights or their config are missing, incomplete or of the wrong layout."""


def require_checkpoint(marker: str | Path) -> None:
    """The trainers' ``--resume`` guard: fail unless the checkpoint file ``marker`` exists (e.g.
    ``OUT/checkpoint/state.json``), so a mistyped OUT is an error instead of a silent fresh start. Call it before
    any loading or writing."""
    if not Path(marker).is_file():
        raise WeightsError(f"--resume: no checkpoint in {Path(marker).parent}; start without --resume")
