"""``glora demo``: wrap a MiniLM-shaped BERT with random weights, merge random subnets and check that each merged
model computes what its subnet does, with the base model's parameter count."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

HIDDEN = 384
MAX_SEED = 2**32


@dataclass
class DemoConfig:
    """The demo's settings, checked when made: ``subnets`` merged, adapters of ``rank``, weights from ``seed``."""

    seed: int = 0
    rank: int = 4
    subnets: int = 5

    def __post_init__(self) -> None:
        for name, low, high in (("seed", 0, MAX_SEED - 1), ("rank", 1, HIDDEN), ("subnets", 1, None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
                allowed = f"an integer in [{low}, {high}]" if high else f"an integer of at least {low}"
                raise ValueError(f"{name} must be {allowed}, got {value!r}")


def demo(cfg: DemoConfig) -> bool:
    """Print one line per merged subnet and a verdict; True when every merged model matches its subnet."""
    from transformers import BertConfig, BertModel

    import glora

    torch.manual_seed(cfg.seed)
    config = BertConfig(hidden_size=HIDDEN, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    base = BertModel(config, add_pooling_layer=False).eval()
    n_base = sum(p.numel() for p in base.parameters())
    model = glora.wrap(
        BertModel(config, add_pooling_layer=False).eval(),
        glora.GLoRAConfig(
            rank=cfg.rank,
            target_modules=["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
        ),
    )
    model.load_state_dict(base.state_dict(), strict=False)
    space = glora.search_space(model)
    print(f"wrapped {len(space)} layers of a MiniLM-shaped BERT; {glora.trainable_parameters_summary(model)}")
    print(f"search space: {space.min_params:,} to {space.max_params:,} adapter parameters per subnet")
    ids = torch.randint(0, config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.normal_(0, 0.02)
    worst = 0.0
    for k in range(cfg.subnets):
        subnet = glora.sample_subnet(model, cfg.seed * 1000 + k)
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
            print("FAILED: the merged model's parameter count differs from the base model's")
            return False
    ok = worst < 1e-5
    print(f"{'OK' if ok else 'FAILED'}: merged models match their subnets (worst relative error {worst:.2e})")
    return ok
