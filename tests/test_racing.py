"""Raced searches (``glora.search(..., racing=...)``): candidates scored on growing shares of the examples and stopped
below the parents' bar find subnets as good as scoring every candidate on all of them, with fewer examples scored;
the same seed gives the same search on any thread count; an interrupted raced search resumes exactly; wrong fitness
functions, settings and logs are named; ``SubnetEvaluator.per_example`` agrees with its whole-data scores."""

from __future__ import annotations

import json
import random

import numpy
import pytest
import torch

import glora
from glora.engine import read_log
from glora.tuner.search import search
from models import MLP, bert_tiny
from spaces import PerExampleAdditiveFitness, cut_logs, synthetic_space, vit_like_space

SMALL = synthetic_space([(64, 32), (32, 64), (48, 48), (16, 80)] * 3)


def _run(fitness=None, log=None, resume=False, **kw):
    fitness = fitness or PerExampleAdditiveFitness(SMALL, 0, examples=60)
    kw.setdefault("generations", 6)
    kw.setdefault("racing", True)
    return search(
        SMALL, fitness, kw.pop("budget", 3000), seed=kw.pop("seed", 5), log=log, resume=resume, progress=False, **kw
    )


def test_racing_finds_subnets_as_good_with_fewer_examples() -> None:
    """Over three seeds (one search's answer varies more between seeds than racing changes it)."""
    space = vit_like_space()
    budget = 290_000
    raced_found, whole_found, shares = [], [], []
    for seed in range(3):
        raced, whole = (PerExampleAdditiveFitness(space, seed, examples=200, noise=2.0) for _ in range(2))
        found_raced = search(space, raced, budget, seed=seed, racing=True, progress=False)
        found_whole = search(space, whole, budget, seed=seed, progress=False)
        optimum = raced.optimum(budget)
        raced_found.append(raced.score(found_raced.best_subnet) / optimum)
        whole_found.append(whole.score(found_whole.best_subnet) / optimum)
        shares.append(raced.examples_scored / (found_raced.evaluations * 200))
        assert whole.examples_scored == found_whole.evaluations * 200
    assert sum(raced_found) / 3 >= sum(whole_found) / 3 - 0.01, (raced_found, whole_found)
    assert max(shares) < 0.92, f"racing scored {shares} of the examples"


def test_stopped_candidates_are_never_parents_nor_best(tmp_path) -> None:
    log = tmp_path / "raced.jsonl"
    result = _run(log=log, generations=8)
    evals = [json.loads(line) for line in log.read_text().splitlines()[1:] if '"type":"eval"' in line]
    stopped = [e for e in evals if "stopped_after" in e]
    complete = [e for e in evals if "per_example" in e]
    assert stopped and complete and len(stopped) + len(complete) == len(evals)
    assert all(len(e["per_example"]) == 60 and "stopped_after" not in e for e in complete)
    assert all(0 < e["stopped_after"] < 60 for e in stopped)
    assert max(e["score"] for e in complete) == result.best_score
    assert {p.score for p in result.pareto_front} <= {e["score"] for e in complete}
    report = read_log(log)
    assert report.complete and report.config.racing == 60 and report.best.score == result.best_score
    seen = sum(e.get("stopped_after", 60) for e in evals)
    assert result.racing.stopped == len(stopped) and result.racing.examples == 60
    assert result.racing.examples_share == pytest.approx(seen / (60 * len(evals)))
    assert report.racing == result.racing and _run(racing=None).racing is None


