"""Writes that readers see whole or not at all, and owner-private writes, for local files and fsspec objects.

A crash (SIGKILL included) may leave a temporary behind, never a truncated file under the real
name: resuming stages trust what exists under the real name. Temporaries end in ``.partial``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

# Temporaries end in this; stages that list a folder or store leave such leftovers out.
PARTIAL = ".partial"
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700


def _temporary(path: str) -> str:
    # Unique per writer: two writers of one path (a task Dask reruns) never share a temporary.
    return f"{path}.{uuid.uuid4().hex}{PARTIAL}"


# What the writers here leave behind when killed: a temporary file, or a file in a staging folder.
_TEMPORARY = re.compile(
    rf".*\.[0-9a-f]{{32}}{re.escape(PARTIAL)}"  # put_atomic, atomic_path
    rf"|(.*/)?tmp[a-z0-9_]{{8}}{re.escape(PARTIAL)}/object"  # commit_on_success's staging folder
)


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a path relative to some root) is a leftover of :func:`put_atomic`,
    :func:`atomic_path` or :func:`commit_on_success`, rather than someone's file."""
    return bool(_TEMPORARY.fullmatch(name))


@contextmanager
def atomic_path(path: str | Path, *, private: bool = False) -> Iterator[Path]:
    """A temporary local path to write to, moved onto ``path`` when the block succeeds.

    ``private``: the file is the owner's alone (0600, created so from the start) and any folder
    made for it is 0700.
    """
    path = Path(path)
    make_dirs(path.parent, private=private)
    temporary = Path(_temporary(str(path)))
    try:
        if private:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # gone after a successful replace


def make_dirs(path: str | Path, *, private: bool = False) -> None:
    """Create ``path`` and its missing parents; with ``private``, every folder made is 0700."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR if private else 0o777)
        except FileExistsError:  # another writer made it meanwhile
            pass


def put_atomic(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Write one object whole or not at all: temporary + rename locally, one PUT on object stores."""
    if isinstance(fs, LocalFileSystem):
        with atomic_path(path) as temporary:
            temporary.write_bytes(data)
    else:
        fs.pipe_file(path, data)


def write_private(location: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write owner-private data (plain images, reports): locally 0600 in 0700 folders, atomically.

    On object storage the bucket's access rules keep it private: choose a private bucket.
    """
    fs, path = url_to_fs(location, **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        with atomic_path(path, private=True) as temporary:
            temporary.write_bytes(data)
    else:
        fs.pipe_file(path, data)


@contextmanager
def commit_on_success(fs: AbstractFileSystem, path: str) -> Iterator[BinaryIO]:
    """A file whose bytes become the object ``path`` only if the block succeeds; otherwise nobody sees them.

    Locally the bytes go to a 0700 staging folder beside ``path`` and are renamed into place; on
    object stores through an upload that is only completed on success (fsspec's autocommit=False).
    """
    if isinstance(fs, LocalFileSystem):
        make_dirs(os.path.dirname(path))
        staging = tempfile.mkdtemp(dir=os.path.dirname(path), suffix=PARTIAL)  # 0700
        temporary = os.path.join(staging, "object")
        try:
            with open(temporary, "wb") as f:
                yield f
            os.replace(temporary, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    f = fs.open(path, "wb", autocommit=False)
    try:
        yield f
    except BaseException:
        f.close()  # uploads what is left as parts of an upload that is never completed...
        f.discard()  # ...and aborts it
        raise
    f.close()
    f.commit()
