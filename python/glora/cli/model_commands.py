"""``glora eval``, ``glora predict`` and ``glora inspect``: use a run's merged model (or a base model with its
adapter), or show a model's search space."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from glora.errors import DataError


def _task_and_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The task of the run that wrote ``--model`` (its ``glora.json``) or ``--adapter``, with its model loaded."""
    import torch

    from glora.tasks.base import RawSplits
    from glora.tasks.outputs import RUN_INFO
    from glora.tasks.registry import task_class
    from glora.tasks.settings import FIELDS, RunSettings

    source = args.adapter or args.model
    info_path = os.path.join(source, RUN_INFO)
    if not os.path.isfile(info_path):
        what = "adapter folder" if args.adapter else "merged model folder"
        raise DataError(
            f"{source} holds no {RUN_INFO}: pass the {what} a glora run wrote (OUT/merged, or --adapter OUT/adapter "
            "with --model BASE)",
            details={"path": source},
        )
    try:
        with open(info_path, encoding="utf-8") as fh:
            info = json.load(fh)
        saved = {k: v for k, v in info["settings"].items() if k in FIELDS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{info_path} is unreadable ({err})", details={"path": info_path}) from None
    if args.adapter:
        saved["model"] = args.model
    task = task_class(info["task"])(RunSettings(**saved))
    if args.adapter:
        from glora.tuner.adapter import load_adapter

        raw = RawSplits(None, None, None, info.get("labels"))
        model = load_adapter(task.load_model(raw), args.adapter)
    else:
        model = task.load_merged(args.model)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return task, model, device


def eval_command(args: argparse.Namespace) -> int:
    from glora.files.atomic import write_json

    task, model, device = _task_and_model(args)
    examples = task.read_examples(args.test, "test", labelled=True)
    figures = task.evaluate(model, task.encode_examples(examples), device)
    print(f"{args.test}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()))
    if args.output:
        write_json(args.output, figures, indent=1)
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from glora.files.atomic import write_text

    task, model, device = _task_and_model(args)
    examples = task.read_examples(args.input, "input", labelled=False)
    rows = task.predict(model, examples, device)
    write_text(args.output, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(f"wrote {len(rows)} predictions to {args.output}")
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    """The search space of the run with these settings (``--config`` and the flags, as ``glora run`` takes them):
    the model wrapped with the task's :meth:`~glora.tasks.base.Task.adapter_config`, as the run wraps it."""
    from glora.cli.run_command import given_settings
    from glora.tasks.base import RawSplits
    from glora.tasks.registry import make_task
    from glora.tasks.settings import RunSettings
    from glora.tuner.inspection import format_space, inspect_space
    from glora.tuner.wrapping import wrap

    task = make_task(RunSettings(**given_settings(args)))
    model = task.load_model(RawSplits(None, None, None, ["0", "1"]))
    wrap(model, task.adapter_config(model))
    print(format_space(inspect_space(model)))
    return 0


def add_model_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from glora.cli.run_command import gene_kinds, shown_default
    from glora.tasks.settings import HELP, TASK_NAMES, RunSettings

    shown = shown_default("choices")
    for name, helped, func in (
        ("eval", "accuracy or loss of a run's merged model (or a base model plus its adapter) on a file", eval_command),
        ("predict", "labels with scores, or generated continuations, of a run's model for a file", predict_command),
    ):
        cmd = sub.add_parser(name, parents=[common], help=helped, description=helped[0].upper() + helped[1:] + ".")
        cmd.add_argument(
            "--model", required=True, metavar="DIR", help="OUT/merged of a glora run, or the base model with --adapter"
        )
        cmd.add_argument("--adapter", metavar="DIR", help="OUT/adapter of a glora run, applied to the base --model")
        if name == "eval":
            cmd.add_argument("--test", required=True, metavar="FILE", help="labelled data in the run's format")
            cmd.add_argument("--output", metavar="FILE", help="also write the figures as JSON")
        else:
            cmd.add_argument("--input", required=True, metavar="FILE", help="the examples (no labels needed)")
            cmd.add_argument("--output", required=True, metavar="FILE", help="JSON Lines, one row per example")
        cmd.add_argument("--device", help="torch device (default cuda when torch sees a GPU, else cpu)")
        cmd.set_defaults(func=func)
    cmd = sub.add_parser(
        "inspect",
        parents=[common],
        help="a model's search space: layers, choices, smallest and largest adapters, LoRA ranks' costs",
        description="Wrap a model as glora run would with the same settings (--config, --targets, --rank, "
        "--choices) and show its search space: the wrapped layers and their choices, the smallest and largest "
        "adapter sizes, and what common LoRA ranks would cost on the targets.",
    )
    cmd.add_argument("--config", metavar="FILE", help="a glora run config file (its task, model and adapter settings)")
    cmd.add_argument("--task", choices=TASK_NAMES, help="how to load the model (default text-classification)")
    cmd.add_argument("--model", metavar="PATH_OR_NAME", help="the model, as glora run takes it")
    cmd.add_argument("--targets", nargs="+", metavar="PATTERN", help="modules to wrap (default: the task's)")
    cmd.add_argument("--rank", type=int, metavar="N", help=f"{HELP['rank']} (default {RunSettings().rank})")
    cmd.add_argument(
        "--choices", nargs="+", type=gene_kinds, metavar="GENE=KINDS", help=f"{HELP['choices']} (default {shown})"
    )
    cmd.set_defaults(func=inspect_command)
