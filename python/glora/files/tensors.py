"""safetensors files: written atomically, read with errors that name the file, never through pickle.

A file's tensors can carry a digest (SHA-256 over every tensor's name, dtype, shape and bytes, in name order) in
its metadata, so damaged tensor bytes, which the format itself cannot notice, are refused."""

from __future__ import annotations

import hashlib
import os
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from glora.files.atomic import PathLike, replacing
from glora.files.errors import FileFormatError, MissingFileError

DIGEST_KEY = "glora_sha256"

__all__ = ["DIGEST_KEY", "digest", "read_tensors", "write_tensors"]


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_tensors(path: PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` with ``metadata`` and their digest, atomically."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with replacing(path) as tmp:
        save_file(tensors, tmp, metadata={**metadata, DIGEST_KEY: digest(tensors)})


def read_tensors(
    path: PathLike, what: str, error: type[FileFormatError] = FileFormatError
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (on the CPU) and metadata of the safetensors file ``path``; anything else, a truncated or
    damaged file included, raises ``error`` naming the path and, for a pickle, saying so without loading it.
    ``what`` names the expected contents in messages ("training checkpoint")."""
    file = os.fspath(path)
    if not os.path.exists(file):
        raise MissingFileError(f"no {what} at {file}", path=file)
    if os.path.isdir(file):
        raise error(f"{file} is a folder, not a {what} file", path=file)
    kind = _foreign_kind(file)
    if kind is not None:
        raise error(f"{file} is {kind}, not a {what}; glora reads no pickles, which can run code", path=file)
    try:
        with safe_open(file, framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise error(
            f"{file} is not a readable {what} (truncated or damaged safetensors file: {reason})", path=file
        ) from None
    recorded = metadata.get(DIGEST_KEY)
    if recorded is not None and recorded != digest(tensors):
        raise error(f"{file} is damaged: its tensors do not match the digest recorded with them", path=file)
    return tensors, metadata


def _foreign_kind(file: str) -> Optional[str]:
    """What ``file`` is when its first bytes are no safetensors header (a length, then ``{``), for the formats a
    glora file is most often confused with; None when they are one."""
    with open(file, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:] == b"{":
        return None
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (the format of torch.save, with a pickle inside: a glora checkpoint from before safetensors?)"
    if head[:1] == b"\x80":
        return "a pickle"
    if len(head) < 9:
        return f"a {len(head)}-byte file (empty or truncated)"
    return None
