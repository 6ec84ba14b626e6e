"""The names of what ``glora run`` writes in its output folder, importable without torch (``glora run --help``,
``glora eval`` and ``glora predict`` read them; ``glora.tasks.runner`` writes the files)."""

from __future__ import annotations

__all__ = ["FILES", "FINETUNE_CHECKPOINT", "RUN_INFO", "SETTINGS_FILE", "SUPERNET_CHECKPOINT"]

SUPERNET_CHECKPOINT = "supernet.safetensors"
FINETUNE_CHECKPOINT = "finetune.safetensors"
SETTINGS_FILE = "settings.json"
RUN_INFO = "glora.json"
"""In ``merged/`` and ``adapter/``: the task, its settings and label names, for ``glora eval`` and ``predict``."""
FILES = (
    SETTINGS_FILE,
    SUPERNET_CHECKPOINT,
    "search.jsonl",
    "subnet.json",
    "adapter/",
    "merged/",
    "result.json",
)
"""What every run writes in its output folder; with fine-tuning also ``FINETUNE_CHECKPOINT``, and with
matplotlib the search plots."""
