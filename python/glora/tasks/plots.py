"""Plots of a search from its run log: fitness by generation and the Pareto front (needs matplotlib).

One home for plotting: ``glora run`` writes :func:`plot_search`'s two files next to its log, and
``glora-replay --plot`` draws the same two panels side by side (:func:`plot_replay`). No torch is imported, and
nothing global changes: the figures are drawn on matplotlib's Agg canvas directly, without pyplot or
``matplotlib.use``, so a notebook's backend stays as it was. Files are written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

from glora._engine import LogReport
from glora.engine.replay import read_log
from glora.errors import GLoRAError
from glora.files.atomic import replacing

__all__ = ["PARETO_FILE", "PROGRESS_FILE", "draw_pareto", "draw_progress", "plot_replay", "plot_search"]

PROGRESS_FILE = "search_progress.png"
PARETO_FILE = "search_pareto.png"
DPI = 120


def _finite(values: Sequence[float]) -> list[float]:
    """Minus infinity (a generation of only non-finite scores) as NaN, which matplotlib leaves out."""
    return [v if math.isfinite(v) else math.nan for v in values]


def _metric(report: LogReport) -> str:
    return report.metric or "fitness"


def draw_progress(ax: Any, report: LogReport) -> None:
    """Best and mean fitness of each generation, and the best so far, on integer generation ticks."""
    from matplotlib.ticker import MaxNLocator

    gens = [h.generation for h in report.history]
    ax.plot(gens, _finite([h.best for h in report.history]), marker=".", label="best of generation")
    ax.plot(gens, _finite([h.mean for h in report.history]), marker=".", label="mean of generation")
    ax.plot(gens, _finite([h.best_so_far for h in report.history]), linestyle="--", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel(_metric(report))
    ax.set_title("search progress")
    if report.history:
        ax.legend()


def draw_pareto(ax: Any, report: LogReport, budget: Optional[int] = None) -> Any:
    """Adapter size against fitness of every evaluated subnet (coloured by generation), the Pareto front as a
    step line, the search's budget and, when given, ``budget`` as vertical lines. Returns the scatter (for a
    colour bar), or None when nothing was evaluated."""
    points = [(g, p, s) for g, p, s in report.evaluated if math.isfinite(s)]
    scatter = None
    if points:
        scatter = ax.scatter(
            [p for _, p, _ in points],
            [s for _, _, s in points],
            c=[g for g, _, _ in points],
            cmap="viridis",
            s=12,
            alpha=0.6,
            label="evaluated subnets",
        )
    front = sorted((p.params, p.score) for p in report.front if math.isfinite(p.score))
    if front:
        ax.plot(
            [p for p, _ in front],
            [s for _, s in front],
            color="crimson",
            marker="o",
            drawstyle="steps-post",
            label="Pareto front",
        )
    low, high = report.budget
    ax.axvline(high, color="grey", linestyle=":", label=f"search budget {high:,}")
    if low > 0:
        ax.axvline(low, color="grey", linestyle=":")
    if budget is not None:
        ax.axvline(budget, color="red", linestyle="--", label=f"budget {budget:,}")
    ax.set_xlabel("adapter parameters")
    ax.set_ylabel(_metric(report))
    ax.set_title("adapter size and fitness")
    ax.legend(loc="lower right")
    return scatter


def _colour_bar(fig: Any, ax: Any, scatter: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    if scatter is not None:
        bar = fig.colorbar(scatter, ax=ax, label="generation")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()


def _figure(size: tuple[float, float], panels: int = 1) -> tuple[Any, Any]:
    """A figure on its own Agg canvas (no pyplot, no global backend switch) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    return fig, axes


def _save(fig: Any, path: str) -> str:
    """Write ``fig`` as a PNG at ``path`` atomically; a failure names the path and leaves nothing behind."""
    if os.path.isdir(path):
        raise GLoRAError(f"cannot write {path}: it is a directory", kind="write_failed")
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    except OSError as err:
        raise GLoRAError(f"cannot write {path}: {err.strerror or err}", kind="write_failed") from None
    return path


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_search(
    log: Union[str, os.PathLike], folder: Union[str, os.PathLike], budget: Optional[int] = None
) -> list[str]:
    """Write ``search_progress.png`` (best and mean fitness per generation) and ``search_pareto.png`` (adapter
    size against fitness of the evaluated subnets, the Pareto front, and a line at ``budget`` when given) into
    ``folder`` (made when missing) from the search log ``log``; return the paths written. Returns ``[]`` when
    matplotlib is not installed; an unreadable log raises :class:`glora.LogError`."""
    if not has_matplotlib():
        return []
    report = read_log(log)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    written = []
    fig, ax = _figure((6.5, 4))
    draw_progress(ax, report)
    fig.tight_layout()
    written.append(_save(fig, os.path.join(folder, PROGRESS_FILE)))
    fig, ax = _figure((7.5, 4.5))
    _colour_bar(fig, ax, draw_pareto(ax, report, budget))
    fig.tight_layout()
    written.append(_save(fig, os.path.join(folder, PARETO_FILE)))
    return written


def plot_replay(report: LogReport, path: Union[str, os.PathLike], budget: Optional[int] = None) -> str:
    """Both panels side by side in one PNG at ``path`` (``glora-replay --plot``); raises
    :class:`glora.SearchError` (kind ``no_matplotlib``) when matplotlib is not installed."""
    from glora.errors import SearchError

    if not has_matplotlib():
        raise SearchError("--plot needs matplotlib: pip install 'glora[plot]'", kind="no_matplotlib")
    fig, (left, right) = _figure((13, 4.5), panels=2)
    draw_progress(left, report)
    _colour_bar(fig, right, draw_pareto(right, report, budget))
    fig.tight_layout()
    return _save(fig, os.fspath(path))
