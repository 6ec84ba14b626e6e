"""Atomic writes: a file is written under a temporary name in its own folder, flushed to disk and renamed over the
target, so a reader sees the old file or the new one, never a part; on failure the temporary file is removed."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from typing import Any, Union

PathLike = Union[str, os.PathLike]

__all__ = ["replacing", "write_bytes", "write_json", "write_text"]


@contextlib.contextmanager
def replacing(path: PathLike) -> Iterator[str]:
    """Yield a fresh temporary path beside ``path`` for a writer that takes a file name (``safetensors``'
    ``save_file``, a plot's ``savefig``); when the block ends without error it replaces ``path``."""
    target = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # reserved under the umask's mode
    try:
        yield tmp
        _flush(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _flush_folder(folder)


def write_bytes(path: PathLike, data: bytes) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, value: Any, **options: Any) -> None:
    """``json.dumps(value, **options)`` and a final newline, written atomically."""
    write_text(path, json.dumps(value, **options) + "\n")


def _flush(path: str) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows syncs only a file open for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flush_folder(folder: str) -> None:
    """Make the rename itself durable, where the system lets a folder be opened (not on Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
