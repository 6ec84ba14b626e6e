"""``glora-replay LOG``: re-run a search from its log, verify it, and summarise it (no torch needed).

The evolution is replayed with the recorded scores; every genome the engine produces must equal the logged one
(else the replay reports where it diverges and exits with status 1). Then it prints the per-generation best and
mean, the best subnet and the Pareto front; ``--export`` writes a subnet JSON that ``glora.set_subnet`` and
``glora.merge`` accept.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Optional, Sequence

from glora import _engine
from glora.errors import SearchError
from glora.engine.genomes import to_subnet
from glora.engine.space import SearchSpace


def replay(path: str) -> dict[str, Any]:
    """The replay report of a log as a dict (see ``glora-replay --json``)."""
    raw = json.loads(_engine.replay_log(path))
    space = SearchSpace.from_dict(raw["header"]["space"])
    header = raw["header"]
    report: dict[str, Any] = {
        "log": path,
        "glora_version": header["glora_version"],
        "seed": header["seed"],
        "budget": [header["budget"]["min"], header["budget"]["max"]],
        "params": header["params"],
        "layers": len(space),
        "logged_evaluations": raw["logged_evaluations"],
        "replayed_evaluations": raw["evaluations"],
        "generations": raw["generations"],
        "complete": bool(raw["done"]) and raw["divergence"] is None,
        "truncated_tail": raw["truncated_tail"],
        "divergence": raw["divergence"],
        "history": raw["history"],
        "best": None,
        "front": [],
    }
    if raw["best"] is not None:
        report["best"] = _point(space, raw["best"])
        report["front"] = [_point(space, p) for p in raw["front"]]
    return report


def _point(space: SearchSpace, raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "score": -math.inf if raw["score"] is None else raw["score"],
        "params": raw["params"],
        "generation": raw["generation"],
        "subnet": to_subnet(space, raw["genome"]),
    }


def choose(report: dict[str, Any], budget: Optional[int]) -> dict[str, Any]:
    """The best subnet, or the best Pareto point with at most ``budget`` parameters."""
    if report["best"] is None:
        raise SearchError(f"{report['log']} records no evaluation")
    if budget is None:
        return report["best"]
    fitting = [p for p in report["front"] if p["params"] <= budget]
    if not fitting:
        raise SearchError(f"no subnet of the Pareto front has at most {budget} parameters (smallest: {report['front'][0]['params']})")
    return max(fitting, key=lambda p: p["score"])


def _print_summary(report: dict[str, Any]) -> None:
    print(f"log {report['log']}: {len(report['history'])} generations, {report['replayed_evaluations']} evaluations replayed "
          f"of {report['logged_evaluations']} logged; seed {report['seed']}, budget {report['budget']}, {report['layers']} layers")
    if report["divergence"] is not None:
        d = report["divergence"]
        print(f"DIVERGES at generation {d['generation']}, candidate {d['index']}: the log does not match the engine's evolution")
    else:
        print("verified: the engine reproduces every logged genome" + ("" if report["complete"] else " (the search is incomplete)"))
    if report["truncated_tail"]:
        print("note: the last line was cut off mid-write (an interrupted run); resuming discards it")
    print(f"{'gen':>4} {'evaluated':>9} {'best':>10} {'mean':>10} {'best so far':>12}")
    for h in report["history"]:
        print(f"{h['generation']:>4} {h['evaluated']:>9} {h['best']:>10.4f} {h['mean']:>10.4f} {h['best_so_far']:>12.4f}")
    if report["best"] is not None:
        b = report["best"]
        print(f"best: score {b['score']:.4f} with {b['params']:,} parameters (generation {b['generation']})")
        print("pareto front (params -> score): " + ", ".join(f"{p['params']:,} -> {p['score']:.4f}" for p in report["front"]))


def _plot(report: dict[str, Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'glora[plot]'") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    gens = [h["generation"] for h in report["history"]]
    left.plot(gens, [h["best"] for h in report["history"]], label="best of generation")
    left.plot(gens, [h["mean"] for h in report["history"]], label="mean of generation")
    left.plot(gens, [h["best_so_far"] for h in report["history"]], label="best so far", linestyle="--")
    left.set_xlabel("generation")
    left.set_ylabel("fitness")
    left.legend()
    front = report["front"]
    right.plot([p["params"] for p in front], [p["score"] for p in front], marker="o")
    right.set_xlabel("adapter parameters")
    right.set_ylabel("fitness")
    right.set_title("Pareto front")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="glora-replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="a search log (JSON Lines) written by glora.search(..., log=...)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    parser.add_argument("--export", metavar="FILE", help="write the best subnet (or the best under --budget) as JSON")
    parser.add_argument("--budget", type=int, help="with --export: the best Pareto point with at most this many parameters")
    parser.add_argument("--plot", metavar="FILE.png", help="fitness by generation and the Pareto front (needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        report = replay(args.log)
        if args.export:
            chosen = choose(report, args.budget)
            with open(args.export, "w", encoding="utf-8") as fh:
                json.dump(chosen["subnet"], fh, indent=1, sort_keys=True)
    except SearchError as err:
        print(f"glora-replay: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_summary(report)
        if args.export:
            print(f"exported subnet with {chosen['params']:,} parameters (score {chosen['score']:.4f}) to {args.export}")
    if args.plot:
        _plot(report, args.plot)
    return 1 if report["divergence"] is not None else 0


if __name__ == "__main__":
    sys.exit(main())
