"""Benchmark: subnet evaluation for the search, and a whole reference-default search.

ViT-B/16 (timm, random init) with a fixed supernet (rank 4, perturbed adapters) and 200 validation images.
1. Subnet evaluations per second: glora's SubnetEvaluator (weights folded once per subnet, bf16, all 200 images
   in one pass) on subnets it has not seen, keeping folds (the default) and folding every layer anew, and on subnets
   it has scored before (every fold kept: what a search's repeated choices approach); several subnets per pass;
   with ``--compiled``, the default on a GPU, also ``SubnetEvaluator(compile=True)`` (the subnet as codes in one
   compiled forward, a CUDA graph); versus the reference way (fix the configuration on the unmerged reference
   layers and run them batch by batch, 64 images, fp32). The floor beside them: the plain merged model's forward
   over the same images in bf16 (what an evaluation cannot beat), eager and, on a GPU, compiled with
   ``torch.compile``.
2. Whole searches with the reference defaults (population 50, 20 generations) driven by the folded evaluator and,
   on a GPU, the compiled one: wall time, the share of it spent outside fitness evaluation, the share of layer
   folds found kept.

    python benches/subnet_eval.py
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import glora
from common import print_table, sync, write_result
from glora.tuner.wrapping import glora_layers
from reference_layer import replace_linears, set_config

TARGETS = r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"


FOLDED = "glora evaluator, 1 subnet per pass, bf16"
KEPT = "glora evaluator, 1 subnet per pass, bf16, subnets seen before (folds kept)"
COMPILED = "glora evaluator, compiled (codes, CUDA graphs), bf16"
SETTINGS: list[tuple[str, dict, bool]] = [
    ("glora evaluator, 1 subnet per pass, bf16, folds not kept", {"fold_cache_bytes": 0}, False),
    (FOLDED, {}, False),
    (KEPT, {}, True),
    ("glora evaluator, 4 subnets per pass, bf16", {"subnets_per_pass": 4}, False),
    (COMPILED, {"compile": True}, False),
]
"""(row, evaluator options, whether the timed subnets were scored once before); the compiled row is last."""


def _reference_config(subnet_layer: dict[str, str]) -> dict[str, str]:
    rename = {"scalar": "constant"}
    return {g: ("lora" if c.startswith("lora") else rename.get(c, c)) for g, c in subnet_layer.items()}


def _merged_forward_floor(
    model: torch.nn.Module, subnet: dict, x: torch.Tensor, y: torch.Tensor, device: torch.device, compiled: bool
) -> list[dict]:
    """Milliseconds of one accuracy pass of the plain merged model (bf16 weights, all images at once): eager, and
    compiled when asked. The evaluator's cost per subnet is compared with it."""
    merged = glora.merge(model, subnet).to(device=device, dtype=torch.bfloat16).eval()
    xd, yd = x.to(device=device, dtype=torch.bfloat16), y.to(device)
    forwards = [("plain merged model, bf16, eager", merged)]
    if compiled:
        forwards.append(("plain merged model, bf16, torch.compile", torch.compile(merged)))
    floors = []
    for name, forward in forwards:
        with torch.no_grad():
            for _ in range(3):
                (forward(xd).argmax(-1) == yd).float().mean().item()
            sync(device)
            start = time.perf_counter()
            for _ in range(10):
                (forward(xd).argmax(-1) == yd).float().mean().item()
            sync(device)
        floors.append({"method": name, "ms_per_forward": 100 * (time.perf_counter() - start)})
    return floors


