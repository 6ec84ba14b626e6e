"""Shared benchmark plumbing: device description, timing with CUDA events, peak memory, result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Iterable
from typing import Any, Callable

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    for name in ("glora", "peft", "timm", "transformers"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError:
            out[name] = "absent"
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeat: int) -> dict[str, float]:
    """Median and spread of ``fn``'s wall time in milliseconds (CUDA events on a GPU), and the median time the
    host spent issuing it (``host_ms``; starting from an idle GPU, close to ``median_ms`` when the host, not the
    GPU, bounds the step)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples, host = [], []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            t0 = time.perf_counter()
            fn()
            host.append((time.perf_counter() - t0) * 1000)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1000)
            host.append(samples[-1])
    return {
        "median_ms": statistics.median(samples),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "n": repeat,
        "host_ms": statistics.median(host),
    }


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeat: int
) -> dict[str, dict[str, float]]:
    """``time_ms`` for several functions whose steps are interleaved: round after round, one step of each, so a
    drift of the host's speed (large on shared machines) reaches every function alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    host: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            one = time_ms(fn, device, 0, 1)
            samples[name].append(one["median_ms"])
            host[name].append(one["host_ms"])
    return {
        name: {
            "median_ms": statistics.median(s),
            "min_ms": min(s),
            "max_ms": max(s),
            "n": repeat,
            "host_ms": statistics.median(host[name]),
        }
        for name, s in samples.items()
    }


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def result_path(name: str, device: torch.device) -> str:
    return os.path.join(RESULTS, f"{name}_{'gpu' if device.type == 'cuda' else 'cpu'}.json")


def write_result(name: str, device: torch.device, config: dict[str, Any], figures: Any) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = result_path(name, device)
    payload = {
        "benchmark": name,
        "device": device_name(device),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "figures": figures,
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
    out_dir = os.environ.get("OUT")
    if out_dir:
        with open(os.path.join(out_dir, os.path.basename(path)), "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
    return path


def means_by(rows: list[dict[str, Any]], key: str, names: Iterable[str], fields: list[str]) -> list[dict[str, Any]]:
    """Per value of ``key`` (in the order of ``names``; those without rows left out), the rows' count as ``seeds``
    and each field's mean as ``<field>_mean``."""
    out = []
    for name in names:
        group = [r for r in rows if r[key] == name]
        if not group:
            continue
        out.append(
            {key: name, "seeds": len(group), **{f"{f}_mean": statistics.mean(r[f] for r in group) for f in fields}}
        )
    return out


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)
