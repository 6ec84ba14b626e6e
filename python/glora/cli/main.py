"""The ``glora`` command line: ``glora run`` (also ``glora`` alone: the built-in example) runs
``glora.tasks.runner``; ``glora eval``, ``predict`` and ``inspect`` use a run's model or show a search space
(``glora.cli.model_commands``); ``glora demo`` runs ``glora.tasks.demo``.

Every error is one line on stderr and exit status 2; the settings, the files and the budget are checked before
training. ``--debug`` shows the traceback instead. An interrupted run exits with 130 and says how to resume; a
command whose reader stops early (``| head``) exits quietly with 141.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, Optional

from glora.cli.model_commands import add_model_commands
from glora.cli.pipes import run_to_pipe
from glora.errors import GLoRAError

INPUT_ERRORS = (OSError, ValueError, GLoRAError)
"""What bad input raises: reported as its message alone; anything else also names its type."""
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
COMMANDS = ("run", "eval", "predict", "inspect", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _demo(args: argparse.Namespace) -> int:
    from glora.tasks.demo import DemoConfig, demo

    return 0 if demo(DemoConfig(seed=args.seed, rank=args.rank, subnets=args.subnets)) else 1


def _add_run_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from glora.cli.run_command import add_run_flags, run_command
    from glora.tasks.outputs import FILES, FINETUNE_CHECKPOINT
    from glora.tasks.settings import BUILTIN_CPU, CPU_SCHEDULE

    cpu = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in CPU_SCHEDULE.items())
    builtin_cpu = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in BUILTIN_CPU.items())
    run = sub.add_parser(
        "run",
        parents=[common],
        help="the whole pipeline: supernet, search, fine-tuning, merge, report (glora alone: the built-in example)",
        description="Wrap a model, train the GLoRA supernet, search each layer's form under a parameter budget on "
        "the validation split, fine-tune the found subnet (kept unless its validation accuracy, or perplexity, gets worse), merge it, report on the "
        "test split and save "
        "everything. Without --task, --model, --train or --config it runs the built-in example: all-MiniLM-L6-v2 "
        "on the offline movie sentences.",
        epilog=f"Settings: the task's defaults < a run without a GPU's shorter schedule ({cpu}; the built-in "
        f"example also {builtin_cpu}) < --config FILE < the flags. Files written in --out: {', '.join(FILES)}; "
        f"{FINETUNE_CHECKPOINT} unless --finetune-steps 0; search_progress.png and search_pareto.png with matplotlib. "
        "torchrun --nproc-per-node N -m glora run ... spreads training and search over N processes. Exit status 0 "
        "done, 2 an error (one line on stderr, before training where the settings, data, model or budget are at "
        "fault), 130 interrupted (--resume continues), 141 the output's reader stopped early.",
    )
    add_run_flags(run)
    run.set_defaults(func=run_command)


def _add_demo_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="wrap a MiniLM-shaped BERT, merge random subnets and check them",
        description="Wrap a MiniLM-shaped BERT with random weights, merge random subnets and check that each merged "
        "model computes what its subnet does, with the base model's parameter count.",
        epilog="Exit status 0 every merge matches, 1 one does not, 2 an error (one line on stderr).",
    )
    demo.add_argument(
        "--seed", type=int, metavar="N", default=0, help="seed of the weights, inputs and subnets (default 0)"
    )
    demo.add_argument(
        "--rank", type=int, metavar="N", default=4, help="LoRA rank of the adapters, 1 to 384 (default 4)"
    )
    demo.add_argument(
        "--subnets", type=int, metavar="N", default=5, help="random subnets to merge and check (default 5)"
    )
    demo.set_defaults(func=_demo)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    parser = _Parser(
        prog="glora",
        description="Generalized LoRA: supernet, search, merge. glora with no command, or with only options, "
        "runs glora run (with no task, model or data: the built-in example).",
        epilog="Exit status 0 done, 1 the demo's check failed, 2 an error (one line on stderr), 130 interrupted, "
        "141 the output's reader stopped early.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    _add_run_parser(sub, common)
    add_model_commands(sub, common)
    _add_demo_parser(sub, common)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad flag (2, reported): a status, as from the commands
        return stop.code if isinstance(stop.code, int) else EXIT_ERROR
    command = f"{parser.prog} {args.command}"
    try:
        return run_to_pipe(lambda: int(args.func(args)))
    except KeyboardInterrupt:
        if args.command == "run":
            print(
                f"{command}: interrupted; the finished training phases and search evaluations are kept in the "
                "output folder, and the same command with --resume continues from them",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED
    except Exception as err:
        if args.debug:
            raise
        print(f"{command}: error: {_message(err)}", file=sys.stderr)
        return EXIT_ERROR


def _message(err: Exception) -> str:
    """The error on one line; one that is not bad input is named with a hint to see its traceback."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, INPUT_ERRORS):
        return text
    return f"{type(err).__name__}: {text} (rerun with --debug to see the traceback)"


if __name__ == "__main__":
    sys.exit(main())
