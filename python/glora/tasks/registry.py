"""The tasks of ``glora run --task``, imported only when used (each pulls in its own libraries)."""

from __future__ import annotations

import importlib

from glora.errors import ConfigError
from glora.tasks.base import Task
from glora.tasks.settings import TASK_NAMES

_CLASSES = {
    "text-classification": "glora.tasks.text_classification:TextClassification",
    "image-classification": "glora.tasks.image_classification:ImageClassification",
    "causal-lm": "glora.tasks.causal_lm:CausalLM",
}
assert tuple(_CLASSES) == TASK_NAMES


def task_class(name: str) -> type[Task]:
    """The task class of ``--task name``."""
    if name not in _CLASSES:
        raise ConfigError(f"task must be one of {', '.join(_CLASSES)}, got {name!r}", details={"setting": "task"})
    module, _, cls = _CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)
