"""The evolutionary search of each layer's configuration under a parameter budget (docs/method.md, section 4).

The engine is native: it builds feasible candidates directly (no rejection sampling), works in parallel with a
seeded stream per candidate, calls ``fitness`` once per batch on the calling thread, and appends every evaluation
to a JSON Lines log from which a killed search resumes exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Callable, Optional, Union

from glora._engine import Generation, SearchConfig, SearchResult, budget_bounds, check_seed, run_search
from glora.engine.space import Budget, SearchSpace, Subnet
from glora.version import __version__

Fitness = Callable[[list[Subnet]], Sequence[float]]

__all__ = ["Fitness", "check_search_settings", "search"]


def _config(config: Optional[SearchConfig], settings: dict[str, Any]) -> SearchConfig:
    """``config`` with the keyword ``settings`` applied over it (the engine checks them and fills defaults)."""
    return (config or SearchConfig()).replace(**settings) if settings else (config or SearchConfig())


def _racing(fitness: object, settings: dict[str, Any]) -> None:
    """Resolve ``racing=True`` to the fitness's ``examples`` and ``racing=False`` to no racing, in place."""
    if settings.get("racing") is False:
        settings["racing"] = None
    elif settings.get("racing") is True:
        examples = getattr(fitness, "examples", None)
        if isinstance(examples, bool) or not isinstance(examples, int):
            raise TypeError(
                "racing=True takes the number of examples from the fitness's `examples` attribute, which "
                f"{type(fitness).__name__} lacks; pass racing=<number of examples> instead"
            )
        settings["racing"] = examples


def _per_example(fitness: object, examples: int) -> Callable[[list[Subnet], list[int]], Any]:
    """The raced fitness's ``per_example(subnets, examples)``, checked against the search's example count."""
    per_example = getattr(fitness, "per_example", None)
    if not callable(per_example):
        raise TypeError(
            f"racing={examples} needs a fitness with a method per_example(subnets, examples) returning each "
            f"subnet's score on each example; {type(fitness).__name__} has none (SubnetEvaluator has one)"
        )
    own = getattr(fitness, "examples", None)
    if isinstance(own, int) and not isinstance(own, bool) and own != examples:
        raise ValueError(f"racing={examples} does not match the fitness, which scores {own} examples")
    return per_example


def check_search_settings(
    budget: Budget, seed: int, config: Optional[SearchConfig] = None, **settings: Any
) -> tuple[int, int]:
    """Check a search's budget, seed and settings before it runs (``glora run`` checks them before minutes of
    training); return the budget as ``(min, max)``."""
    bounds = budget_bounds(budget)
    check_seed(seed)
    _config(config, settings)
    return bounds


def search(
    space: SearchSpace,
    fitness: Fitness,
    budget: Budget,
    *,
    seed: int = 0,
    log: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    config: Optional[SearchConfig] = None,
    progress: bool = True,
    **settings: Any,
) -> SearchResult:
    """Search each layer's configuration of ``space`` under ``budget`` (a maximum parameter count or a
    ``(min, max)`` pair).

    ``fitness`` receives a batch (list) of subnets and returns one score per subnet, higher is better. The
    settings come from ``config`` (a :class:`SearchConfig`) and keywords of the same names (population, parents,
    mutants, crossovers, mutation_prob, generations, objective, nonfinite, operators, threads, metric), keywords winning;
    counts are at most 1,000,000, ``threads`` at most 1024 and capped at the machine's cores, and ``metric`` (say
    ``"neg_loss"``) names what the scores measure and is recorded in the log for ``glora-replay``. ``racing``
    (the number of examples the fitness scores, or True to take the fitness's ``examples``) races each generation's
    candidates: ``fitness.per_example(subnets, examples)`` scores them on a quarter, then a half, then all of the
    examples (one seeded order; each row one subnet's score per example, the whole-data score their mean), and a
    candidate stops as soon as its scores, paired with the worst parent's, put it 2 standard errors below that
    parent; a stopped candidate teaches the guided operators but never becomes a parent nor the best
    (docs/method.md, section 4). Each
    generation after the first holds ``mutants`` mutated and ``crossovers`` crossed parents, topped up with random
    subnets to ``population``. With ``operators="guided"`` (the default) an additive estimate of each choice's worth,
    fitted to the scores so far, repairs and fills children toward the best worth per parameter, and up to half of
    the mutants come from the best-estimated one-gene changes of the best subnet; ``"reference"`` keeps the reference
    algorithm's random redraws and repair. ``objective="pareto"`` selects parents by NSGA-II rank and crowding over (score,
    parameters), so the returned ``pareto_front`` serves every budget. A score is a Python int or float, a numpy
    number or a 0-d tensor (a :class:`~glora.errors.ScoreError` names anything else). ``nonfinite="worst"`` ranks
    NaN or infinite scores last (as minus infinity; the log writes null) instead of raising. With ``log``, every
    evaluation is appended to a JSON Lines file; ``resume=True`` continues a search that was interrupted,
    re-evaluating nothing that was recorded, and reaches the same result as an uninterrupted run (docs/method.md,
    section 4); a log cut inside its header records nothing and is started afresh. A fitness with a
    ``search_scope()`` method is asked for a context manager that spans the whole search, exited when the search
    ends or fails (a :class:`~glora.training.evaluator.SubnetEvaluator` keeps folded weights between its calls
    inside it; a wrapper around one forwards ``search_scope``).
    """
    _racing(fitness, settings)
    chosen = _config(config, settings)
    per_example = None if chosen.racing is None else _per_example(fitness, chosen.racing)
    bar = _progress_bar(chosen.generations) if progress else None
    try:
        scope = getattr(fitness, "search_scope", None)
        with scope() if callable(scope) else nullcontext():
            return run_search(
                space,
                fitness,
                budget,
                seed=seed,
                config=chosen,
                log=None if log is None else os.fspath(log),
                resume=resume,
                glora_version=__version__,
                on_generation=None if bar is None else _progress_callback(bar),
                per_example=per_example,
            )
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="glora search", unit="gen")


def _progress_callback(bar: Any) -> Callable[[Generation], None]:
    def on_generation(summary: Generation) -> None:
        bar.update(1)
        bar.set_postfix(best=f"{summary.best_so_far:.4g}", mean=f"{summary.mean:.4g}")

    return on_generation
