"""Training checkpoint files: one safetensors file whose tensors are the trainable tensors and every tensor of the
optimizer and RNG states, and whose metadata holds a JSON document with the rest (step, settings, search space,
number of processes, scheduler and scaler states). Nothing in it is a pickle; it is written atomically."""

from __future__ import annotations

import json
from typing import Any

from glora.files.atomic import PathLike
from glora.files.errors import CheckpointError
from glora.files.tensors import read_tensors, write_tensors
from glora.files.tree import flatten, unflatten
from glora.version import __version__

FORMAT = "training-checkpoint"
FORMAT_VERSION = 1
TRAINABLE = "trainable/"
FLATTENED = ("optimizer", "scheduler", "scaler", "generator", "rng")  # nested states, through glora.files.tree
DOCUMENT = {"step": int, "world": int, "config": dict, "space": dict, **{k: object for k in FLATTENED}}

__all__ = ["FORMAT_VERSION", "read_checkpoint", "write_checkpoint"]


def write_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Write a state made by ``glora.training.checkpoint.training_state``; a run killed while writing keeps its
    previous checkpoint."""
    tensors = {TRAINABLE + name: t for name, t in state["trainable"].items()}
    doc: dict[str, Any] = {key: state[key] for key in ("step", "world", "config", "space")}
    for key in FLATTENED:
        doc[key] = flatten(state[key], key, tensors)
    metadata = {
        "glora_format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "glora_version": __version__,
        "state": json.dumps(doc, sort_keys=True),
    }
    write_tensors(path, tensors, metadata)


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """The state ``write_checkpoint`` wrote. A file of another kind (an old pickle checkpoint included, which is
    not loaded), a truncated or damaged one, or one of another format version raises :class:`CheckpointError`."""
    tensors, metadata = read_tensors(path, "glora training checkpoint", CheckpointError)
    kind = metadata.get("glora_format")
    if kind != FORMAT:
        what = f"a glora {kind} file" if kind else "a safetensors file from elsewhere"
        raise CheckpointError(f"{path} is {what}, not a glora training checkpoint", path=path)
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path} is a training checkpoint of format version {metadata.get('format_version')!r} (glora "
            f"{metadata.get('glora_version', '?')}); glora {__version__} reads version {FORMAT_VERSION}",
            path=path,
        )
    try:
        doc = json.loads(metadata.get("state", ""))
        if not isinstance(doc, dict):
            raise ValueError("the state is not a JSON object")
        for key, kind_of in DOCUMENT.items():
            if key not in doc:
                raise ValueError(f"no {key!r}")
            if not isinstance(doc[key], kind_of) or isinstance(doc[key], bool):
                raise ValueError(f"{key!r} is a {type(doc[key]).__name__}")
        if doc["step"] < 0 or doc["world"] < 1:
            raise ValueError(f"step {doc['step']} or world {doc['world']} out of range")
        state = {key: unflatten(doc[key], tensors) if key in FLATTENED else doc[key] for key in DOCUMENT}
    except (ValueError, TypeError, RecursionError) as err:
        raise CheckpointError(f"{path} is a damaged glora training checkpoint: {err}", path=path) from None
    state["trainable"] = {n[len(TRAINABLE) :]: t for n, t in tensors.items() if n.startswith(TRAINABLE)}
    state["glora_version"] = metadata.get("glora_version")
    return state
