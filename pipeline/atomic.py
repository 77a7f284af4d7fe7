"""Writes that readers see whole or not at all, and owner-private writes, for fsspec objects (local files
go through the one output guard of :mod:`contract.outputs`).

A crash (SIGKILL included) may leave a temporary behind, never a truncated file under the real
name: resuming stages trust what exists under the real name. Temporaries end in ``.partial``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from contract.outputs import PARTIAL, OutputKind, make_dirs, write_file

# What the writers here leave behind when killed: a temporary file, or a file in a staging folder.
_TEMPORARY = re.compile(
    rf".*\.[0-9a-f]{{32}}{re.escape(PARTIAL)}"  # contract.outputs.guarded_path, zarr's LocalStore
    rf"|(.*/)?tmp[a-z0-9_]{{8}}{re.escape(PARTIAL)}/object"  # commit_on_success's staging folder
)


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a path relative to some root) is a leftover of an interrupted write here,
    rather than someone's file."""
    return bool(_TEMPORARY.fullmatch(name))


def put_atomic(fs: AbstractFileSystem, path: str, data: bytes, kind: OutputKind = OutputKind.JSON) -> None:
    """Write one object whole or not at all: through the output guard locally, one PUT on object stores."""
    if isinstance(fs, LocalFileSystem):
        write_file(path, data, kind)
    else:
        fs.pipe_file(path, data)


def write_private(location: str, data: bytes, kind: OutputKind, storage_options: dict[str, Any] | None = None) -> None:
    """Write owner-private data (plain images, reports): locally 0600 in 0700 folders, atomically.

    On object storage the bucket's access rules keep it private: choose a private bucket.
    """
    fs, path = url_to_fs(location, **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        write_file(path, data, kind, private=True)
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
