"""`glora.search()`: the evolutionary search of each layer's configuration under a parameter budget.

The engine is native (``glora._engine``, Rust): it builds feasible candidates directly (no rejection
sampling), works in parallel with a seeded stream per candidate, calls ``fitness`` once per batch on the calling
thread, and appends every evaluation to a JSON Lines log from which a killed search resumes exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from glora import _engine
from glora.errors import score_error
from glora.engine.genomes import Subnet, to_subnet
from glora.engine.space import Budget, SearchSpace, budget_bounds
from glora.version import __version__

Fitness = Callable[[list[Subnet]], Sequence[float]]


@dataclass(frozen=True)
class ParetoPoint:
    subnet: Subnet
    score: float
    params: int


@dataclass
class SearchResult:
    """What a search found. ``history`` has one dict per generation (best, mean, best_so_far, evaluated)."""

    best_subnet: Subnet
    best_score: float
    best_params: int
    pareto_front: list[ParetoPoint]
    history: list[dict[str, Any]]
    evaluations: int
    recovered_evaluations: int
    engine_seconds: float
    fitness_seconds: float
    log: Optional[str] = None

    def best_under(self, max_params: int) -> ParetoPoint:
        """The best point of the Pareto front whose parameter count is at most ``max_params``."""
        fitting = [p for p in self.pareto_front if p.params <= max_params]
        if not fitting:
            raise ValueError(f"no evaluated subnet has at most {max_params} parameters (smallest on the front: {self.pareto_front[0].params})")
        return max(fitting, key=lambda p: p.score)


def _space_of(space_or_model: Any) -> SearchSpace:
    if isinstance(space_or_model, SearchSpace):
        return space_or_model
    from glora.tuner.space import search_space  # imports torch only when given a model

    return search_space(space_or_model)


def _scores(returned: Any, expected: int) -> list[float]:
    try:
        values = list(returned)
    except TypeError:
        raise score_error(f"fitness must return a sequence of {expected} scores, got {type(returned).__name__}", "not_a_sequence") from None
    if len(values) != expected:
        raise score_error(f"fitness returned {len(values)} scores for a batch of {expected} subnets", "wrong_score_count", expected=expected, got=len(values))
    out = []
    for i, v in enumerate(values):
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise score_error(f"score {i} of the batch is not a number: {v!r}", "not_a_number", index=i) from None
    return out


def check_search_settings(budget: Budget, seed: int, population: int, generations: int) -> tuple[int, int]:
    """Check the settings every search needs and return the budget as ``(min, max)``; callers that search after
    minutes of training (``glora run``) call it first."""
    lo_hi = budget_bounds(budget)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("population", population), ("generations", generations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return lo_hi


def search(
    space_or_model: Any,
    fitness: Fitness,
    budget: Budget,
    *,
    seed: int = 0,
    log: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    population: int = 50,
    parents: int = 10,
    mutants: Optional[int] = None,
    mutation_prob: float = 0.2,
    crossovers: Optional[int] = None,
    generations: int = 20,
    objective: str = "fitness",
    nonfinite: str = "error",
    threads: Optional[int] = None,
    progress: bool = True,
) -> SearchResult:
    """Search each layer's configuration under ``budget`` (a maximum parameter count or a ``(min, max)`` pair).

    ``fitness`` receives a batch (list) of subnets and returns one score per subnet, higher is better. Each
    generation after the first holds ``mutants`` mutated and ``crossovers`` crossed parents (by default half the
    population each, the reference's 25 + 25 of 50), topped up with random subnets to ``population``.
    ``objective="pareto"`` selects parents by NSGA-II rank and crowding over (score, parameters), so the
    returned ``pareto_front`` serves every budget. ``nonfinite="worst"`` ranks NaN or infinite scores last
    instead of raising. With ``log``, every evaluation is appended to a JSON Lines file; ``resume=True``
    continues a search that was interrupted, re-evaluating nothing that was recorded.
    """
    space = _space_of(space_or_model)
    lo, hi = check_search_settings(budget, seed, population, generations)
    if not callable(fitness):
        raise TypeError(f"fitness must be callable, got {type(fitness).__name__}")
    if objective not in ("fitness", "pareto"):
        raise ValueError(f"objective must be 'fitness' or 'pareto', got {objective!r}")
    if nonfinite not in ("error", "worst"):
        raise ValueError(f"nonfinite must be 'error' or 'worst', got {nonfinite!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if isinstance(population, int) and not isinstance(population, bool):
        mutants = population // 2 if mutants is None else mutants
        crossovers = population - population // 2 if crossovers is None else crossovers
    counts = {"population": population, "parents": parents, "mutants": mutants, "crossovers": crossovers, "generations": generations}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    params = {**counts, "mutation_prob": float(mutation_prob), "objective": objective, "nonfinite": nonfinite, "attempts_per_candidate": 10}

    def evaluate(genomes: list[list[int]]) -> list[float]:
        return _scores(fitness([to_subnet(space, g) for g in genomes]), len(genomes))

    bar = _progress_bar(generations) if progress else None
    on_generation = None if bar is None else _progress_callback(bar)
    try:
        raw = _engine.run_search(
            json.dumps(space.to_dict()), lo, hi, json.dumps(params), seed, evaluate,
            None if log is None else os.fspath(log), resume, threads, __version__, on_generation,
        )
    finally:
        if bar is not None:
            bar.close()
    return _result(space, json.loads(raw), None if log is None else os.fspath(log))


def _progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="glora search", unit="gen")


def _progress_callback(bar) -> Callable[[str], None]:
    def on_generation(summary_json: str) -> None:
        summary = json.loads(summary_json)
        bar.update(1)
        bar.set_postfix(best=f"{summary['best_so_far']:.4g}", mean=f"{summary['mean']:.4g}")

    return on_generation


def _score(value: Optional[float]) -> float:
    return -math.inf if value is None else float(value)


def _result(space: SearchSpace, raw: dict[str, Any], log: Optional[str]) -> SearchResult:
    best = raw["best"]
    return SearchResult(
        best_subnet=to_subnet(space, best["genome"]),
        best_score=_score(best["score"]),
        best_params=int(best["params"]),
        pareto_front=[ParetoPoint(to_subnet(space, p["genome"]), _score(p["score"]), int(p["params"])) for p in raw["front"]],
        history=raw["history"],
        evaluations=int(raw["evaluations"]),
        recovered_evaluations=int(raw.get("recovered_evaluations", 0)),
        engine_seconds=float(raw.get("engine_seconds", 0.0)),
        fitness_seconds=float(raw.get("fitness_seconds", 0.0)),
        log=log,
    )
