"""``glora-replay LOG``: re-run a search from its log, verify it, and summarise it (no torch needed).

The evolution is replayed with the recorded scores; every subnet the engine produces must equal the logged one
(else the replay reports where it diverges and exits with status 1). Then it prints the metric the scores are
(when the search named it), the per-generation best and mean, the best subnet and the Pareto front;
``--budget`` reports the best Pareto point with at most that many parameters and ``--export`` writes the chosen
subnet as JSON that ``glora.set_subnet`` and ``glora.merge`` accept. Any other failure (an unreadable or damaged
log, a file that cannot be written, a bad argument) is one line on stderr and exit status 2; a reader that stops
early (``| head``) ends it quietly with status 141.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, Callable, NoReturn, Optional

from glora._engine import LogReport, ParetoPoint
from glora.cli.pipes import run_to_pipe
from glora.engine.replay import read_log
from glora.errors import GLoRAError, SearchError
from glora.files.atomic import replacing
from glora.tasks.plots import plot_replay

PROG = "glora-replay"


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _score(value: float) -> Optional[float]:
    """A score as JSON: None for minus infinity (a generation or subnet with only non-finite scores)."""
    return value if math.isfinite(value) else None


def _point(point: ParetoPoint) -> dict[str, Any]:
    return {
        "score": _score(point.score),
        "params": point.params,
        "generation": point.generation,
        "subnet": point.subnet,
    }


def report_dict(report: LogReport) -> dict[str, Any]:
    """The report as plain data (``glora-replay --json``); non-finite scores are null, as in the log."""
    d = report.divergence
    return {
        "log": report.log,
        "glora_version": report.glora_version,
        "metric": report.metric,
        "seed": report.seed,
        "budget": list(report.budget),
        "params": report.config.to_dict(),
        "layers": len(report.space),
        "logged_evaluations": report.logged_evaluations,
        "replayed_evaluations": report.replayed_evaluations,
        "generations": report.generations,
        "complete": report.complete,
        "truncated_tail": report.truncated_tail,
        "divergence": None
        if d is None
        else {"generation": d.generation, "index": d.index, "logged": d.logged, "produced": d.produced},
        "history": [
            {k: _score(v) if isinstance(v, float) else v for k, v in h.to_dict().items()} for h in report.history
        ],
        "best": None if report.best is None else _point(report.best),
        "front": [_point(p) for p in report.front],
        "racing": None if report.racing is None else report.racing.to_dict(),
    }


def _choose(report: LogReport, budget: Optional[int]) -> ParetoPoint:
    """The best subnet, or the best Pareto point with at most ``budget`` parameters."""
    if report.best is None:
        raise SearchError(f"{report.log} records no evaluation", kind="no_evaluation")
    return report.best if budget is None else report.best_under(budget)


def _of(report: LogReport) -> str:
    """`` (accuracy)`` after a score when the log names its metric."""
    return f" ({report.metric})" if report.metric else ""


def _print_summary(report: LogReport) -> None:
    print(
        f"log {report.log}: {len(report.history)} generations, {report.replayed_evaluations} evaluations replayed "
        f"of {report.logged_evaluations} logged; seed {report.seed}, budget {list(report.budget)}, {len(report.space)} layers"
    )
    if report.metric:
        print(f"metric: {report.metric} (higher is better)")
    else:
        print("metric: not recorded (higher is better; glora.search records the fitness's name, or metric=NAME)")
    if report.divergence is not None:
        d = report.divergence
        print(
            f"DIVERGES at generation {d.generation}, candidate {d.index}: the log does not match the engine's evolution"
        )
    else:
        print(
            "verified: the engine reproduces every logged genome"
            + ("" if report.complete else " (the search is incomplete)")
        )
    if report.truncated_tail:
        print("note: the last line was cut off mid-write (an interrupted run); resuming discards it")
    if report.racing is not None:
        r = report.racing
        print(
            f"raced over {r.examples:,} examples: {r.stopped} of {report.replayed_evaluations} candidates stopped "
            f"early, {100 * r.examples_share:.1f} % of the examples scored (stopped ones are never parents or best)"
        )
    print(f"{'gen':>4} {'evaluated':>9} {'best':>10} {'mean':>10} {'best so far':>12}")
    for h in report.history:
        print(f"{h.generation:>4} {h.evaluated:>9} {h.best:>10.4f} {h.mean:>10.4f} {h.best_so_far:>12.4f}")
    if report.best is not None:
        b = report.best
        print(f"best: score {b.score:.4f}{_of(report)} with {b.params:,} parameters (generation {b.generation})")
        print("pareto front (params -> score): " + ", ".join(f"{p.params:,} -> {p.score:.4f}" for p in report.front))


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Write ``path`` through :func:`glora.files.atomic.replacing`; a failure names the path and leaves nothing
    behind."""
    if os.path.isdir(path):
        raise GLoRAError(f"cannot write {path}: it is a directory", kind="write_failed")
    try:
        with replacing(path) as tmp:
            write(tmp)
    except OSError as err:
        raise GLoRAError(f"cannot write {path}: {err.strerror or err}", kind="write_failed") from None


def _export(point: ParetoPoint, path: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(point.subnet, fh, indent=1, sort_keys=True)

    _write_atomically(path, write)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="a search log (JSON Lines) written by glora.search(..., log=...)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    parser.add_argument("--export", metavar="FILE", help="write the best subnet (or the best under --budget) as JSON")
    parser.add_argument(
        "--budget",
        type=_non_negative,
        help="report (and with --export write) the best Pareto point with at most this many parameters",
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="fitness by generation and the Pareto front (needs matplotlib)"
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    report = read_log(args.log)
    if args.export and report.divergence is not None:
        print(f"glora-replay: {args.log} diverges from the engine's evolution: nothing exported", file=sys.stderr)
        return 1
    chosen = _choose(report, args.budget) if args.export or args.budget is not None else None
    if args.export and chosen is not None:
        _export(chosen, args.export)
    if args.plot:
        plot_replay(report, args.plot, args.budget)
    if args.json:
        data = report_dict(report)
        if args.budget is not None and chosen is not None:
            data["best_under_budget"] = {"budget": args.budget, **_point(chosen)}
        print(json.dumps(data, indent=1))
    else:
        _print_summary(report)
        if chosen is not None and args.budget is not None:
            print(
                f"best under {args.budget:,} parameters: score {chosen.score:.4f} with {chosen.params:,} parameters"
                f" (generation {chosen.generation})"
            )
        if args.export and chosen is not None:
            print(f"exported subnet with {chosen.params:,} parameters (score {chosen.score:.4f}) to {args.export}")
    return 1 if report.divergence is not None else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run_to_pipe(lambda: _run(args))
    except GLoRAError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
