"""Benchmark: the search's guided operators against the reference's, on one trained supernet per seed.

all-MiniLM-L6-v2 on the movie sentences as in ``supernet_quality.py`` (1000 training, 500 validation, 2000 test
sentences): the supernet is trained as ``glora run`` trains it (uniform paths, 640 steps, B without its vector and
scalar forms), then the search runs twice from the same weights at LoRA r=8 (query, value)'s budget of 73,728
parameters, once with ``operators="guided"`` and once with ``"reference"`` (population 50, 20 generations,
validation loss as fitness). Per seed and operators: the best validation fitness, the found subnet's test accuracy,
its parameter count and the engine's and the fitness's seconds; the random feasible subnets' test mean as the floor.
Results: ``benches/results/search_operators_<device>.json`` (docs/benchmarks.md).

    python benches/search_operators.py [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

import glora
from glora.training.sampling import BudgetSampler
from supernet_quality import BUDGET, main_over_seeds, movie_supernet

OPERATORS = ("reference", "guided")


def seed_rows(model_dir: str, data_path: str, seed: int, device: torch.device) -> list[dict[str, Any]]:
    model, val, test = movie_supernet(model_dir, data_path, seed, device)
    fitness = glora.SubnetEvaluator(model, val, metric="neg_loss", device=device)
    test_eval = glora.SubnetEvaluator(model, test, device=device)
    randoms = BudgetSampler(glora.search_space(model), (0, BUDGET), seed + 1000).draw(0, 20)
    random_mean = statistics.mean(test_eval(randoms))
    rows = []
    for operators in OPERATORS:
        found = glora.search(model, fitness, BUDGET, seed=seed, operators=operators, progress=False)
        rows.append(
            {
                "operators": operators,
                "seed": seed,
                "validation_neg_loss": found.best_score,
                "test_accuracy": test_eval([found.best_subnet])[0],
                "adapter_params": found.best_params,
                "engine_s": found.engine_seconds,
                "fitness_s": found.fitness_seconds,
                "random_feasible_test_mean": random_mean,
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    reference = {r["seed"]: r for r in rows if r["operators"] == "reference"}
    for operators in OPERATORS:
        group = [r for r in rows if r["operators"] == operators]
        out.append(
            {
                "operators": operators,
                "seeds": len(group),
                "validation_neg_loss_mean": statistics.mean(r["validation_neg_loss"] for r in group),
                "test_accuracy_mean": statistics.mean(r["test_accuracy"] for r in group),
                "test_accuracy_vs_reference": statistics.mean(
                    r["test_accuracy"] - reference[r["seed"]]["test_accuracy"] for r in group
                ),
                "better_validation_than_reference": sum(
                    r["validation_neg_loss"] > reference[r["seed"]]["validation_neg_loss"] for r in group
                ),
                "engine_s_mean": statistics.mean(r["engine_s"] for r in group),
                "fitness_s_mean": statistics.mean(r["fitness_s"] for r in group),
            }
        )
    return out


def main() -> None:
    main_over_seeds("search_operators", __doc__.split("\n\n")[0], seed_rows, summary, [0, 1, 2, 3, 4])


if __name__ == "__main__":
    main()
