"""Benchmark: the native search engine.

1. Candidates produced per second under a budget (budget-aware sampling, mutation + repair, crossover + repair),
   on one core and on all cores, for a ViT-B/16-shaped space (48 layers, rank 4) and an LLM-shaped space
   (224 layers: LLaMA-7B's q, k, v, o, gate, up, down over 32 blocks, rank 4, no biases).
2. The feasible share at budgets of 0.29 M, 0.44 M and 0.86 M on ViT-B/16 at rank 4: glora's engine versus a
   Python re-implementation of the reference's rejection sampling (uniform per-layer draws kept when within the
   budget; its random fill has no limit, its mutation and crossover give up after 10x the wanted count).
3. Engine overhead per generation of a whole reference-default search (population 50, 20 generations) with a
   free fitness function, and identical results on 1 and all threads.

    python benches/search_engine.py

The throughput figures come from the engine's Rust example
(``cargo run --release --example throughput -p glora-engine``), which prints them as JSON.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
import time

from common import print_table, write_result
from glora.engine import LayerSpace, SearchSpace, search
from glora.layers.choices import GENES, offered_choices

ROOT = pathlib.Path(__file__).resolve().parent.parent


def make_space(shapes: list[tuple[str, int, int]], rank: int = 4, bias: bool = True) -> SearchSpace:
    layers = []
    for name, out, inn in shapes:
        enabled = {"A": True, "B": True, "C": True, "D": bias, "E": True}
        layers.append(LayerSpace(name, out, inn, {g: offered_choices(g, (rank,), enabled[g]) for g in GENES}))
    return SearchSpace(layers)


def vit_b16() -> SearchSpace:
    shapes = []
    for b in range(12):
        shapes += [
            (f"blocks.{b}.attn.qkv", 2304, 768),
            (f"blocks.{b}.attn.proj", 768, 768),
            (f"blocks.{b}.mlp.fc1", 3072, 768),
            (f"blocks.{b}.mlp.fc2", 768, 3072),
        ]
    return make_space(shapes)


def llama_7b() -> SearchSpace:
    shapes = []
    for b in range(32):
        p = f"layers.{b}"
        shapes += [(f"{p}.self_attn.{n}", 4096, 4096) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        shapes += [
            (f"{p}.mlp.gate_proj", 11008, 4096),
            (f"{p}.mlp.up_proj", 11008, 4096),
            (f"{p}.mlp.down_proj", 4096, 11008),
        ]
    return make_space(shapes, bias=False)


def engine_throughput(space: str, budget: int, n: int, seed: int, threads: int) -> dict:
    """Candidates per second and feasible share of each operator, measured by the engine's Rust example."""
    command = [
        "cargo",
        "run",
        "--quiet",
        "--release",
        "--example",
        "throughput",
        "-p",
        "glora-engine",
        "--",
        "--space",
        space,
        "--budget",
        str(budget),
        "--n",
        str(n),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
    ]
    return json.loads(subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout)


def reference_rejection(space: SearchSpace, budget: int, draws: int, seed: int) -> dict:
    """The reference's sampler: every layer's every gene drawn uniformly, kept if the total is within budget."""
    rng = random.Random(seed)
    tables = [[list(layer.costs[g].values()) for g in GENES] for layer in space]
    feasible = 0
    start = time.perf_counter()
    for _ in range(draws):
        total = sum(rng.choice(costs) for layer in tables for costs in layer)
        feasible += total <= budget
    seconds = time.perf_counter() - start
    return {
        "draws": draws,
        "feasible_share": feasible / draws,
        "draws_per_second": draws / seconds,
        "feasible_per_second": feasible / seconds,
    }


def main() -> None:
    cores = os.cpu_count() or 1
    spaces = {"vit_b16_rank4": vit_b16(), "llama7b_rank4": llama_7b()}
    example_space = {"vit_b16_rank4": "vit_b16", "llama7b_rank4": "llama7b"}
    throughput_rows = []
    for name, space in spaces.items():
        for fraction in (0.2, 0.3, 0.5):
            budget = int(space.max_params * fraction)
            for threads in sorted({1, cores}):
                figures = engine_throughput(
                    example_space[name], budget, 200_000 if "vit" in name else 50_000, 0, threads
                )
                for op in ("sample", "mutation", "crossover"):
                    f = figures[op]
                    throughput_rows.append(
                        {
                            "space": name,
                            "layers": len(space),
                            "budget": budget,
                            "threads": threads,
                            "operator": op,
                            "candidates_per_s": round(f["per_second"]),
                            "feasible_share": f["feasible_share"],
                        }
                    )
    print_table(
        throughput_rows, ["space", "layers", "budget", "threads", "operator", "candidates_per_s", "feasible_share"]
    )

    vit = spaces["vit_b16_rank4"]
    feasibility_rows = []
    for budget in (290_000, 440_000, 860_000):
        engine = engine_throughput("vit_b16", budget, 100_000, 1, 1)
        reference = reference_rejection(vit, budget, 20_000, 1)
        feasibility_rows.append(
            {
                "budget": budget,
                "engine_feasible_share": engine["sample"]["feasible_share"],
                "engine_feasible_per_s": round(engine["sample"]["per_second"]),
                "reference_feasible_share": reference["feasible_share"],
                "reference_feasible_per_s": round(reference["feasible_per_second"], 1),
                "reference_draws_per_s": round(reference["draws_per_second"]),
            }
        )
    print_table(feasibility_rows, list(feasibility_rows[0]))

    overhead_rows = []
    for name, space in spaces.items():
        results = {}
        for threads in sorted({1, cores}):
            budget = int(space.max_params * 0.3)
            start = time.perf_counter()
            res = search(
                space,
                lambda batch: [float(len(json.dumps(s))) for s in batch],
                budget,
                seed=0,
                threads=threads,
                progress=False,
            )
            wall = time.perf_counter() - start
            results[threads] = res
            overhead_rows.append(
                {
                    "space": name,
                    "threads": threads,
                    "generations": len(res.history),
                    "evaluations": res.evaluations,
                    "engine_ms_per_generation": 1000 * res.engine_seconds / len(res.history),
                    "wall_s": wall,
                    "fitness_s": res.fitness_seconds,
                }
            )
        same = (
            len(
                {
                    json.dumps([[h.to_dict() for h in r.history], r.best_subnet], sort_keys=True)
                    for r in results.values()
                }
            )
            == 1
        )
        overhead_rows[-1]["same_result_all_thread_counts"] = same
    print_table(
        overhead_rows,
        [
            "space",
            "threads",
            "generations",
            "evaluations",
            "engine_ms_per_generation",
            "wall_s",
            "fitness_s",
            "same_result_all_thread_counts",
        ],
    )

    import torch

    path = write_result(
        "search_engine",
        torch.device("cpu"),
        {
            "rank": 4,
            "spaces": {k: {"layers": len(v), "max_params": v.max_params} for k, v in spaces.items()},
            "reference_draws": 20_000,
            "cores": cores,
        },
        {"throughput": throughput_rows, "feasibility": feasibility_rows, "overhead": overhead_rows},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
