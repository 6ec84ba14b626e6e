"""glora-replay for a new user: it names the metric the scores are (recorded by glora.search from the fitness),
``--budget`` alone shows the best subnet under that budget, and ``--plot`` draws integer generations and the
budget line."""

from __future__ import annotations

import json

import pytest
import torch

import glora
from glora.cli.replay import main as replay_main
from glora.engine import read_log
from glora.engine import search as engine_search
from glora.tuner.search import fitness_name
from models import MLP
from spaces import AdditiveFitness, synthetic_space

SPACE = synthetic_space([(64, 32), (32, 64), (48, 48)])
SMALL = {"population": 8, "parents": 4, "mutants": 2, "crossovers": 2, "generations": 2}


def _replay(capsys, *args: str) -> tuple[int, str, str]:
    code = replay_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _header(log) -> dict:
    with open(log, encoding="utf-8") as fh:
        return json.loads(fh.readline())


def _data(n: int = 32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


def _wrapped():
    torch.manual_seed(0)
    return glora.wrap(MLP(), glora.GLoRAConfig(rank=2, target_modules=["fc1", "fc2"]))


# ---- the metric's name


def test_evaluator_names_its_metric() -> None:
    model, data = _wrapped(), _data()

    def balanced_accuracy(logits, labels):
        return (logits.argmax(-1) == labels).float().mean()

    assert glora.SubnetEvaluator(model, data).metric_name == "accuracy"
    assert glora.SubnetEvaluator(model, data, metric="neg_loss").metric_name == "neg_loss"
    assert glora.SubnetEvaluator(model, data, metric=balanced_accuracy).metric_name == "balanced_accuracy"
    assert glora.SubnetEvaluator(model, data, metric=lambda lo, la: 0.0).metric_name is None


def test_fitness_name() -> None:
    def val_f1(batch):
        return [0.0] * len(batch)

    class Named:
        metric_name = "bleu"

        def __call__(self, batch):
            return [0.0] * len(batch)

    assert fitness_name(val_f1) == "val_f1"
    assert fitness_name(Named()) == "bleu"
    assert fitness_name(lambda batch: [0.0] * len(batch)) is None
    assert fitness_name(AdditiveFitness(SPACE, 0)) is None
    assert fitness_name(type("F", (), {"metric_name": "x" * 201})()) is None, "a name the log cannot hold"


def test_search_records_the_evaluators_metric_and_replay_shows_it(tmp_path, capsys) -> None:
    model = _wrapped()
    evaluator = glora.SubnetEvaluator(model, _data(), metric="neg_loss")
    log = tmp_path / "run.jsonl"
    space = glora.search_space(model)
    glora.search(model, evaluator, space.max_params // 2, seed=1, log=log, progress=False, **SMALL)
    assert _header(log)["metric"] == "neg_loss"
    code, out, _ = _replay(capsys, str(log))
    assert code == 0 and "metric: neg_loss (higher is better)" in out
    assert "(neg_loss) with" in out.split("best: score", 1)[1].splitlines()[0]
    code, out, _ = _replay(capsys, str(log), "--json")
    assert code == 0 and json.loads(out)["metric"] == "neg_loss"


def test_metric_default_explicit_and_suppressed(tmp_path) -> None:
    def mean_gain(batch):
        return AdditiveFitness(SPACE, 0)(batch)

    runs = {
        "named": ({}, "mean_gain"),
        "explicit": ({"metric": "accuracy"}, "accuracy"),
        "config": ({"config": glora.SearchConfig(metric="f1")}, "f1"),
        "suppressed": ({"metric": None}, None),
    }
    for name, (kw, expected) in runs.items():
        log = tmp_path / f"{name}.jsonl"
        glora.search(SPACE, mean_gain, 2000, seed=2, log=log, progress=False, **{**SMALL, **kw})
        assert _header(log).get("metric") == expected == read_log(log).metric, name
    anonymous = tmp_path / "lambda.jsonl"
    glora.search(SPACE, lambda b: AdditiveFitness(SPACE, 0)(b), 2000, seed=2, log=anonymous, progress=False, **SMALL)
    assert "metric" not in _header(anonymous)


def test_resume_checks_the_metric_only_when_both_name_one(tmp_path) -> None:
    fitness = AdditiveFitness(SPACE, 0)

    def mean_gain(batch):
        return fitness(batch)

    old = tmp_path / "old.jsonl"  # a log without a metric, as older glora wrote
    engine_search(SPACE, fitness, 2000, seed=2, log=old, progress=False, **SMALL)
    assert "metric" not in _header(old) and read_log(old).metric is None
    resumed = glora.search(SPACE, mean_gain, 2000, seed=2, log=old, resume=True, progress=False, **SMALL)
    assert resumed.recovered_evaluations == resumed.evaluations
    named = tmp_path / "named.jsonl"
    glora.search(SPACE, mean_gain, 2000, seed=2, log=named, progress=False, **SMALL)
    assert glora.search(SPACE, mean_gain, 2000, seed=2, log=named, resume=True, progress=False, **SMALL).evaluations
    assert engine_search(SPACE, fitness, 2000, seed=2, log=named, resume=True, progress=False, **SMALL).evaluations
    with pytest.raises(glora.LogError, match=r"metric 'mean_gain' \(log\) vs 'accuracy' \(this search\)"):
        glora.search(SPACE, mean_gain, 2000, seed=2, log=named, resume=True, progress=False, metric="accuracy", **SMALL)


def test_replay_says_when_no_metric_is_recorded(tmp_path, capsys) -> None:
    log = tmp_path / "run.jsonl"
    engine_search(SPACE, AdditiveFitness(SPACE, 0), 2000, seed=2, log=log, progress=False, **SMALL)
    code, out, _ = _replay(capsys, str(log))
    assert code == 0 and "metric: not recorded" in out and "metric=NAME" in out


# ---- --budget without --export


@pytest.fixture
def pareto_log(tmp_path):
    log = tmp_path / "run.jsonl"
    result = engine_search(
        SPACE,
        AdditiveFitness(SPACE, 0),
        3000,
        seed=4,
        log=log,
        progress=False,
        objective="pareto",
        generations=4,
        metric="accuracy",
    )
    return log, result


def test_budget_alone_shows_the_best_under_it(pareto_log, capsys) -> None:
    log, result = pareto_log
    for budget in (800, 1500, 2500, 10**9):
        point = result.best_under(budget)
        code, out, _ = _replay(capsys, str(log), "--budget", str(budget))
        assert code == 0
        line = next(ln for ln in out.splitlines() if ln.startswith("best under"))
        assert line == (
            f"best under {budget:,} parameters: score {point.score:.4f} with {point.params:,} parameters "
            f"(generation {point.generation})"
        )
        assert point.params <= budget
    assert result.best_under(800).score < result.best_score, "a tight budget shows another subnet than the best"
    code, out, _ = _replay(capsys, str(log), "--budget", "1500", "--json")
    chosen = json.loads(out)["best_under_budget"]
    assert code == 0 and chosen["budget"] == 1500 and chosen["subnet"] == result.best_under(1500).subnet
    assert sorted(p.name for p in log.parent.iterdir()) == ["run.jsonl"], "--budget alone writes nothing"


def test_budget_below_every_subnet_is_an_error(pareto_log, capsys) -> None:
    log, _ = pareto_log
    code, _, err = _replay(capsys, str(log), "--budget", "1")
    assert code == 2 and err.startswith("glora-replay: ") and "at most 1 parameters" in err


def test_budget_with_export_writes_that_subnet(pareto_log, capsys) -> None:
    log, result = pareto_log
    out_file = log.parent / "subnet.json"
    code, out, _ = _replay(capsys, str(log), "--budget", "1500", "--export", str(out_file))
    assert code == 0 and json.loads(out_file.read_text()) == result.best_under(1500).subnet


# ---- --plot


def test_plot_with_budget(pareto_log, capsys) -> None:
    pytest.importorskip("matplotlib")
    log, _ = pareto_log
    png = log.parent / "search.png"
    code, _, err = _replay(capsys, str(log), "--plot", str(png), "--budget", "1500")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_without_matplotlib_is_one_line(pareto_log, capsys, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    log, _ = pareto_log
    code, _, err = _replay(capsys, str(log), "--plot", str(log.parent / "x.png"))
    assert code == 2 and err.count("\n") == 1 and "needs matplotlib" in err


@pytest.mark.parametrize("unbuffered", [True, False])
def test_a_reader_that_stops_early_ends_replay_quietly(unbuffered: bool, pareto_log) -> None:
    import sys

    from processes import run_into_closed_pipe

    log, _ = pareto_log
    done = run_into_closed_pipe(
        [sys.executable, "-c", "import sys; from glora.cli.replay import main; sys.exit(main())", str(log)],
        unbuffered,
    )
    assert done.returncode == 141 and done.stderr == b"", done.stderr
