"""The one guard every stage and entry point writes local files through (owner and cloud alike).

A write never destroys an owner's file: it refuses to replace a key file or a signer file (whatever
their names), a directory or a link, or an existing file that is not of the kind being written (a
checkpoint stage overwrites an older checkpoint, not a PNG or a config). What it writes appears whole
or not at all: a temporary file beside the target, renamed onto it on success and removed on failure.
"""

from __future__ import annotations

import enum
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from contract.errors import UserError, quoted

# Temporaries end in this; stages that list a folder leave such leftovers out.
PARTIAL = ".partial"
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
_SNIFF = 4096  # bytes read from an existing file to tell what it is


class OutputKind(enum.Enum):
    """What a stage writes, and how an existing file of that kind is recognised."""

    KEY = "key file"
    SIGNER = "signer file"
    CHECKPOINT = "safetensors checkpoint"
    PNG = "PNG image"
    JSON = "JSON document"
    TEXT = "text report"
    OTHER = "file of another kind"
    ANY = "file"  # a name the stage owns (a bundle's manifest): anything but the owner's files may be replaced


_FORMAT = re.compile(rb'^\s*\{[^{}]*"format"\s*:\s*"(cipherseg-[a-z-]+)"')
_OWNER_FORMATS = {b"cipherseg-key": OutputKind.KEY, b"cipherseg-signer": OutputKind.SIGNER}


def kind_of(head: bytes) -> OutputKind:
    """What a file starting with ``head`` is."""
    if match := _FORMAT.match(head):
        return _OWNER_FORMATS.get(match.group(1), OutputKind.JSON)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return OutputKind.PNG
    if len(head) > 8 and 0 < int.from_bytes(head[:8], "little") <= 100_000_000 and head[8:9] == b"{":
        return OutputKind.CHECKPOINT
    if head.lstrip()[:1] in (b"{", b"["):
        return OutputKind.JSON
    if head and head.isascii() and b"\0" not in head:
        return OutputKind.TEXT
    return OutputKind.OTHER


def check_output(path: str | Path, kind: OutputKind) -> None:
    """Refuse to write a ``kind`` at ``path`` over what must not be lost (see the module docstring)."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{quoted(path)}: a symbolic link; refusing to write a {kind.value} there")
    if not path.exists():
        return
    if not path.is_file():
        raise UserError(f"{quoted(path)}: not a regular file; refusing to write a {kind.value} there")
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF)
    except OSError as error:
        raise UserError(f"{quoted(path)}: cannot read what is there ({error.strerror}); not writing over it") from None
    found = kind_of(head)
    if found in (OutputKind.KEY, OutputKind.SIGNER):
        raise UserError(f"{quoted(path)}: holds the owner's {found.value}; refusing to write a {kind.value} over it")
    if found is not kind and kind is not OutputKind.ANY:
        raise UserError(f"{quoted(path)}: a {found.value}, not a {kind.value}; refusing to write over it")


@contextmanager
def guarded_path(path: str | Path, kind: OutputKind, *, private: bool = False) -> Iterator[Path]:
    """A temporary path to write a ``kind`` to, renamed onto ``path`` when the block succeeds.

    Checked first with :func:`check_output`. ``private``: the file is the owner's alone (0600 from its
    creation on) and any folder made for it is 0700.
    """
    path = Path(path)
    check_output(path, kind)
    make_dirs(path.parent, private=private)
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}{PARTIAL}")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE if private else 0o666))
        yield temporary
        check_output(path, kind)  # again: something may have appeared meanwhile
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # gone after a successful replace


def write_file(path: str | Path, data: bytes, kind: OutputKind, *, private: bool = False) -> Path:
    """Write ``data`` as a ``kind`` at ``path`` through :func:`guarded_path`."""
    with guarded_path(path, kind, private=private) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_new(path: str | Path, data: bytes, kind: OutputKind, *, mode: int) -> Path:
    """Create ``path`` with ``data`` and permissions ``mode``; never replaces anything (key and signer files)."""
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise UserError(f"{quoted(path)}: exists; refusing to replace it with a {kind.value}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        path.unlink(missing_ok=True)  # never a truncated key
        raise
    return path


def make_dirs(path: str | Path, *, private: bool = False) -> None:
    """Create ``path`` and its missing parents; with ``private``, every folder made is 0700."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR if private else 0o777)
        except FileExistsError:  # another writer made it meanwhile
            pass
