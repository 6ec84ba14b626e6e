"""Write the causal-lm example's inputs, offline: ``documents.txt`` (one paragraph of the docstrings of Python's
standard library per line) and ``model/``, a small LLaMA-style decoder with random weights and a byte-level BPE
tokenizer trained on those documents.

    python examples/causal-lm/make_model.py            # then: glora run --config examples/causal-lm/config.toml
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "enum", "fractions", "functools", "glob", "heapq", "html", "inspect", "io",
    "ipaddress", "itertools", "json", "logging", "math", "operator", "os", "pathlib", "pickle", "pprint", "queue",
    "random", "re", "shlex", "shutil", "statistics", "string", "struct", "subprocess", "tempfile", "textwrap",
    "threading", "typing", "unittest", "urllib.parse", "uuid", "warnings", "zipfile",
]  # fmt: skip


def documents(min_words: int = 8) -> list[str]:
    """The paragraphs of the docstrings of ``MODULES`` and their public members, each on one line, in a fixed
    order, without duplicates and without paragraphs of code (doctest prompts)."""
    seen: set[str] = set()
    out = []
    for name in MODULES:
        module = importlib.import_module(name)
        objects = [module] + [getattr(module, n) for n in sorted(vars(module)) if not n.startswith("_")]
        for obj in objects:
            doc = inspect.getdoc(obj) if inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj) else None
            for paragraph in re.split(r"\n\s*\n", doc or ""):
                if ">>>" in paragraph or "..." in paragraph[:4]:
                    continue
                text = " ".join(paragraph.split())
                if len(text.split()) >= min_words and text not in seen:
                    seen.add(text)
                    out.append(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE, help="folder for documents.txt and model/ (default: this folder)")
    parser.add_argument("--vocab", type=int, default=2048, help="tokenizer vocabulary size")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    docs = documents()
    path = os.path.join(args.out, "documents.txt")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(docs) + "\n")

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(docs, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    folder = os.path.join(args.out, "model")
    tokenizer.save_pretrained(folder)  # no pad token: glora pads with </s>

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 8 * 8,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {path} ({len(docs):,} documents) and {folder} (LLaMA-style, {params:,} parameters, random weights)")


if __name__ == "__main__":
    main()
