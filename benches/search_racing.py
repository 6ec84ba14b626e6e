"""Benchmark: racing the search's candidates (``glora.search(..., racing=True)``) where the fitness's forwards, not
the host, bound it: a validation split of 4,000 movie sentences.

all-MiniLM-L6-v2 on the movie sentences, one supernet per seed trained as ``glora run`` trains it (1000 training
sentences, 640 steps; ``supernet_quality.movie_supernet``) with 4,000 validation and 2,000 test sentences. The
default search (guided operators, population 50, 20 generations, validation loss as fitness, LoRA r=8 (query,
value)'s budget of 73,728 parameters) runs from the same weights with the folded evaluator scoring every candidate
on every sentence, then racing them. Per seed and variant: the fitness's seconds, the share of the validation
sentences forwarded, the best validation fitness, the found subnet's test accuracy and the fitness's calls by the
number of sentences they score (calls, subnets, seconds, ms per subnet). Results:
``benches/results/search_racing_<device>.json`` (docs/benchmarks.md); the 500-sentence case of ``glora run`` is in
``search_fitness.py``.

    python benches/search_racing.py [--seeds 0 1 2]
"""

from __future__ import annotations

import time
from typing import Any

import torch

import glora
from common import means_by
from search_fitness import SUMMARY_FIELDS, Counted
from supernet_quality import BUDGET, main_over_seeds, movie_supernet

VALIDATION = 4000
VARIANTS = {"whole": False, "racing": True}


def seed_rows(model_dir: str, data_path: str, seed: int, device: torch.device) -> list[dict[str, Any]]:
    """One row per variant: the default search from the seed's supernet, timed and scored."""
    model, val, test = movie_supernet(model_dir, data_path, seed, device, validation=VALIDATION)
    test_eval = glora.SubnetEvaluator(model, test, device=device)
    rows = []
    for name, racing in VARIANTS.items():
        fitness = Counted(glora.SubnetEvaluator(model, val, metric="neg_loss", device=device))
        glora.search(model, fitness, BUDGET, seed=seed, generations=1, racing=racing, progress=False)  # warm-up
        fitness.reset()
        started = time.perf_counter()
        found = glora.search(model, fitness, BUDGET, seed=seed, racing=racing, progress=False)
        rows.append(
            {
                "variant": name,
                "seed": seed,
                "search_s": time.perf_counter() - started,
                "fitness_s": found.fitness_seconds,
                "examples_share": fitness.forwarded / (found.evaluations * fitness.examples),
                "folds_kept_share": fitness.folds_kept_share,
                "validation_neg_loss": found.best_score,
                "test_accuracy": test_eval([found.best_subnet])[0],
                "adapter_params": found.best_params,
                "calls_by_examples": {
                    n: {"calls": c, "subnets": k, "seconds": t, "ms_per_subnet": 1000 * t / k}
                    for n, (c, k, t) in sorted(fitness.calls.items())
                },
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant, the means over the seeds."""
    return means_by(rows, "variant", VARIANTS, SUMMARY_FIELDS)


def main() -> None:
    main_over_seeds("search_racing", __doc__.split("\n\n")[0], seed_rows, summary, [0, 1, 2])


if __name__ == "__main__":
    main()
