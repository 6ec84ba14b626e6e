"""The ``glora`` command line.

``glora`` with no arguments runs the built-in default: a BERT encoder of all-MiniLM-L6-v2's shape (random
weights) is wrapped on all 36 encoder linears, random subnets are sampled, perturbed adapters are merged, and the
merged model is checked against the subnet's outputs and the base model's parameter count.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Optional, Sequence

import torch


def _demo(args: argparse.Namespace) -> int:
    from transformers import BertConfig, BertModel

    import glora

    torch.manual_seed(args.seed)
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    base = BertModel(config, add_pooling_layer=False).eval()
    n_base = sum(p.numel() for p in base.parameters())
    model = glora.wrap(
        BertModel(config, add_pooling_layer=False).eval(),
        glora.GLoRAConfig(rank=args.rank, target_modules=["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]),
    )
    model.load_state_dict(base.state_dict(), strict=False)
    space = glora.search_space(model)
    print(f"wrapped {len(space)} layers of a MiniLM-shaped BERT; {glora.trainable_parameters_summary(model)}")
    print(f"search space: {space.min_params:,} to {space.max_params:,} adapter parameters per subnet")
    ids = torch.randint(0, config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        for _, p in glora.model.adapter_parameters(model):
            p.normal_(0, 0.02)
    worst = 0.0
    for k in range(args.subnets):
        subnet = glora.sample_subnet(model, args.seed * 1000 + k)
        glora.set_subnet(model, subnet)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", glora.BiasAddedWarning)
            expected = model(ids).last_hidden_state
            start = time.perf_counter()
            merged = glora.merge(model, subnet)
            merge_s = time.perf_counter() - start
            got = merged(ids).last_hidden_state
        err = ((got - expected).norm() / expected.norm()).item()
        worst = max(worst, err)
        n_merged = sum(p.numel() for p in merged.parameters())
        print(
            f"subnet {k}: {glora.count_params(model, subnet):>9,} adapter params | merged in {merge_s * 1000:6.1f} ms | "
            f"relative error {err:.2e} | merged params {n_merged:,} (base {n_base:,})"
        )
        if n_merged != n_base:
            print("error: the merged model's parameter count differs from the base model's", file=sys.stderr)
            return 1
    ok = worst < 1e-5
    print(f"{'OK' if ok else 'FAILED'}: merged models match their subnets (worst relative error {worst:.2e})")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glora", description="Generalized LoRA: supernet, search, merge.")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="wrap a MiniLM-shaped BERT, sample subnets, merge and verify (the default)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--rank", type=int, default=4)
    demo.add_argument("--subnets", type=int, default=5)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
