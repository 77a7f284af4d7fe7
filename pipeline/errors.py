"""The owner side's error type, and its policy for bad input files."""

from __future__ import annotations

import enum

from contract.errors import UserError
from contract.formats import Skip


class PipelineError(UserError):
    """A problem with the owner's input or files, reported in one line without a traceback."""


class OnError(enum.Enum):
    """What the encrypt stage does with an input it cannot use: stop (``fail``), or ``skip`` it and
    record it (the store keeps an empty slot, label 255, in its place)."""

    FAIL = "fail"
    SKIP = "skip"

    def handle(self, skip: Skip, raw: str) -> Skip:
        """The skip record to keep; raises PipelineError naming the file under ``raw`` when failing."""
        if self is OnError.FAIL:
            raise PipelineError(f"{raw.rstrip('/')}/{skip.file}: {skip.reason}")
        return skip
