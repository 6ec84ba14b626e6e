"""Synthetic labelled sentences and a tiny BERT for the text tasks' tests."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import pytest
import torch

from glora.tasks import movie as movie_data

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "film", "plot", "the", "a", "very", "not"]


def sentence_lines(n: int = 120) -> list[str]:
    """Lines of the movie ground-truth format: id, rating, text; a positive word marks a positive rating."""
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n):
        positive = i % 2 == 0
        words = [WORDS[j] for j in torch.randint(6, 12, (5,), generator=g).tolist()]
        words.insert(
            int(torch.randint(0, 5, (1,), generator=g)),
            WORDS[int(torch.randint(0, 3, (1,), generator=g)) + (0 if positive else 3)],
        )
        rating = (1.5 if positive else -1.5) + 0.01 * i * (1 if positive else -1)
        lines.append(f"{i}\t{rating}\t{' '.join(words)} {i}")
    lines += ["900\t0.3\tneutral sentence", f"901\t2.0\t{lines[0].split(chr(9))[2]}", "902\t-1.0\tcaf\xe9 noir"]
    return lines


def write_sdist(path: Path, lines: list[str]) -> None:
    """A stand-in for vaderSentiment's source distribution holding ``lines`` as the movie ground truth."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        data = "\n".join(lines).encode("latin-1")
        info = tarfile.TarInfo(movie_data.FILE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path, "w:gz") as tar:
        blob = inner.getvalue()
        info = tarfile.TarInfo(movie_data.INNER)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("sentence", "sentiment")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labelled_rows(start: int, n: int) -> list[tuple[str, str]]:
    """``n`` sentences of :func:`sentence_lines` from ``start`` with string labels."""
    lines = sentence_lines(start + n)[start : start + n]
    return [(line.split("\t")[2], "pos" if float(line.split("\t")[1]) > 0 else "neg") for line in lines]


def save_tiny_bert(model_dir: Path) -> Path:
    """A 2-layer BERT of width 32 with a word-level vocabulary of the synthetic sentences, saved in ``model_dir``."""
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[str(i) for i in range(1000)], "caf", "##e", "noir"]
    (model_dir / "vocab.txt").write_text("\n".join(vocab))
    transformers.BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt")).save_pretrained(model_dir)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(model_dir)
    return model_dir
