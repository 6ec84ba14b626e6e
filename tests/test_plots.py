"""glora.tasks.plots: the search plots from a run log (integer generation ticks, the Pareto front, a budget line)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from glora.engine import read_log, search
from glora.tasks import plots
from spaces import AdditiveFitness, synthetic_space

SPACE = synthetic_space([(64, 32), (32, 64), (48, 48)])
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("plots") / "search.jsonl"
    search(
        SPACE,
        AdditiveFitness(SPACE, 0),
        (500, 2500),
        seed=3,
        log=path,
        progress=False,
        generations=4,
        objective="pareto",
        metric="accuracy",
    )
    return str(path)


def test_the_log_report_lists_every_evaluation(log) -> None:
    report = read_log(log)
    assert len(report.evaluated) == report.replayed_evaluations > 0
    assert {g for g, _, _ in report.evaluated} == set(range(4))
    front = {(p.params, p.score) for p in report.front}
    assert front <= {(p, s) for _, p, s in report.evaluated}
    assert all(500 <= p <= 2500 for _, p, _ in report.evaluated)


def test_plot_search_writes_both_pngs(log, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "made" / "here"
    written = plots.plot_search(log, out, budget=1500)
    assert written == [str(out / "search_progress.png"), str(out / "search_pareto.png")]
    for path in written:
        with open(path, "rb") as fh:
            assert fh.read(8) == PNG
        assert os.path.getsize(path) > 5000
    assert sorted(os.listdir(out)) == ["search_pareto.png", "search_progress.png"], "no temporary file is left"


def test_progress_has_integer_generation_ticks(log) -> None:
    pytest.importorskip("matplotlib")
    report = read_log(log)
    fig, ax = plots._figure((6, 4))
    plots.draw_progress(ax, report)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert {line.get_label() for line in ax.get_lines()} == {"best of generation", "mean of generation", "best so far"}
    assert ax.get_ylabel() == "accuracy"
    best = next(line for line in ax.get_lines() if line.get_label() == "best of generation")
    assert list(best.get_ydata()) == [h.best for h in report.history]


def test_pareto_draws_the_front_and_the_budget_line(log) -> None:
    pytest.importorskip("matplotlib")
    report = read_log(log)
    fig, ax = plots._figure((6, 4))
    scatter = plots.draw_pareto(ax, report, budget=1500)
    assert len(scatter.get_offsets()) == len(report.evaluated)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["budget 1,500"].get_xdata()) == [1500, 1500]
    assert list(lines["search budget 2,500"].get_xdata()) == [2500, 2500]
    front = lines["Pareto front"]
    assert list(front.get_xdata()) == sorted(p.params for p in report.front)
    fig2, ax2 = plots._figure((6, 4))
    plots.draw_pareto(ax2, report)
    assert not any(line.get_label().startswith("budget") for line in ax2.get_lines())


def test_without_matplotlib_nothing_is_written(log, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plots.plot_search(log, tmp_path / "out", budget=1000) == []
    assert not (tmp_path / "out").exists()


def test_plotting_changes_no_global_state_and_needs_no_torch(log, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import matplotlib\n"
        "backend = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
        "from glora.tasks.plots import plot_search\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        f"assert len(plot_search({log!r}, {str(tmp_path)!r}, 1200)) == 2\n"
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == backend\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["search_pareto.png", "search_progress.png"]


def test_plot_search_refuses_a_folder_in_a_files_place(log, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "search_pareto.png").mkdir()
    with pytest.raises(Exception, match="is a directory"):
        plots.plot_search(log, tmp_path)
