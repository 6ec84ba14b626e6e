"""Errors of the files glora reads: each names the file, and none comes from unpickling anything."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from glora.errors import GLoRAError

__all__ = ["AdapterFileError", "AdapterMismatchError", "CheckpointError", "FileFormatError", "MissingFileError"]


class FileFormatError(GLoRAError, ValueError):
    """A file is unreadable, truncated, corrupt, incomplete or of another kind than expected; ``path`` names it."""

    def __init__(
        self,
        message: str,
        *,
        path: Union[str, os.PathLike],
        kind: str = "",
        details: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__(message, kind=kind, details=details)
        self.path = os.fspath(path)


class MissingFileError(FileFormatError, FileNotFoundError):
    """A file glora needs is not there."""


class CheckpointError(FileFormatError):
    """A training checkpoint that cannot be read, or that belongs to another run."""


class AdapterFileError(FileFormatError):
    """An adapter folder whose files cannot be read or are incomplete."""


class AdapterMismatchError(GLoRAError, ValueError):
    """An adapter file does not fit the model it is loaded onto; ``layer`` names the first offending layer."""

    def __init__(self, message: str, layer: Optional[str] = None) -> None:
        super().__init__(message, kind="adapter_mismatch", details={"layer": layer})
        self.layer = layer
