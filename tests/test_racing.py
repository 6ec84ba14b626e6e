"""Racing: the search's bar passed to a racing fitness, the evaluator's early stopping, and exact resume."""

from __future__ import annotations

import math
import signal

import pytest
import torch

import glora
from glora.engine import read_log
from glora.training.evaluator import RACE_STAGES, SubnetEvaluator
from glora.tuner.search import search
from models import MLP
from spaces import AdditiveFitness, synthetic_space

SPACE = synthetic_space([(64, 32), (32, 64), (48, 48), (16, 80)] * 3)
PARENTS = 10


class RacingFitness:
    """An additive fitness that 'stops' (scores 1 below its value) every candidate more than 1 below the bar, and
    records the bars it was given."""

    races = True

    def __init__(self, interrupt_at: int = -1) -> None:
        self.additive = AdditiveFitness(SPACE, 3)
        self.bars: list[float] = []
        self.returned: list[list[float]] = []
        self.interrupt_at = interrupt_at

    def race(self, batch: list[dict], bar: float) -> list[float]:
        self.bars.append(bar)
        if len(self.bars) == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)
        values = self.additive(batch)
        self.returned.append([v - 1.0 if v < bar - 1.0 else v for v in values])
        return self.returned[-1]

    def __call__(self, batch: list[dict]) -> list[float]:
        raise AssertionError("a racing fitness is called through race()")


def _search(fitness: RacingFitness, **kw) -> glora.SearchResult:
    return search(SPACE, fitness, 3000, seed=4, generations=6, progress=False, **kw)


def test_the_search_passes_its_bar() -> None:
    fitness = RacingFitness()
    _search(fitness)
    assert fitness.bars[0] == -math.inf and len(fitness.bars) == 6
    scores: list[float] = []
    for generation, (bar, returned) in enumerate(zip(fitness.bars, fitness.returned)):
        expected = sorted(scores, reverse=True)[PARENTS - 1] if len(scores) >= PARENTS else -math.inf
        assert bar == expected, f"generation {generation}"
        scores += returned
    assert any(b > -math.inf for b in fitness.bars)
    pareto = RacingFitness()
    _search(pareto, objective="pareto")
    assert all(bar == -math.inf for bar in pareto.bars)


def test_an_interrupted_raced_search_resumes_exactly(tmp_path) -> None:
    whole = RacingFitness()
    uninterrupted = _search(whole)
    log = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _search(RacingFitness(interrupt_at=3), log=log)
    resumed_fitness = RacingFitness()
    resumed = _search(resumed_fitness, log=log, resume=True)
    assert resumed.history == uninterrupted.history and resumed.best_subnet == uninterrupted.best_subnet
    assert resumed_fitness.bars == whole.bars[-len(resumed_fitness.bars) :]


def _wrapped(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = MLP()
    glora.wrap(model, glora.GLoRAConfig(rank=2, target_modules=["fc1", "fc2"], modules_to_save=["head"]))
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    return model


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("metric", ["neg_loss", "accuracy"])
def test_the_evaluator_stops_below_the_bar_and_scores_the_rest_in_full(metric: str) -> None:
    model, (x, y) = _wrapped(), _data()
    plain = SubnetEvaluator(model, (x, y), metric=metric)
    raced = SubnetEvaluator(model, (x, y), metric=metric, racing=True)
    assert raced.races and raced.metric_name == f"{metric}, raced"
    subnets = [glora.sample_subnet(model, seed) for seed in range(6)]
    full = plain(subnets)
    assert raced(subnets) == pytest.approx(full, abs=1e-6), "no bar: every candidate scored in full"
    assert raced.race(subnets, -math.inf) == pytest.approx(full, abs=1e-6)
    assert raced.examples_evaluated == 2 * 6 * len(y)
    quarter = math.ceil(RACE_STAGES[0] * len(y))
    first = SubnetEvaluator(model, (x[:quarter], y[:quarter]), metric=metric)(subnets)
    before = raced.examples_evaluated
    stopped = raced.race(subnets, math.inf)
    assert stopped == pytest.approx(first, abs=1e-6), "an unreachable bar stops everything after the first stage"
    assert raced.examples_evaluated - before == 6 * quarter
    bar = sorted(full)[3]
    mixed = raced.race(subnets, bar)
    for score, whole in zip(mixed, full):
        if score != pytest.approx(whole, abs=1e-6):
            assert whole < bar + 1e-6 or score < bar, "only candidates below the bar stop"


def test_racing_refuses_what_it_cannot_do() -> None:
    model, data = _wrapped(), _data()
    with pytest.raises(ValueError, match="racing needs a built-in metric"):
        SubnetEvaluator(model, data, metric=lambda lo, la: 0.0, racing=True)
    with pytest.raises(ValueError, match="racing scores one subnet per pass"):
        SubnetEvaluator(model, data, racing=True, subnets_per_pass=2)
    with pytest.raises(ValueError, match="racing must be True or False"):
        SubnetEvaluator(model, data, racing="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"race\(\) needs"):
        SubnetEvaluator(model, data).race([], 0.0)
    with pytest.raises(ValueError, match="bar must be a number"):
        SubnetEvaluator(model, data, racing=True).race([], math.nan)


def test_a_raced_search_on_a_model_logs_its_metric(tmp_path) -> None:
    model, data = _wrapped(), _data(80)
    evaluator = SubnetEvaluator(model, data, metric="neg_loss", racing=True)
    result = glora.search(model, evaluator, 400, seed=0, generations=4, population=20, log=tmp_path / "s.jsonl")
    assert read_log(tmp_path / "s.jsonl").metric == "neg_loss, raced"
    assert result.evaluations == evaluator.subnets_evaluated
    assert evaluator.examples_evaluated < result.evaluations * 80, "some candidates stopped early"
