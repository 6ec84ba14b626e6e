"""glora.search(): budgets, quality against random search, errors, determinism, logs, resume and replay."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import glora
from glora.engine import SearchConfig, SearchSpace
from glora.tuner.search import search
from spaces import AdditiveFitness, cut_logs, synthetic_space, vit_like_space

SMALL = synthetic_space([(64, 32), (32, 64), (48, 48), (16, 80)] * 3)


def _run(log=None, resume=False, fitness=None, **kw):
    fitness = fitness or AdditiveFitness(SMALL, 0)
    if "config" not in kw:
        kw.setdefault("generations", 6)
    return search(
        SMALL, fitness, kw.pop("budget", 3000), seed=kw.pop("seed", 5), log=log, resume=resume, progress=False, **kw
    )


def test_every_candidate_respects_the_budget_and_is_evaluated_once() -> None:
    space = vit_like_space()
    for budget in (290_000, (200_000, 440_000), 860_000):
        fitness = AdditiveFitness(space, 1)
        result = search(space, fitness, budget, seed=3, generations=4, progress=False)
        lo, hi = budget if isinstance(budget, tuple) else (0, budget)
        for key in fitness.seen:
            assert lo <= space.count(json.loads(key)) <= hi
        assert len(set(fitness.seen)) == len(fitness.seen) == result.evaluations == 200
        assert result.best_params == space.count(result.best_subnet) <= hi


def test_search_finds_the_known_optimum_where_random_search_does_not() -> None:
    space = synthetic_space([(96, 64), (64, 96), (80, 80), (32, 128)] * 4)
    for budget, value_seed in ((4000, 11), (2000, 12), (8000, 13)):
        fitness = AdditiveFitness(space, value_seed)
        optimum = fitness.optimum(budget)
        result = search(space, fitness, budget, seed=1, progress=False)
        reference = search(space, fitness, budget, seed=1, progress=False, operators="reference")
        random_best = max(fitness.score(s) for s in space.sample(budget, result.evaluations, 99))
        assert result.best_score <= optimum + 1e-9
        # 1,000 evaluations on 80 genes: the guided operators reach the optimum (at least 98 % of it), the
        # reference algorithm lands about 10 % below it, random search with as many samples about 38 % below
        assert result.best_score >= 0.98 * optimum, f"guided search at {result.best_score / optimum:.1%}"
        assert reference.best_score < 0.95 * optimum, f"reference search at {reference.best_score / optimum:.1%}"
        assert random_best < 0.75 * optimum, f"random search at {random_best / optimum:.1%}"


def test_pareto_objective_returns_a_front_for_every_budget() -> None:
    result = _run(objective="pareto", budget=6000, generations=8)
    front = result.pareto_front
    assert len(front) > 3
    assert all(a.params < b.params and a.score < b.score for a, b in zip(front, front[1:]))
    point = result.best_under(3000)
    assert point.params <= 3000 and SMALL.count(point.subnet) == point.params
    with pytest.raises(ValueError, match="no evaluated subnet"):
        result.best_under(-1)


def test_same_seed_same_result_for_any_thread_count() -> None:
    results = [_run(threads=t, seed=8) for t in (1, 3, 16)]
    assert all(r.history == results[0].history and r.best_subnet == results[0].best_subnet for r in results)
    assert _run(seed=9).history != results[0].history


def test_bad_budgets_scores_and_arguments() -> None:
    with pytest.raises(glora.ImpossibleBudgetError, match="achievable parameter counts range from 0 to") as info:
        _run(budget=(10**9, 10**9 + 1))
    assert info.value.kind == "impossible_budget" and info.value.details["smallest"] == 0
    assert info.value.details["largest"] == SMALL.max_params
    with pytest.raises(ValueError, match="minimum 5 exceeds its maximum 4"):
        _run(budget=(5, 4))
    with pytest.raises(ValueError, match="non-negative whole number"):
        _run(budget=-3)
    with pytest.raises(glora.ScoreError, match="returned 1 scores for a batch of 50") as info:
        _run(fitness=lambda batch: [1.0])
    assert info.value.kind == "wrong_score_count"
    with pytest.raises(glora.ScoreError, match="score 0 of the batch is not finite"):
        _run(fitness=lambda batch: [math.nan] * len(batch))
    with pytest.raises(glora.ScoreError, match="not a number"):
        _run(fitness=lambda batch: ["high"] * len(batch))
    with pytest.raises(glora.ScoreError, match="sequence"):
        _run(fitness=lambda batch: None)
    worst = _run(
        fitness=lambda batch: [math.inf if i == 0 else 1.0 for i in range(len(batch))], nonfinite="worst", generations=2
    )
    assert worst.best_score == 1.0
    with pytest.raises(ValueError, match="objective"):
        _run(objective="speed")
    with pytest.raises(ValueError, match="population must be a positive integer, got 0"):
        _run(population=0)
    with pytest.raises(ValueError, match="generations must be a positive integer, got 0"):
        _run(generations=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -2"):
        _run(seed=-2)
    with pytest.raises(glora.SearchError, match="mutation_prob"):
        _run(mutation_prob=2.0)
    with pytest.raises(glora.SearchError, match="search space is empty"):
        search(SearchSpace(()), lambda b: [0.0] * len(b), 10, progress=False)
    with pytest.raises(TypeError, match="callable"):
        search(SMALL, 3, 10, progress=False)
    with pytest.raises(glora.SearchError, match="threads must be a positive integer or None, got 0"):
        _run(threads=0)
    with pytest.raises(TypeError, match="unknown search setting 'populaton'"):
        _run(populaton=10)


def test_a_raising_fitness_is_re_raised_unchanged(tmp_path) -> None:
    class Boom(Exception):
        pass

    calls = []

    def fitness(batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise Boom("disk full")
        return AdditiveFitness(SMALL, 0)(batch)

    with pytest.raises(Boom, match="disk full"):
        _run(log=tmp_path / "run.jsonl", fitness=fitness)
    resumed = _run(log=tmp_path / "run.jsonl", resume=True)
    assert resumed.recovered_evaluations == 100
    assert resumed.history == _run().history


def test_malformed_subnets_are_named() -> None:
    good = SMALL.to_subnet([0] * (len(SMALL) * 5))
    assert SMALL.to_genome(good) == [0] * (len(SMALL) * 5)
    bad = {**good, "layer0": {**good["layer0"], "A": "lora_16"}}
    with pytest.raises(ValueError, match="layer 'layer0': choice 'lora_16' for gene A is not in the search space"):
        SMALL.to_genome(bad)
    with pytest.raises(ValueError, match="layer 'layer0': configuration lacks gene C"):
        SMALL.count({**good, "layer0": {"A": "none", "B": "none"}})
    with pytest.raises(KeyError, match="missing"):
        SMALL.to_genome({"layer0": good["layer0"]})
    with pytest.raises(TypeError, match="must be a dict"):
        SMALL.count([good])


def _uninterrupted(seed: int = 5):
    return _run(seed=seed)


def test_resume_after_truncation_at_random_points_reaches_the_same_result(tmp_path) -> None:
    reference = _uninterrupted()
    full_log = tmp_path / "full.jsonl"
    _run(log=full_log)
    data = full_log.read_bytes()
    for log, cut in cut_logs(full_log, tmp_path, 10, seed=0):
        fitness = AdditiveFitness(SMALL, 0)
        result = _run(log=log, resume=True, fitness=fitness)
        assert result.history == reference.history and result.best_subnet == reference.best_subnet
        assert result.pareto_front == reference.pareto_front
        recorded = sum(
            1
            for line in data[:cut].split(b"\n")[1:]
            if line.startswith(b'{"type":"eval"') and data[:cut].count(b"\n") > 0
        )
        assert len(fitness.seen) + result.recovered_evaluations == reference.evaluations
        assert result.recovered_evaluations <= recorded
        assert log.read_bytes() == data, "the resumed log must equal the uninterrupted one"


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from glora.engine import search
from spaces import AdditiveFitness, synthetic_space
space = synthetic_space([(64, 32), (32, 64), (48, 48), (16, 80)] * 3)
fit = AdditiveFitness(space, 0)
def slow(batch):
    time.sleep(0.25)
    return fit(batch)
search(space, slow, 3000, seed=5, generations=6, log={log!r}, resume=True, progress=False)
"""


