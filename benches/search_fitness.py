"""Benchmark: the search's fitness time with the folded evaluator (keeping folds, its default, and folding every
subnet anew; the data cut as ``glora run`` cuts it, and in batches of 256 sentences as it did before), with
``SubnetEvaluator(compile=True)`` and with the folded evaluator racing the candidates (``racing=True``), on one
trained supernet per seed.

all-MiniLM-L6-v2 on the movie sentences as in ``search_operators.py`` (1000 training, 500 validation, 2000 test
sentences; the supernet trained as ``glora run`` trains it, 640 steps): the default search (guided operators,
population 50, 20 generations, validation loss as fitness, LoRA r=8 (query, value)'s budget of 73,728 parameters)
runs from the same weights once per variant. Per seed and variant: the fitness's seconds (the first search of the
compiled evaluator includes its compilation, reported apart by a warm-up search of one generation), the share of
the validation examples forwarded (racing stops candidates early), the share of layer folds found kept, the best
validation fitness and the found subnet's test accuracy. Results: ``benches/results/search_fitness_<device>.json``
(docs/benchmarks.md).

    python benches/search_fitness.py [--seeds 0 1 2] [--variants folded folded_256 ...]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Callable

import torch

import glora
from common import means_by
from glora.training.batches import evaluation_batch_size, evaluation_batch_tokens
from supernet_quality import BUDGET, main_over_seeds, movie_supernet

SUMMARY_FIELDS = ["fitness_s", "examples_share", "folds_kept_share", "validation_neg_loss", "test_accuracy"]
EVALUATORS: dict[str, tuple[bool, dict[str, Any]]] = {
    "folded": (False, {}),
    "folded_256": (False, {"batch_tokens": None}),
    "folded_not_kept": (False, {"fold_cache_bytes": 0}),
    "compiled": (False, {"compile": True}),
    "folded_racing": (True, {}),
}
"""Each variant's racing and its evaluator options over ``glora run``'s (:func:`runner_batching`): the folded
evaluator keeps folds during a search by default, "not kept" folds every layer of every subnet anew, and
"folded_256" cuts the data into batches of 256 sentences, as ``glora run`` did before it cut token data by tokens."""


def runner_batching(device: torch.device) -> dict[str, Any]:
    """The evaluator's batching in ``glora run``'s search."""
    return {"batch_size": evaluation_batch_size(device), "batch_tokens": evaluation_batch_tokens(device)}


class Counted:
    """A fitness that counts the examples it forwards (whole batches count every example) and times its calls by
    how many examples they score: ``calls[examples] = [calls, subnets, seconds]``."""

    def __init__(self, evaluator: glora.SubnetEvaluator) -> None:
        self.evaluator = evaluator
        self.examples = evaluator.examples
        self.metric_name = evaluator.metric_name
        self.forwarded = 0
        self.calls: dict[int, list[float]] = {}
        self._folds = (0, 0)

    def search_scope(self) -> Any:
        """The evaluator's: glora.search enters it, and the evaluator keeps folds for the search."""
        return self.evaluator.search_scope()

    def reset(self) -> None:
        """Forget the counts (the folds kept by a search are dropped when it ends)."""
        self.forwarded, self.calls = 0, {}
        self._folds = (self.evaluator.fold_cache.hits, self.evaluator.fold_cache.misses)

    @property
    def folds_kept_share(self) -> float:
        """The share of layer folds since the last reset that the evaluator found kept."""
        hits = self.evaluator.fold_cache.hits - self._folds[0]
        misses = self.evaluator.fold_cache.misses - self._folds[1]
        return hits / max(1, hits + misses)

    def _timed(self, subnets: list, examples: int, score: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = score()
        entry = self.calls.setdefault(examples, [0, 0, 0.0])
        entry[0] += 1
        entry[1] += len(subnets)
        entry[2] += time.perf_counter() - started
        self.forwarded += len(subnets) * examples
        return out

    def __call__(self, subnets: list) -> list[float]:
        return self._timed(subnets, self.examples, lambda: self.evaluator(subnets))

    def per_example(self, subnets: list, examples: list[int]) -> list[list[float]]:
        return self._timed(subnets, len(examples), lambda: self.evaluator.per_example(subnets, examples))


def seed_rows(
    model_dir: str, data_path: str, seed: int, device: torch.device, variants: Sequence[str] = tuple(EVALUATORS)
) -> list[dict[str, Any]]:
    """One row per variant: the default search from the seed's supernet, timed and scored."""
    model, val, test = movie_supernet(model_dir, data_path, seed, device)
    test_eval = glora.SubnetEvaluator(model, test, device=device)
    rows = []
    for name in variants:
        racing, options = EVALUATORS[name]
        options = runner_batching(device) | options
        fitness = Counted(glora.SubnetEvaluator(model, val, metric="neg_loss", device=device, **options))
        started = time.perf_counter()
        glora.search(model, fitness, BUDGET, seed=seed, generations=1, racing=racing, progress=False)  # warm-up
        warm_up = time.perf_counter() - started
        fitness.reset()
        found = glora.search(model, fitness, BUDGET, seed=seed, racing=racing, progress=False)
        rows.append(
            {
                "evaluator": name,
                "seed": seed,
                "fitness_s": found.fitness_seconds,
                "evaluations": found.evaluations,
                "examples_share": fitness.forwarded / (found.evaluations * fitness.examples),
                "warm_up_s": warm_up,
                "validation_neg_loss": found.best_score,
                "test_accuracy": test_eval([found.best_subnet])[0],
                "adapter_params": found.best_params,
                "folds_kept_share": fitness.folds_kept_share,
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per evaluator, the means over the seeds."""
    return means_by(rows, "evaluator", EVALUATORS, SUMMARY_FIELDS)


def main() -> None:
    main_over_seeds("search_fitness", __doc__.split("\n\n")[0], seed_rows, summary, [0, 1, 2], list(EVALUATORS))


if __name__ == "__main__":
    main()
