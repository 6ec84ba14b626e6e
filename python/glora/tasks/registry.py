"""The tasks of ``glora run --task``, imported only when used (each pulls in its own libraries)."""

from __future__ import annotations

import dataclasses
import importlib

from glora.errors import ConfigError
from glora.tasks.base import Task
from glora.tasks.settings import TASK_NAMES, RunSettings, with_finetune_default

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


def make_task(settings: RunSettings) -> Task:
    """The task of ``settings``, made with its class's ``defaults`` filling the settings left None (``glora run``
    and ``glora inspect`` alike)."""
    task_type = task_class(settings.task)
    filled = {k: v for k, v in task_type.defaults.items() if getattr(settings, k) is None}
    return task_type(with_finetune_default(dataclasses.replace(settings, **filled)))
