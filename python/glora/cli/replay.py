"""``glora-replay LOG``: re-run a search from its log, verify it, and summarise it (no torch needed).

The evolution is replayed with the recorded scores; every subnet the engine produces must equal the logged one
(else the replay reports where it diverges and exits with status 1). Then it prints the per-generation best and
mean, the best subnet and the Pareto front; ``--export`` writes a subnet JSON that ``glora.set_subnet`` and
``glora.merge`` accept.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional

from glora._engine import LogReport, ParetoPoint
from glora.engine.replay import read_log
from glora.errors import SearchError


def _point(point: ParetoPoint) -> dict[str, Any]:
    return {"score": point.score, "params": point.params, "generation": point.generation, "subnet": point.subnet}


def report_dict(report: LogReport) -> dict[str, Any]:
    """The report as plain data (``glora-replay --json``)."""
    d = report.divergence
    return {
        "log": report.log,
        "glora_version": report.glora_version,
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
        "history": [h.to_dict() for h in report.history],
        "best": None if report.best is None else _point(report.best),
        "front": [_point(p) for p in report.front],
    }


def _choose(report: LogReport, budget: Optional[int]) -> ParetoPoint:
    """The best subnet, or the best Pareto point with at most ``budget`` parameters."""
    if report.best is None:
        raise SearchError(f"{report.log} records no evaluation", kind="no_evaluation")
    return report.best if budget is None else report.best_under(budget)


def _print_summary(report: LogReport) -> None:
    print(
        f"log {report.log}: {len(report.history)} generations, {report.replayed_evaluations} evaluations replayed "
        f"of {report.logged_evaluations} logged; seed {report.seed}, budget {list(report.budget)}, {len(report.space)} layers"
    )
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
    print(f"{'gen':>4} {'evaluated':>9} {'best':>10} {'mean':>10} {'best so far':>12}")
    for h in report.history:
        print(f"{h.generation:>4} {h.evaluated:>9} {h.best:>10.4f} {h.mean:>10.4f} {h.best_so_far:>12.4f}")
    if report.best is not None:
        b = report.best
        print(f"best: score {b.score:.4f} with {b.params:,} parameters (generation {b.generation})")
        print("pareto front (params -> score): " + ", ".join(f"{p.params:,} -> {p.score:.4f}" for p in report.front))


def _plot(report: LogReport, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'glora[plot]'") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    gens = [h.generation for h in report.history]
    left.plot(gens, [h.best for h in report.history], label="best of generation")
    left.plot(gens, [h.mean for h in report.history], label="mean of generation")
    left.plot(gens, [h.best_so_far for h in report.history], label="best so far", linestyle="--")
    left.set_xlabel("generation")
    left.set_ylabel("fitness")
    left.legend()
    right.plot([p.params for p in report.front], [p.score for p in report.front], marker="o")
    right.set_xlabel("adapter parameters")
    right.set_ylabel("fitness")
    right.set_title("Pareto front")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="glora-replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("log", help="a search log (JSON Lines) written by glora.search(..., log=...)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    parser.add_argument("--export", metavar="FILE", help="write the best subnet (or the best under --budget) as JSON")
    parser.add_argument(
        "--budget", type=int, help="with --export: the best Pareto point with at most this many parameters"
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="fitness by generation and the Pareto front (needs matplotlib)"
    )
    args = parser.parse_args(argv)
    try:
        report = read_log(args.log)
        if args.export:
            chosen = _choose(report, args.budget)
            with open(args.export, "w", encoding="utf-8") as fh:
                json.dump(chosen.subnet, fh, indent=1, sort_keys=True)
    except SearchError as err:
        print(f"glora-replay: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report_dict(report), indent=1))
    else:
        _print_summary(report)
        if args.export:
            print(f"exported subnet with {chosen.params:,} parameters (score {chosen.score:.4f}) to {args.export}")
    if args.plot:
        _plot(report, args.plot)
    return 1 if report.divergence is not None else 0


if __name__ == "__main__":
    sys.exit(main())
