"""Benchmark: the search's fitness time with the folded evaluator and with ``SubnetEvaluator(compile=True)``, on
one trained supernet per seed.

all-MiniLM-L6-v2 on the movie sentences as in ``search_operators.py`` (1000 training, 500 validation, 2000 test
sentences; the supernet trained as ``glora run`` trains it, 640 steps): the default search (guided operators,
population 50, 20 generations, validation loss as fitness, LoRA r=8 (query, value)'s budget of 73,728 parameters)
runs twice from the same weights, once per evaluator. Per seed and evaluator: the fitness's seconds (the first
search of the compiled evaluator includes its compilation, reported apart by a warm-up search of one generation),
the best validation fitness and the found subnet's test accuracy. Results:
``benches/results/search_fitness_<device>.json`` (docs/benchmarks.md).

    python benches/search_fitness.py [--seeds 0 1 2]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

import glora
from supernet_quality import BUDGET, main_over_seeds, movie_supernet

EVALUATORS = {"folded": False, "compiled": True}


def seed_rows(model_dir: str, data_path: str, seed: int, device: torch.device) -> list[dict[str, Any]]:
    """One row per evaluator: the default search from the seed's supernet, timed and scored."""
    model, val, test = movie_supernet(model_dir, data_path, seed, device)
    test_eval = glora.SubnetEvaluator(model, test, device=device)
    rows = []
    for name, compiled in EVALUATORS.items():
        fitness = glora.SubnetEvaluator(model, val, metric="neg_loss", device=device, compile=compiled)
        started = time.perf_counter()
        glora.search(model, fitness, BUDGET, seed=seed, generations=1, progress=False)  # warm-up (compilation)
        warm_up = time.perf_counter() - started
        found = glora.search(model, fitness, BUDGET, seed=seed, progress=False)
        rows.append(
            {
                "evaluator": name,
                "seed": seed,
                "fitness_s": found.fitness_seconds,
                "evaluations": found.evaluations,
                "warm_up_s": warm_up,
                "validation_neg_loss": found.best_score,
                "test_accuracy": test_eval([found.best_subnet])[0],
                "adapter_params": found.best_params,
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per evaluator, the means over the seeds."""
    return [
        {
            "evaluator": name,
            "seeds": len(group),
            "fitness_s_mean": statistics.mean(r["fitness_s"] for r in group),
            "validation_neg_loss_mean": statistics.mean(r["validation_neg_loss"] for r in group),
            "test_accuracy_mean": statistics.mean(r["test_accuracy"] for r in group),
        }
        for name in EVALUATORS
        for group in [[r for r in rows if r["evaluator"] == name]]
    ]


def main() -> None:
    main_over_seeds("search_fitness", __doc__.split("\n\n")[0], seed_rows, summary, [0, 1, 2])


if __name__ == "__main__":
    main()