def main() -> None:
    import timm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument(
        "--compiled",
        action=argparse.BooleanOptionalAction,
        default=torch.cuda.is_available(),
        help="also time SubnetEvaluator(compile=True) (default: on a GPU)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10).to(device).eval()
    model = glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(rank=4, target_modules=TARGETS))
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.normal_(0, 0.02)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, 224, 224, generator=g)
    y = torch.randint(0, 10, (args.images,), generator=g)
    subnets = [glora.sample_subnet(model, s) for s in range(args.subnets)]
    spare = [glora.sample_subnet(model, args.subnets + s) for s in range(4)]

    rows, ms = [], {}
    for name, options, seen in SETTINGS if args.compiled else SETTINGS[:-1]:
        evaluator = glora.SubnetEvaluator(model, (x, y), device=device, **options)
        per_pass = options.get("subnets_per_pass", 1)
        with evaluator.search_scope():  # as glora.search enters it: folds are kept between calls
            if seen:
                evaluator(subnets)
            else:  # other subnets than the timed ones: the timed ones fold anew
                evaluator(spare[:per_pass])
                evaluator(spare[:per_pass])  # a compiled evaluator's CUDA graph is recorded on its second call
            sync(device)
            start = time.perf_counter()
            scores = evaluator(subnets)
            sync(device)
            seconds = time.perf_counter() - start
        rows.append(
            {"method": name, "evals_per_s": len(subnets) / seconds, "ms_per_eval": 1000 * seconds / len(subnets)}
        )
        ms[name] = rows[-1]["ms_per_eval"]
        if name == FOLDED:
            glora_scores = scores

    floors = _merged_forward_floor(model, subnets[0], x, y, device, compiled=device.type == "cuda")

    reference = replace_linears(copy.deepcopy(base), TARGETS, rank=4).to(device).eval()
    ref_layers = [m for m in reference.modules() if type(m).__name__ == "ReferenceGLoRALinear"]
    wrapped = [layer for _, layer in glora_layers(model)]
    with torch.no_grad():
        for ref, layer in zip(ref_layers, wrapped):
            for n in ("Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"):
                getattr(ref, n).copy_(getattr(layer, n))
    names = [n for n, _ in glora_layers(model)]
    xd, yd = x.to(device), y.to(device)

    def reference_eval(subnet) -> float:
        correct = 0
        with torch.no_grad():
            for ref, name in zip(ref_layers, names):
                ref.config = _reference_config(subnet[name])
            for i in range(0, len(xd), 64):
                correct += (reference(xd[i : i + 64]).argmax(-1) == yd[i : i + 64]).sum().item()
        return correct / len(xd)

    reference_eval(subnets[0])
    sync(device)
    start = time.perf_counter()
    ref_scores = [reference_eval(s) for s in subnets]
    sync(device)
    seconds = time.perf_counter() - start
    rows.append(
        {
            "method": "reference: unmerged, fixed config, batch 64, fp32",
            "evals_per_s": len(subnets) / seconds,
            "ms_per_eval": 1000 * seconds / len(subnets),
        }
    )
    set_config(reference, None)
    agreement = sum(abs(a - b) <= 2.0 / len(xd) for a, b in zip(glora_scores, ref_scores)) / len(subnets)
    for r in rows:
        r["speedup_vs_reference"] = rows[-1]["ms_per_eval"] / r["ms_per_eval"]
    print_table(rows, ["method", "evals_per_s", "ms_per_eval", "speedup_vs_reference"])
    for floor in floors:
        floor["evaluator_vs_floor"] = ms[FOLDED] / floor["ms_per_forward"]
        floor["evaluator_folds_kept_vs_floor"] = ms[KEPT] / floor["ms_per_forward"]
        if args.compiled:
            floor["compiled_evaluator_vs_floor"] = ms[COMPILED] / floor["ms_per_forward"]
    print_table(floors, list(floors[0]))
    print(f"accuracy agreement with the reference (within 2 images): {agreement:.0%}")

    # whole searches: the folded evaluator (keeping folds, its default) and, on a GPU, the compiled one
    searches = []
    for name, options in [(FOLDED, {})] + ([(COMPILED, {"compile": True})] if args.compiled else []):
        evaluator = glora.SubnetEvaluator(model, (x, y), device=device, **options)
        start = time.perf_counter()
        result = glora.search(model, evaluator, 290_000, seed=0, generations=args.generations, progress=False)
        wall = time.perf_counter() - start
        folds = evaluator.fold_cache
        searches.append(
            {
                "evaluator": name,
                "wall_s": wall,
                "evaluations": result.evaluations,
                "fitness_s": result.fitness_seconds,
                "engine_s": result.engine_seconds,
                "outside_fitness_share": (wall - result.fitness_seconds) / wall,
                "folds_kept_share": folds.hits / max(1, folds.hits + folds.misses),
                "best_params": result.best_params,
                "budget": 290_000,
            }
        )
        print(
            f"whole search, {name} (population 50, {args.generations} generations, budget 290,000): {wall:.1f} s, "
            f"{result.evaluations} evaluations, {100 * searches[-1]['outside_fitness_share']:.2f} % outside fitness "
            f"(engine {result.engine_seconds:.3f} s), folds kept {100 * searches[-1]['folds_kept_share']:.0f} %"
        )
    path = write_result(
        "subnet_eval",
        device,
        {
            "model": "vit_base_patch16_224 (random init, 10 classes)",
            "images": args.images,
            "subnets_timed": args.subnets,
            "rank": 4,
            "search_generations": args.generations,
        },
        {"evaluation": rows, "merged_forward_floor": floors, "agreement_with_reference": agreement, "search": searches},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
