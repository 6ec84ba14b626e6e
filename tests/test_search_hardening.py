"""Bad input to glora.search, its log and glora-replay (issue 15): every refusal names the problem, non-finite
generations are logged and read back, sizes beyond the engine's limits are refused, and glora-replay answers
every failure with one line and status 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import glora
from glora.cli.replay import main as replay_main
from glora.engine import read_log, search
from spaces import AdditiveFitness, synthetic_space

SHAPES = [(64, 32), (32, 64), (48, 48)]
SMALL = synthetic_space(SHAPES)


def _run(log=None, resume=False, fitness=None, space=SMALL, **kw):
    kw.setdefault("generations", 3)
    fitness = fitness or AdditiveFitness(space, 0)
    return search(
        space, fitness, kw.pop("budget", 2000), seed=kw.pop("seed", 5), log=log, resume=resume, progress=False, **kw
    )


def _replay(capsys, *args: str) -> tuple[int, str, str]:
    code = replay_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("glora-replay: "), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(
    ("returned", "shown"),
    [
        (lambda n: {float(i): 1.0 for i in range(n)}, "(dict)"),
        (lambda n: "0.5" * n, "(str)"),
        (lambda n: set(range(n)), "(set)"),
    ],
)
def test_a_fitness_returning_no_sequence_is_named(returned, shown) -> None:
    with pytest.raises(glora.ScoreError, match="must return a sequence of 50 scores") as info:
        _run(fitness=lambda batch: returned(len(batch)))
    assert shown in str(info.value) and info.value.kind == "not_a_sequence"


def test_scores_are_numbers_only() -> None:
    np = pytest.importorskip("numpy")
    for bad, shown in [("0.5", "'0.5' (str)"), (True, "True (bool)"), (np.bool_(True), "(bool"), (None, "None")]:
        with pytest.raises(glora.ScoreError, match="score 0 of the batch is not a number") as info:
            _run(fitness=lambda batch, bad=bad: [bad] * len(batch))
        assert shown in str(info.value)
    with pytest.raises(glora.ScoreError, match=r"not a number: array\(\[1.\]\)"):
        _run(fitness=lambda batch: [np.ones(1)] * len(batch))
    fitness = AdditiveFitness(SMALL, 0)
    reference = _run().history
    for convert in (np.float64, lambda x: np.array(x)):
        assert _run(fitness=lambda batch, c=convert: [c(s) for s in fitness(batch)]).history == reference
    assert _run(fitness=lambda batch: np.asarray(fitness(batch))).history == reference
    assert _run(fitness=lambda batch: [np.float32(s) for s in fitness(batch)]).evaluations == 150
    as_ints = _run(fitness=lambda batch: [int(100 * s) for s in fitness(batch)])
    assert as_ints.history == _run(fitness=lambda batch: [float(int(100 * s)) for s in fitness(batch)]).history
    assert _run(fitness=lambda batch: [np.int64(int(100 * s)) for s in fitness(batch)]).history == as_ints.history


def test_torch_zero_d_tensors_are_scores() -> None:
    torch = pytest.importorskip("torch")
    fitness = AdditiveFitness(SMALL, 0)
    as_tensors = _run(fitness=lambda batch: [torch.tensor(s, dtype=torch.float64) for s in fitness(batch)])
    assert as_tensors.history == _run().history
    assert _run(fitness=lambda batch: torch.tensor(fitness(batch), dtype=torch.float64)).history == _run().history
    with pytest.raises(glora.ScoreError, match="not a number: tensor"):
        _run(fitness=lambda batch: [torch.tensor(True)] * len(batch))


def test_arguments_are_named_with_their_limits() -> None:
    cases = [
        ({"budget": math.nan}, "budget maximum must be a non-negative whole number of parameters, got NaN"),
        ({"budget": math.inf}, "budget maximum must be a non-negative whole number of parameters, got inf"),
        ({"budget": 10**30}, f"budget maximum must be at most {2**64 - 1} parameters, got {10**30}"),
        ({"seed": 2**64}, f"seed must be a non-negative integer below 2\\*\\*64, got {2**64}"),
        ({"population": 10**12}, "population must be at most 1000000, got 1000000000000"),
        ({"mutants": 2**63}, "mutants must be at most 1000000"),
        ({"threads": 100_000}, "threads must be at most 1024"),
    ]
    for kwargs, message in cases:
        with pytest.raises(glora.SearchError, match=message):
            _run(**kwargs)
    assert _run(seed=2**64 - 1).evaluations == 150
    assert _run(mutation_prob=None).history == _run().history, "None takes the default, as for every setting"
    assert _run(threads=1000).history == _run().history, "threads beyond the machine's cores are capped"
    with pytest.raises(glora.SearchError, match="at most 1000000"):
        SMALL.sample(2000, 10**7, 0)
    with pytest.raises(glora.SearchError, match="exceeds 18446744073709551615"):
        glora.engine.LayerSpace("huge", 2**63, 2**63, {g: ["lora_4", "none"] for g in "ABCDE"})


def test_a_whole_non_finite_generation_is_logged_resumed_and_replayed(tmp_path, capsys) -> None:
    log = tmp_path / "run.jsonl"

    def fitness(batch):
        return [math.nan] * len(batch)

    kwargs = {"nonfinite": "worst", "generations": 3}
    search(SMALL, fitness, 2000, seed=1, log=log, progress=True, **kwargs)  # the progress bar shows -inf
    capsys.readouterr()
    lines = log.read_text().splitlines()
    assert json.loads(lines[-1])["best"] is None and json.loads(lines[1])["score"] is None
    log.write_text("\n".join(lines[:-51]) + "\n")
    resumed = search(SMALL, fitness, 2000, seed=1, log=log, resume=True, progress=False, **kwargs)
    assert resumed.recovered_evaluations == 100 and resumed.history[-1].best == -math.inf
    assert log.read_text().splitlines() == lines
    code, out, err = _replay(capsys, str(log), "--json")
    report = json.loads(out)
    assert code == 0, err
    assert report["history"][0]["best"] is None and report["best"]["score"] is None
    code, out, _ = _replay(capsys, str(log))
    assert code == 0 and "-inf" in out


def test_log_damage_is_named_by_line_not_blamed_on_the_fitness(tmp_path) -> None:
    log = tmp_path / "run.jsonl"
    _run(log=log)
    lines = log.read_text().splitlines()
    for damage in ('"scor":', '"score":null,"x":'):
        broken = lines[:]
        broken[3] = broken[3].replace('"score":', damage)
        log.write_text("\n".join(broken) + "\n")
        with pytest.raises(glora.LogError, match="line 4") as info:
            _run(log=log, resume=True)
        assert not isinstance(info.value, glora.ScoreError)
        assert info.value.details["line"] == 4
        with pytest.raises(glora.LogError, match="line 4"):
            read_log(log)
    assert "never logs" in str(info.value)


def test_a_resume_over_another_model_names_the_field(tmp_path) -> None:
    log = tmp_path / "run.jsonl"
    _run(log=log)
    wider = synthetic_space([(65, 32), *SHAPES[1:]])
    with pytest.raises(glora.LogError, match=r"layer 'layer0' out_features 64 \(log\) vs 65 \(this search\)"):
        _run(log=log, resume=True, space=wider)
    renamed = glora.engine.SearchSpace(
        [glora.engine.LayerSpace("other", 64, 32, SMALL["layer0"].choices), *list(SMALL)[1:]]
    )
    with pytest.raises(glora.LogError, match=r"layer 0 is named 'layer0' \(log\) vs 'other' \(this search\)"):
        _run(log=log, resume=True, space=renamed)
    with pytest.raises(glora.LogError, match=r"space has 3 layers \(log\) vs 2 \(this search\)"):
        _run(log=log, resume=True, space=synthetic_space(SHAPES[:2]))


def test_a_log_cut_inside_its_header_starts_afresh_and_a_foreign_one_is_kept(tmp_path) -> None:
    full = tmp_path / "full.jsonl"
    reference = _run(log=full)
    header = full.read_bytes().split(b"\n")[0]
    for cut in (1, len(header) // 2, len(header)):
        log = tmp_path / f"cut{cut}.jsonl"
        log.write_bytes(header[:cut])
        with pytest.raises(glora.LogError, match="no complete header line"):
            read_log(log)
        result = _run(log=log, resume=True)
        assert result.history == reference.history and result.recovered_evaluations == 0
        assert log.read_bytes() == full.read_bytes()
    foreign = tmp_path / "notes.txt"
    foreign.write_bytes(b"my notes, no newline")
    with pytest.raises(glora.LogError, match="delete it to start afresh"):
        _run(log=foreign, resume=True)
    assert foreign.read_bytes() == b"my notes, no newline"
    other_seed = tmp_path / "seed.jsonl"
    other_seed.write_bytes(header[: len(header) // 2])
    with pytest.raises(glora.LogError, match="not the beginning of this search's header"):
        _run(log=other_seed, resume=True, seed=6)


def test_the_metric_is_recorded_checked_and_optional(tmp_path, capsys) -> None:
    log = tmp_path / "run.jsonl"
    _run(log=log, metric="neg_loss")
    assert json.loads(log.read_text().splitlines()[0])["metric"] == "neg_loss"
    assert read_log(log).metric == "neg_loss" == read_log(log).config.metric
    assert _run(log=log, resume=True).recovered_evaluations == 150, "a search naming no metric accepts the log's"
    with pytest.raises(glora.LogError, match=r"metric 'neg_loss' \(log\) vs 'accuracy' \(this search\)"):
        _run(log=log, resume=True, metric="accuracy")
    code, out, _ = _replay(capsys, str(log))
    assert code == 0 and "metric: neg_loss" in out
    plain = tmp_path / "plain.jsonl"
    _run(log=plain)
    assert "metric" not in json.loads(plain.read_text().splitlines()[0]), "logs without a metric are unchanged"
    assert read_log(plain).metric is None


def _with_header(log, change) -> None:
    lines = log.read_text().splitlines()
    header = json.loads(lines[0])
    change(header)
    lines[0] = json.dumps(header, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")


def test_replay_refuses_a_damaged_header_in_one_line(tmp_path, capsys) -> None:
    source = tmp_path / "run.jsonl"
    _run(log=source)

    def gene_renamed(h):
        h["space"]["layers"][0]["genes"][1]["gene"] = "Z"

    def gene_removed(h):
        del h["space"]["layers"][1]["genes"][4]

    def cost_changed(h):
        h["space"]["layers"][0]["genes"][0]["costs"][0] = 7

    def shape_overflows(h):
        h["space"]["layers"][0]["out_features"] = 2**64 - 1

    changes = [
        (gene_renamed, "genes ["),
        (gene_removed, "genes ["),
        (cost_changed, "the layer's shape gives"),
        (shape_overflows, "exceeds"),
        (lambda h: h["params"].update(population=10**12), "population must be at most 1000000"),
        (lambda h: h["params"].update(mutants=2**63), "mutants must be at most 1000000"),
        (lambda h: h["params"].update(attempts_per_candidate=2**40), "attempts_per_candidate"),
        (lambda h: h["params"].update(generations=2**64), "bad header"),
        (lambda h: h.update(budget={"min": 5, "max": 1}), "impossible budget"),
        (lambda h: h.pop("space"), "missing field `space`"),
        (lambda h: h.update(metric=3), "bad header"),
    ]
    for i, (change, fragment) in enumerate(changes):
        log = tmp_path / f"h{i}.jsonl"
        log.write_bytes(source.read_bytes())
        _with_header(log, change)
        code, _, err = _replay(capsys, str(log))
        _one_line_error(code, err, "line 1", fragment)


def test_replay_arguments_and_files(tmp_path, capsys) -> None:
    log = tmp_path / "run.jsonl"
    result = _run(log=log, objective="pareto", budget=3000)
    code, _, err = _replay(capsys, str(log), "--export", str(tmp_path / "missing" / "best.json"))
    _one_line_error(code, err, "cannot write", "No such file or directory")
    code, _, err = _replay(capsys, str(log), "--export", str(tmp_path))
    _one_line_error(code, err, "is a directory")
    code, _, err = _replay(capsys, str(log), "--plot", str(tmp_path))
    _one_line_error(code, err, "is a directory")
    code, _, err = _replay(capsys, str(tmp_path / "absent.jsonl"))
    _one_line_error(code, err, "absent.jsonl", "No such file")
    code, _, err = _replay(capsys, str(tmp_path))
    _one_line_error(code, err, "Is a directory")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    code, _, err = _replay(capsys, str(binary))
    _one_line_error(code, err, "binary.jsonl")
    with pytest.raises(SystemExit) as info:
        replay_main([str(log), "--budget", "-3"])
    assert info.value.code == 2
    _one_line_error(2, capsys.readouterr().err, "--budget", "non-negative")
    code, out, _ = _replay(capsys, str(log), "--budget", "1500")
    point = result.best_under(1500)
    assert code == 0 and f"best under 1,500 parameters: score {point.score:.4f} with {point.params:,}" in out
    code, out, _ = _replay(capsys, str(log), "--budget", str(10**30), "--json")
    assert code == 0 and json.loads(out)["best_under_budget"]["params"] == result.best_under(10**18).params
    code, _, err = _replay(capsys, str(log), "--budget", "0")
    _one_line_error(code, err, "no evaluated subnet has at most 0 parameters")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.jsonl", "run.jsonl"], "no temporary file is left"


def test_replay_plot_has_integer_generations_and_budget_lines(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    log = tmp_path / "run.jsonl"
    _run(log=log, metric="accuracy", budget=(500, 2500))
    png = tmp_path / "search.png"
    code, _, err = _replay(capsys, str(log), "--plot", str(png), "--budget", "1500")
    assert code == 0, err
    assert png.stat().st_size > 1000 and sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl", "search.png"]


def test_replay_runs_as_a_module_without_torch(tmp_path) -> None:
    code = "import sys, runpy; sys.modules['torch'] = None; sys.argv[0] = 'glora-replay'; runpy.run_module('glora.cli.replay', run_name='__main__')"
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "none.jsonl")], capture_output=True, text=True, timeout=60
    )
    _one_line_error(done.returncode, done.stderr, "none.jsonl")