def _logged_evaluations(log) -> int:
    return sum(1 for line in log.read_bytes().split(b"\n") if line.startswith(b'{"type":"eval"'))


@pytest.mark.slow
def test_resume_after_a_real_kill(tmp_path) -> None:
    reference = _uninterrupted()
    tests = os.path.dirname(os.path.abspath(__file__))
    rng = random.Random(1)
    for trial in range(2):
        log = tmp_path / f"killed{trial}.jsonl"
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(tests=tests, log=str(log))])
        try:
            while not (log.exists() and _logged_evaluations(log) > 0):  # the search is under way
                assert proc.poll() is None, "the search process ended before it could be killed"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the search process was not killed"
        killed_at = _logged_evaluations(log)
        assert 0 < killed_at < reference.evaluations, "the kill must land mid-search"
        result = _run(log=log, resume=True)
        assert 0 < result.recovered_evaluations <= killed_at
        assert result.history == reference.history and result.best_subnet == reference.best_subnet


def test_ctrl_c_stops_between_batches_and_resumes(tmp_path) -> None:
    calls = []

    def fitness(batch):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return AdditiveFitness(SMALL, 0)(batch)

    with pytest.raises(KeyboardInterrupt):
        _run(log=tmp_path / "run.jsonl", fitness=fitness)
    result = _run(log=tmp_path / "run.jsonl", resume=True)
    assert result.history == _uninterrupted().history


