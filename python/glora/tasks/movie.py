"""The offline movie-sentence task of docs/benchmarks.md: human-rated Rotten Tomatoes snippets (Hutto & Gilbert
2014) from the source distribution of ``vaderSentiment==3.3.2``.

Label = mean rating > 0; sentences with |rating| <= 0.5 and duplicate texts are dropped (about 10,000 remain,
balanced). Splits are balanced and seeded: train (default 1000), validation (500, search fitness only) and test
(2000), disjoint.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
import zlib
from dataclasses import dataclass
from typing import Union

SDIST = "vaderSentiment-3.3.2.tar.gz"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
FETCH = "pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d DIR"


def is_movie_data(path: str) -> bool:
    """Whether ``path`` names the movie sentences: the sdist, its inner archive or the ground-truth file."""
    return os.path.basename(path) in (SDIST, os.path.basename(INNER), os.path.basename(FILE))


@dataclass
class Split:
    texts: list[str]
    labels: list[int]


def read_sentences(path: Union[str, os.PathLike]) -> tuple[list[str], list[int]]:
    """Sentences and labels from the sdist tarball, the inner ``hutto_ICWSM_2014.tar.gz`` or the text file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no movie data at {path}; fetch it with: {FETCH.replace('DIR', os.path.dirname(path) or '.')}"
        )
    if os.path.isdir(path):
        raise IsADirectoryError(f"movie data {path} is a folder; pass {SDIST} or the .txt file")
    if path.endswith(".txt"):
        with open(path, "rb") as fh:
            raw = fh.read()
    else:
        raw = _read_archive(path)
    texts, labels, seen = [], [], set()
    for number, line in enumerate(raw.decode("latin-1").splitlines(), 1):
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        try:
            rating = float(parts[1])
        except ValueError:
            raise ValueError(f"{path}: line {number} has a rating that is not a number: {parts[1]!r}") from None
        text = parts[2].strip()
        if abs(rating) <= 0.5 or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(int(rating > 0))
    return texts, labels


def _read_archive(path: str) -> bytes:
    """The ground-truth file's bytes from the sdist tarball or the inner one; a damaged archive is a ValueError."""
    try:
        with tarfile.open(path) as outer:
            names = outer.getnames()
            if INNER in names:
                with tarfile.open(fileobj=io.BytesIO(_member(outer, INNER, path))) as inner:
                    return _member(inner, FILE, f"{path}:{INNER}")
            if FILE in names:
                return _member(outer, FILE, path)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is not a readable tar archive ({err or type(err).__name__})") from None
    raise ValueError(f"{path} holds neither {INNER} nor {FILE}")


def _member(tar: tarfile.TarFile, name: str, where: str) -> bytes:
    """The bytes of a regular file in the archive."""
    member = tar.extractfile(name)
    if member is None:
        raise ValueError(f"{where}: {name} is not a regular file")
    return member.read()


def balanced_splits(texts: list[str], labels: list[int], sizes: tuple[int, ...], seed: int) -> list[Split]:
    """Disjoint splits of the given sizes, each half positive and half negative, drawn with ``seed``."""
    rng = random.Random(seed)
    by_label = {0: [i for i, y in enumerate(labels) if y == 0], 1: [i for i, y in enumerate(labels) if y == 1]}
    for pool in by_label.values():
        rng.shuffle(pool)
    need = sum(s // 2 for s in sizes)
    if need > min(len(p) for p in by_label.values()):
        raise ValueError(
            f"splits {sizes} need {need} sentences of each label; the data has {[len(p) for p in by_label.values()]}"
        )
    splits, offset = [], 0
    for size in sizes:
        half = size // 2
        index = by_label[0][offset : offset + half] + by_label[1][offset : offset + half]
        rng.shuffle(index)
        splits.append(Split([texts[i] for i in index], [labels[i] for i in index]))
        offset += half
    return splits
