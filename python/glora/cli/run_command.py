"""``glora run``: its flags (one per ``RunSettings`` field, with the field's help), the settings they resolve to,
and the run."""

from __future__ import annotations

import argparse
import math
from typing import Any

from glora.tasks.settings import CPU_SCHEDULE, FIELDS, HELP, TASK_NAMES, RunSettings

FLAG_TYPES: dict[str, Any] = {
    "rank": int,
    "steps": int,
    "batch_size": int,
    "population": int,
    "generations": int,
    "finetune_steps": int,
    "max_len": int,
    "image_size": int,
    "seed": int,
}
SWITCHES = tuple(name for name in FIELDS if isinstance(getattr(RunSettings(), name), bool))
"""The settings given as bare flags (``--resume``, ``--compile``): those whose default is a bool."""
METAVARS = {"model": "PATH_OR_NAME", "train": "FILE", "validation": "FILE", "test": "FILE", "out": "DIR"}


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def split_size(text: str) -> float | int:
    """A count (``500``) or a share in (0, 1) (``0.1``)."""
    try:
        return int(text)
    except ValueError:
        pass
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a count or a share in (0, 1), got {text!r}")
    return value


def budget_text(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def gene_kinds(text: str) -> tuple[str, list[str]]:
    """``"B=lora,none"`` -> ("B", ["lora", "none"]) (checked by GLoRAConfig)."""
    gene, sep, kinds = text.partition("=")
    if not sep or not gene or not kinds or "" in kinds.split(","):
        raise argparse.ArgumentTypeError(f"expected GENE=kind,kind (e.g. B=lora,none), got {text!r}")
    return gene, kinds.split(",")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; every flag defaults to None ("not given"), so the config file and the task's
    defaults apply."""
    arg = parser.add_argument
    arg("--config", metavar="FILE", help="a .toml, .yaml or .json file of settings (flags override it)")
    arg(
        "--print-config",
        action="store_true",
        help="write a commented config template for --task (with its defaults) to stdout and exit",
    )
    for name in FIELDS:
        flag = "--" + name.replace("_", "-")
        default = shown_default(name)
        if default:
            help_text = f"{HELP[name]} (default {default})"
        elif name in ("steps", "batch_size", "lr", "budget", "fitness", "max_len", "validation_size", "test_size"):
            help_text = f"{HELP[name]} (default: the task's; --print-config shows it)"
        else:
            help_text = HELP[name]
        help_text = help_text.replace("%", "%%")
        if name in SWITCHES:
            arg(flag, action="store_true", default=None, help=HELP[name])
        elif name == "task":
            arg(flag, choices=TASK_NAMES, help=HELP[name] + " (default: the built-in example)")
        elif name == "targets":
            arg(flag, nargs="+", metavar="PATTERN", help=help_text)
        elif name == "choices":
            arg(flag, nargs="+", type=gene_kinds, metavar="GENE=KINDS", help=help_text)
        elif name == "budget":
            arg(flag, type=budget_text, metavar="SPEC", help=help_text)
        elif name == "lr" or name == "budget_floor":
            arg(flag, type=finite_float, metavar="F", help=help_text)
        elif name.endswith("_size") and name not in ("batch_size", "image_size"):
            arg(flag, type=split_size, metavar="N|SHARE", help=help_text)
        elif name == "sampling":
            arg(flag, choices=["uniform", "budget", "sandwich"], help=help_text)
        elif name in FLAG_TYPES:
            arg(flag, type=FLAG_TYPES[name], metavar="N", help=help_text + _cpu_note(name))
        else:
            arg(flag, metavar=METAVARS.get(name, name.upper().split("_")[0]), help=help_text)


def shown_default(name: str) -> str:
    value = getattr(RunSettings(), name)
    if value is None or name in SWITCHES or name == "task":
        return ""
    if name == "choices":
        return " ".join(f"{gene}={','.join(kinds)}" for gene, kinds in value.items())
    return str(value)


def _cpu_note(name: str) -> str:
    return f"; {CPU_SCHEDULE[name]} without a GPU unless given" if name in CPU_SCHEDULE else ""


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's settings updated by the flags given."""
    from glora.tasks.settings import read_config_file

    given = read_config_file(args.config) if args.config else {}
    for name in FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            given[name] = value
    if isinstance(given.get("choices"), list):
        given["choices"] = _choices(given["choices"])
    return given


def _choices(pairs: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    genes = [gene for gene, _ in pairs]
    twice = sorted({gene for gene in genes if genes.count(gene) > 1})
    if twice:
        raise ValueError(f"--choices names gene(s) {', '.join(twice)} more than once")
    return dict(pairs)


def is_builtin(given: dict[str, Any]) -> bool:
    """``glora`` alone (or with options only): no task, model or data named."""
    return not any(k in given for k in ("task", "model", "train"))


def defaults_for(given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The task's defaults (the built-in example's when nothing names a task, model or data) and the extra
    settings of its shorter schedule without a GPU."""
    from glora.tasks.registry import task_class

    task = given.get("task", "text-classification")
    defaults = dict(task_class(task).defaults)
    if is_builtin(given):
        from glora.tasks.settings import BUILTIN, BUILTIN_CPU

        return defaults | BUILTIN, dict(BUILTIN_CPU)
    return defaults, {}


def resolved_settings(args: argparse.Namespace) -> RunSettings:
    """The run's settings; the schedule applied for lack of a GPU is printed."""
    import torch

    from glora.tasks.settings import resolve

    given = given_settings(args)
    defaults, cpu_extra = defaults_for(given)
    device = given.get("device")
    has_gpu = torch.cuda.is_available() if device is None else not str(device).startswith("cpu")
    settings, schedule = resolve(given, defaults | ({} if has_gpu else cpu_extra), has_gpu)
    shown = schedule | ({k: v for k, v in cpu_extra.items() if k not in given} if not has_gpu else {})
    if shown:
        print(f"schedule without a GPU (override with the flags): {shown}")
    return settings


def print_config(args: argparse.Namespace) -> int:
    from glora.tasks.settings import template

    given = given_settings(args)
    defaults, _ = defaults_for(given)
    print(template(given.get("task", "text-classification"), defaults), end="")
    return 0


def run_command(args: argparse.Namespace) -> int:
    if args.print_config:
        return print_config(args)
    from glora.tasks.runner import run

    run(resolved_settings(args))
    return 0
