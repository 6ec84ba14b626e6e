"""Benchmark: what trimming token padding saves, in the search's fitness and in supernet training.

all-MiniLM-L6-v2 wrapped as ``glora run`` wraps it (rank 4, every encoder linear) on the movie sentences padded to
64 tokens (they average 27). Token batches (a dict with an ``attention_mask``) drop the columns no example in them
attends to, and the evaluator runs the examples in order of length, so each batch is cut to its own longest
example. The same data given as a tuple ``(input_ids, attention_mask, labels)`` is not trimmed: that is the padded
baseline, measured in the same process. Rows: a subnet's evaluation (``neg_loss``) on the validation split at
several batch sizes, and a supernet training step of 32 sentences, each against its padded baseline, interleaved.
Results: ``benches/results/token_padding_<device>.json`` (docs/benchmarks.md).

    python benches/prepare_assets.py     # .assets/minilm-fp16 and the movie sentences
    python benches/token_padding.py [--device cpu] [--validation 200]
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

import torch

import glora
from common import print_table, time_interleaved, write_result
from glora.tasks.movie import balanced_splits, read_sentences
from glora.tasks.text_classification import BERT_LINEARS
from supernet_quality import ASSETS, encode, load

TRAIN_BATCH = 32


def as_tuple(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The same examples as positional inputs: not trimmed (the padded baseline)."""
    return data["input_ids"], data["attention_mask"], data["labels"]


def evaluations(model, validation, sizes: list[int], device: torch.device) -> dict[str, Callable[[], Any]]:
    subnet = glora.sample_subnet(model, 0)
    fns = {}
    for size in sizes:
        for name, data in (("trimmed", validation), ("padded", as_tuple(validation))):
            evaluator = glora.SubnetEvaluator(model, data, metric="neg_loss", device=device, batch_size=size)
            fns[f"evaluation, batch {size}, {name}"] = lambda e=evaluator: e([subnet])
    return fns


def training_steps(model_dir: str, train, device: torch.device) -> dict[str, Callable[[], Any]]:
    fns = {}
    for name, data in (("trimmed", train), ("padded", as_tuple(train))):
        model = wrapped(model_dir, device)
        config = glora.TrainConfig(steps=10**6, batch_size=TRAIN_BATCH, lr=1e-3, progress=False)
        trainer = glora.SupernetTrainer(model, data, config, device=device)
        fns[f"supernet step, batch {TRAIN_BATCH}, {name}"] = lambda t=trainer: t.train(steps=t.step + 1)
    return fns


def wrapped(model_dir: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load(model_dir, device)
    return glora.wrap(model, glora.GLoRAConfig(rank=4, target_modules=BERT_LINEARS, modules_to_save=["head"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(ASSETS, "minilm-fp16"))
    parser.add_argument("--data", default=os.path.join(ASSETS, "vaderSentiment-3.3.2.tar.gz"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--validation", type=int, default=None, help="sentences (default 500 on a GPU, 200 on a CPU)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    n_val = args.validation or (500 if gpu else 200)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    texts, labels = read_sentences(args.data)
    train, validation = (encode(tokenizer, s.texts, s.labels) for s in balanced_splits(texts, labels, (1000, n_val), 0))
    lengths = validation["attention_mask"].sum(1).float()
    model = wrapped(args.model, device)
    fns = {**evaluations(model, validation, [256, 64, 32], device), **training_steps(args.model, train, device)}
    timings = time_interleaved(fns, device, 2, args.repeat)
    rows = []
    for name, t in timings.items():
        baseline = timings[name.replace("trimmed", "padded")]["median_ms"]
        rows.append({"method": name, "ms": t["median_ms"], "vs_padded": t["median_ms"] / baseline})
    print_table(rows, ["method", "ms", "vs_padded"])
    config = {
        "model": "all-MiniLM-L6-v2, glora rank 4 on every encoder linear",
        "validation_sentences": n_val,
        "max_len": 64,
        "mean_tokens": float(lengths.mean()),
        "threads": torch.get_num_threads(),
        "repeat": args.repeat,
    }
    print("wrote", write_result("token_padding", device, config, rows))


if __name__ == "__main__":
    main()
