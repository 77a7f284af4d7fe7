"""Writes that readers see whole or not at all, for local files and fsspec objects alike.

A crash (SIGKILL included) may leave a temporary behind, never a truncated file under the real
name: resuming stages trust what exists under the real name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

# Temporaries end in this; stages that list a folder or store leave such leftovers out.
PARTIAL = ".partial"


def _temporary(path: str) -> str:
    # Unique per writer: two writers of one path (a task Dask reruns) never share a temporary.
    return f"{path}.{uuid.uuid4().hex}{PARTIAL}"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary local path to write to, moved onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(_temporary(str(path)))
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # gone after a successful replace


def put_atomic(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Write one object whole or not at all: temporary + rename locally, one PUT on object stores."""
    if isinstance(fs, LocalFileSystem):
        with atomic_path(path) as temporary:
            temporary.write_bytes(data)
    else:
        fs.pipe_file(path, data)