def test_glora_replay_reports_what_racing_saved(tmp_path, capsys) -> None:
    from glora.cli.replay import main

    log = tmp_path / "raced.jsonl"
    result = _run(log=log)
    assert main([str(log)]) == 0
    r = result.racing
    line = f"raced over 60 examples: {r.stopped} of {result.evaluations} candidates stopped early"
    assert line in capsys.readouterr().out
    assert main([str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["racing"] == r.to_dict()


def test_same_seed_same_raced_search_on_any_thread_count() -> None:
    results = [_run(threads=t, seed=3) for t in (1, 2, 4)]
    assert all(r.history == results[0].history and r.best_subnet == results[0].best_subnet for r in results)
    other = _run(seed=4)
    assert other.history != results[0].history


def test_an_interrupted_raced_search_resumes_exactly(tmp_path) -> None:
    reference = _run()
    full = tmp_path / "full.jsonl"
    _run(log=full)
    data = full.read_bytes()
    for log, _ in cut_logs(full, tmp_path, 8, seed=1):
        result = _run(log=log, resume=True)
        assert result.history == reference.history and result.best_subnet == reference.best_subnet
        assert log.read_bytes() == data, "the resumed log must equal the uninterrupted one"


class _Rows:
    """A raced fitness whose rows are whatever ``make(batch, examples)`` returns."""

    def __init__(self, make) -> None:
        self.make = make
        self.inner = PerExampleAdditiveFitness(SMALL, 0, examples=60)
        self.examples = 60

    def __call__(self, batch):
        return self.inner(batch)

    def per_example(self, batch, examples):
        return self.make(self.inner.per_example(batch, examples), examples)


def test_wrong_raced_fitness_settings_and_rows_are_named(tmp_path) -> None:
    plain = PerExampleAdditiveFitness(SMALL, 0, examples=60)
    with pytest.raises(TypeError, match="per_example"):
        _run(fitness=lambda batch: [0.0] * len(batch), racing=60)
    with pytest.raises(TypeError, match="`examples` attribute"):
        _run(fitness=lambda batch: [0.0] * len(batch), racing=True)
    with pytest.raises(ValueError, match="racing=50 does not match the fitness, which scores 60 examples"):
        _run(fitness=plain, racing=50)
    with pytest.raises(glora.SearchError, match='racing must be None with objective "pareto"'):
        _run(objective="pareto")
    for bad in (0, -3, 2.5, "all"):
        with pytest.raises(glora.SearchError, match=r"racing must be a positive integer.*also takes True"):
            _run(racing=bad)
    with pytest.raises(glora.SearchError, match="racing must be at most 1000000"):
        _run(racing=10**7)
    assert _run(racing=False).evaluations == _run(racing=None).evaluations
    with pytest.raises(glora.ScoreError, match="returned 2 scores for a batch of 50") as info:
        _run(fitness=_Rows(lambda rows, ex: rows[:2]))
    assert info.value.kind == "wrong_score_count"
    with pytest.raises(glora.ScoreError, match="per_example returned 59 scores in row 0, expected 60") as info:
        _run(fitness=_Rows(lambda rows, ex: [r[:-1] for r in rows]))
    assert info.value.details == {"index": 0, "expected": 60, "got": 59}
    with pytest.raises(glora.ScoreError, match=r"one row of scores per subnet; row 0 is 1\.5 \(float\)") as info:
        _run(fitness=_Rows(lambda rows, ex: [1.5] * len(rows)))
    assert info.value.kind == "row_not_a_sequence"
    calls: list[int] = []

    def nan_in_last_row_of_a_stage(rows, ex):
        calls.append(len(rows))
        return rows[:-1] + [[float("nan")] * len(ex)] if len(ex) < 60 else rows

    with pytest.raises(glora.ScoreError, match="score (\\d+) of the batch is not finite") as info:
        _run(fitness=_Rows(nan_in_last_row_of_a_stage))
    assert info.value.details["index"] == calls[-1] - 1, "the row's place in the call that returned it"
    with pytest.raises(glora.ScoreError, match="not a number"):
        _run(fitness=_Rows(lambda rows, ex: [["x"] * len(ex) for _ in rows]))
    nan_in_third = lambda rows, ex: [r if i != 2 else [float("nan")] + r[1:] for i, r in enumerate(rows)]  # noqa: E731
    with pytest.raises(glora.ScoreError, match="score 2 of the batch is not finite"):
        _run(fitness=_Rows(nan_in_third))
    worst = tmp_path / "worst.jsonl"
    result = _run(fitness=_Rows(nan_in_third), nonfinite="worst", log=worst)
    first = [json.loads(line) for line in worst.read_text().splitlines()[1:4]]
    assert first[2]["score"] is None and first[2]["stopped_after"] == 60 and result.best_score > float("-inf")

    def raising(rows, ex):
        raise RuntimeError("the GPU fell over")

    with pytest.raises(RuntimeError, match="the GPU fell over"):
        _run(fitness=_Rows(raising))


def test_raced_logs_refuse_another_search_and_damaged_records(tmp_path) -> None:
    log = tmp_path / "raced.jsonl"
    _run(log=log)
    with pytest.raises(glora.LogError, match=r"racing 60 \(log\) vs null"):
        _run(log=log, resume=True, racing=None)
    plain = tmp_path / "plain.jsonl"
    _run(log=plain, racing=None)
    with pytest.raises(glora.LogError, match=r"racing null \(log\) vs 60 \(this search\)"):
        _run(log=plain, resume=True)
    lines = log.read_text().splitlines()
    header = json.loads(lines[0])
    evals = [i for i, line in enumerate(lines) if '"per_example"' in line]
    damaged = list(lines)
    record = json.loads(damaged[evals[0]])
    record["per_example"] = record["per_example"][:-1]
    damaged[evals[0]] = json.dumps(record, separators=(",", ":"))
    (tmp_path / "short.jsonl").write_text("\n".join(damaged) + "\n")
    line = evals[0] + 1
    with pytest.raises(glora.LogError, match=f"line {line}: per_example holds 59 scores, not one for each of the 60"):
        _run(log=tmp_path / "short.jsonl", resume=True)
    stopped = [i for i, text in enumerate(lines) if '"stopped_after"' in text][0]
    for bad, reason in ((0, "stopped_after 0 is not within 1..=60"), (61, "stopped_after 61 is not within 1..=60")):
        damaged = list(lines)
        record = json.loads(damaged[stopped])
        record["stopped_after"] = bad
        damaged[stopped] = json.dumps(record, separators=(",", ":"))
        (tmp_path / "bad.jsonl").write_text("\n".join(damaged) + "\n")
        with pytest.raises(glora.LogError, match=f"line {stopped + 1}: {reason}"):
            read_log(tmp_path / "bad.jsonl")
    del header["params"]["racing"]
    unraced = [json.dumps(header, separators=(",", ":"))] + lines[1:]
    (tmp_path / "unraced.jsonl").write_text("\n".join(unraced) + "\n")
    with pytest.raises(glora.LogError, match="line 2: a raced evaluation in a search that does not race"):
        read_log(tmp_path / "unraced.jsonl")


def _mlp_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("metric", ["accuracy", "neg_loss"])
def test_evaluator_scores_per_example_agree_with_its_whole_data_scores(metric: str) -> None:
    torch.manual_seed(0)
    model = glora.wrap(MLP(), glora.GLoRAConfig(rank=2, target_modules=["fc1", "fc2"]))
    evaluator = glora.SubnetEvaluator(model, _mlp_data(37, 1), metric=metric, batch_size=8)
    subnets = glora.search_space(model).sample(10**6, 4, seed=2)
    whole = evaluator(subnets)
    rows = evaluator.per_example(subnets, list(range(37)))
    assert evaluator.examples == 37 and len(rows) == 4 and all(len(r) == 37 for r in rows)
    for score, row in zip(whole, rows):
        assert sum(row) / 37 == pytest.approx(score, abs=1e-5)
    rng = random.Random(0)
    for _ in range(5):
        part = rng.sample(range(37), rng.randint(1, 36))
        expected = [[r[i] for i in part] for r in rows]
        numpy.testing.assert_allclose(evaluator.per_example(subnets, part), expected, atol=1e-5)


def test_evaluator_per_example_on_trimmed_token_data() -> None:
    torch.manual_seed(0)
    from test_padding import _tokens

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert_tiny()
            self.head = torch.nn.Linear(32, 3)

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.head(self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state[:, 0])

    model = glora.wrap(Classifier(), glora.GLoRAConfig(rank=2, target_modules=["query", "value"]))
    data = _tokens(23, 11, seed=4)
    evaluator = glora.SubnetEvaluator(model, data, metric="neg_loss", batch_size=5)
    subnets = glora.search_space(model).sample(10**6, 3, seed=1)
    rows = evaluator.per_example(subnets, list(range(23)))
    for score, row in zip(evaluator(subnets), rows):
        assert sum(row) / 23 == pytest.approx(score, abs=1e-5)
    part = [22, 3, 17, 0, 9]
    numpy.testing.assert_allclose(evaluator.per_example(subnets, part), [[r[i] for i in part] for r in rows], atol=1e-5)


def test_evaluator_refuses_scores_per_example_it_cannot_give() -> None:
    model = glora.wrap(MLP(), glora.GLoRAConfig(rank=2, target_modules=["fc1"]))
    subnet = glora.search_space(model).sample(10**6, 1, seed=0)
    data = _mlp_data(10, 0)
    with pytest.raises(ValueError, match="metric 'accuracy' or 'neg_loss'.*metric 'f1'"):

        def f1(logits, labels):
            return 0.0

        glora.SubnetEvaluator(model, data, metric=f1).per_example(subnet, [0])
    with pytest.raises(ValueError, match="indices below 10, got 0..10"):
        glora.SubnetEvaluator(model, data).per_example(subnet, [0, 10])
    assert glora.SubnetEvaluator(model, data).per_example(subnet * 2, []) == [[], []]


def test_a_callable_metric_keeps_its_python_float() -> None:
    model = glora.wrap(MLP(), glora.GLoRAConfig(rank=2, target_modules=["fc1"]))
    subnet = glora.search_space(model).sample(10**6, 1, seed=0)

    def precise(logits, labels):
        return 0.1234567890123

    assert glora.SubnetEvaluator(model, _mlp_data(10, 0), metric=precise)(subnet) == [0.1234567890123]


def test_a_raced_search_of_a_wrapped_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = glora.wrap(MLP(), glora.GLoRAConfig(rank=2, target_modules=["fc1", "fc2"]))
    evaluator = glora.SubnetEvaluator(model, _mlp_data(64, 3), metric="neg_loss", batch_size=32)
    log = tmp_path / "mlp.jsonl"
    result = glora.search(
        model,
        evaluator,
        400,
        racing=True,
        generations=4,
        population=12,
        parents=4,
        mutants=6,
        crossovers=6,
        log=log,
        progress=False,
    )
    report = read_log(log)
    assert report.complete and report.metric == "neg_loss" and report.config.racing == 64
    assert result.best_score == pytest.approx(evaluator([result.best_subnet])[0], abs=1e-5)