def test_log_refusals(tmp_path) -> None:
    log = tmp_path / "run.jsonl"
    _run(log=log)
    with pytest.raises(glora.LogError, match="exists and is not empty"):
        _run(log=log)
    with pytest.raises(glora.LogError, match=r"does not match this search: seed 5 \(log\) vs 6") as info:
        _run(log=log, resume=True, seed=6)
    assert info.value.kind == "log_mismatch"
    with pytest.raises(glora.LogError, match=r"budget \[0, 3000\] \(log\) vs \[0, 2000\]"):
        _run(log=log, resume=True, budget=2000)
    with pytest.raises(glora.LogError, match="population 50 \\(log\\) vs 40"):
        _run(log=log, resume=True, population=40)
    lines = log.read_text().splitlines()
    lines[4] = lines[4][:20] + "#" + lines[4][21:]
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(glora.LogError, match="line 5") as info:
        _run(log=log, resume=True)
    assert info.value.details["line"] == 5


def _replay(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; sys.modules['torch'] = None; from glora.cli.replay import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_glora_replay_verifies_summarises_and_exports_without_torch(tmp_path) -> None:
    log = tmp_path / "run.jsonl"
    result = _run(log=log, objective="pareto", budget=6000)
    done = _replay(str(log))
    assert done.returncode == 0, done.stderr
    assert "verified: the engine reproduces every logged genome" in done.stdout
    as_json = json.loads(_replay(str(log), "--json").stdout)
    assert as_json["history"] == [h.to_dict() for h in result.history] and as_json["complete"]
    assert [p["params"] for p in as_json["front"]] == [p.params for p in result.pareto_front]
    out = tmp_path / "best.json"
    assert _replay(str(log), "--export", str(out), "--budget", "3000").returncode == 0
    exported = json.loads(out.read_text())
    assert exported == result.best_under(3000).subnet
    assert _replay(str(log), "--export", str(out), "--budget", "0").returncode == 2

    text = log.read_text().splitlines()
    record = json.loads(text[3])
    record["genome"][0] = (record["genome"][0] + 1) % 4
    text[3] = json.dumps(record, separators=(",", ":"))
    log.write_text("\n".join(text) + "\n")
    diverged = _replay(str(log))
    assert diverged.returncode == 1 and "DIVERGES at generation 0, candidate 2" in diverged.stdout

    log.write_text("not json\n")
    broken = _replay(str(log))
    assert broken.returncode == 2 and "line 1" in broken.stderr


def test_replay_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    log = tmp_path / "run.jsonl"
    _run(log=log)
    png = tmp_path / "search.png"
    assert _replay(str(log), "--plot", str(png)).returncode == 0
    assert png.stat().st_size > 1000


def test_search_accepts_a_wrapped_model() -> None:
    torch = pytest.importorskip("torch")
    from models import MLP

    model = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"]))
    x = torch.randn(8, 12)

    def fitness(batch):
        scores = []
        for subnet in batch:
            glora.set_subnet(model, subnet)
            with torch.no_grad():
                scores.append(-model(x).pow(2).mean().item() - 1e-6 * glora.count_params(model, subnet))
        return scores

    result = search(model, fitness, 500, generations=3, progress=False)
    assert glora.count_params(model, result.best_subnet) == result.best_params <= 500
    merged = glora.merge(model, result.best_subnet)
    assert sum(p.numel() for p in merged.parameters()) == sum(
        p.numel() for n, p in model.named_parameters() if "base_layer" in n or n.startswith("head")
    )


def test_a_config_object_and_keywords_give_the_same_search() -> None:
    by_keywords = _run(population=30, mutants=10, generations=3)
    by_config = _run(config=SearchConfig(population=30, mutants=10, generations=3))
    mixed = _run(config=SearchConfig(population=30, generations=9), mutants=10, generations=3)
    assert by_keywords.history == by_config.history == mixed.history
    assert by_keywords.best_subnet == by_config.best_subnet and len(by_config.history) == 3
