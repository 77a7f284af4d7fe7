"""The one error type that bad input raises, and how every entry point reports it: one line, exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input, files or storage, reported as one line without a traceback."""


class FormatError(UserError):
    """A stored object that is not what its format says (damaged, foreign or of another version)."""


def quoted(name: object) -> str:
    """``name`` as it may stand in a one-line message: control characters (a newline in a file name
    could start a second line of the attacker's choosing) are shown escaped."""
    return one_line(str(name))


def one_line(text: str) -> str:
    """``text`` with every control character escaped (``\\n`` for a newline, ``\\x1b`` for escape)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _storage_errors() -> tuple[type[BaseException], ...]:
    """Errors of the storage layer that a user causes: missing files and permissions, missing credentials."""
    errors: tuple[type[BaseException], ...] = (OSError,)
    try:  # present with s3fs; an fsspec URL without credentials raises it from deep inside
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError
    except ImportError:
        return errors
    return (*errors, NoCredentialsError, PartialCredentialsError)


def run_reporting(main: Callable[[], int | None], prefix: str = "error") -> int:
    """Run an entry point's ``main``; a user's error becomes one line on stderr and exit code 2."""
    try:
        return main() or 0
    except UserError as error:
        message = str(error)
    except _storage_errors() as error:
        message = _storage_message(error)
    print(f"{prefix}: {one_line(message)}", file=sys.stderr)
    return EXIT_USER_ERROR


def _storage_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or type(error).__name__}"
    if isinstance(error, OSError):
        return str(error) or type(error).__name__
    return f"{error} (object storage: give credentials in the environment or in storage options)"
