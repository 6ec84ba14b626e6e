"""Benchmark: what is alive at a training step's peak of GPU memory, by the code that allocated it.

For each method (``benches/methods.py``) on a model of ``benches/train_step.py`` (ViT-B/16 by default), in a fresh
process per method: two training steps, the second under ``torch.cuda.memory._record_memory_history``; the
allocation trace is replayed to find the moment of the peak, and the blocks alive then are grouped by the first
stack frame that is not PyTorch's own plumbing (autograd, the dispatcher, ``torch/nn/modules/module.py``). The
model's weights, gradients and optimizer state are allocated before the recorded step, so the groups show what a
step adds: saved activations, built weights, workspaces. Results: ``benches/results/memory_profile_<device>.json``
(docs/benchmarks.md).

    python benches/memory_profile.py [--model vit] [--methods glora_supernet reference_supernet peft_lora_r8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

import torch

from common import print_table, write_result
from methods import prepare, training_step
from train_step import workload

PLUMBING = (
    "torch/autograd/",
    "torch/_ops.py",
    "torch/nn/modules/module.py",
    "torch/utils/_device.py",
    "torch/_tensor.py",
    "torch/amp/",
    "torch/optim/",
    "torch/utils/checkpoint.py",
    "<frozen",
    "??",
)
"""Frames skipped when naming where a block was allocated."""


def site(frames: list[dict[str, Any]]) -> str:
    """``file:line (function)`` of the first frame outside PyTorch's plumbing (Python frames only)."""
    for frame in frames:
        filename = frame.get("filename", "??")
        if filename.endswith((".py",)) and not any(part in filename for part in PLUMBING):
            short = "/".join(filename.split("/")[-3:])
            return f"{short}:{frame.get('line', 0)} ({frame.get('name', '?')})"
    return "(no Python frame)"


def live_at_peak(events: list[dict[str, Any]]) -> tuple[int, dict[int, dict[str, Any]]]:
    """Replay an allocator trace (``alloc`` / ``free_completed`` events): the peak of the bytes the trace itself
    allocated, and the blocks alive at that moment by address."""
    live: dict[int, dict[str, Any]] = {}
    total = peak = 0
    at_peak: dict[int, dict[str, Any]] = {}
    for event in events:
        action = event["action"]
        if action == "alloc":
            live[event["addr"]] = event
            total += event["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif action == "free_completed" and event["addr"] in live:
            total -= live.pop(event["addr"])["size"]
    return peak, at_peak


def grouped(blocks: dict[int, dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """The blocks' bytes by allocation site, largest first (``top`` sites)."""
    sizes: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for block in blocks.values():
        where = site(block.get("frames", []))
        sizes[where] += block["size"]
        counts[where] += 1
    order = sorted(sizes, key=sizes.get, reverse=True)[:top]
    return [{"site": s, "mib": sizes[s] / 2**20, "blocks": counts[s]} for s in order]


def profile(method: str, model_name: str, device: torch.device, top: int) -> dict[str, Any]:
    make, targets, head, loss_of = workload(model_name, device)
    model, params, _ = prepare(method, make, targets, head)
    step = training_step(model, params, loss_of, device.type)
    step()
    torch.cuda.synchronize(device)
    torch.cuda.memory._record_memory_history(max_entries=1_000_000)
    step()
    torch.cuda.synchronize(device)
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    events = snapshot["device_traces"][device.index or 0]
    peak, blocks = live_at_peak(events)
    return {"method": method, "step_peak_mib": peak / 2**20, "sites": grouped(blocks, top)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit", choices=["vit", "llama"])
    parser.add_argument("--methods", nargs="+", default=["glora_supernet", "reference_supernet", "peft_lora_r8"])
    parser.add_argument("--top", type=int, default=15, help="allocation sites listed per method")
    parser.add_argument("--name", default="memory_profile", help="results/<name>_<device>.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # profile this method in this process
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("memory_profile needs a CUDA device (the allocator's trace)")
    device = torch.device("cuda", torch.cuda.current_device())
    if args.one:
        print(json.dumps(profile(args.one, args.model, device, args.top)))
        return
    results = []
    for method in args.methods:
        command = [sys.executable, __file__, "--model", args.model, "--top", str(args.top), "--one", method]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"profiling {method} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{method}: {result['step_peak_mib']:.0f} MiB allocated by the step at its peak")
        print_table(result["sites"], ["site", "mib", "blocks"])
        results.append(result)
    config = {"model": args.model, "methods": args.methods, "top": args.top}
    print("wrote", write_result(args.name, device, config, results))


if __name__ == "__main__":
    main()
