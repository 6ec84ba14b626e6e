"""The Triton kernels of the dense GLoRA weight, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1):
forward values and all factor gradients equal the PyTorch path on random configurations and layer kinds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import os, random, sys
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, {tests!r})
    import torch
    from torch import nn
    from transformers.pytorch_utils import Conv1D
    import glora
    from glora.layers import kernels

    def run(layer, x, fused):
        kernels.available = (lambda w0: True) if fused else (lambda w0: False)
        layer.zero_grad()
        y = layer(x)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(7)) + 0.5)
        return y.detach(), {{n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}}

    worst = 0.0
    for seed in range(24):
        torch.manual_seed(seed)
        rng = random.Random(seed)
        base = [lambda: nn.Linear(40, 72), lambda: nn.Linear(33, 20, bias=False), lambda: Conv1D(24, 40),
                lambda: nn.Conv2d(6, 8, 3, groups=2)][seed % 4]()
        layer = glora.GLoRALayer(base, max_rank=8, ranks=(2, 8), add_bias=True)
        with torch.no_grad():
            for n, p in layer.named_parameters():
                if "base_layer" not in n:
                    p.copy_(torch.randn_like(p) * 0.2)
        config = {{g: rng.choice(layer.choices[g]) for g in glora.GENES}}
        if config["A"] == "none" and config["B"] == "none":
            config["A"] = "vector"
        layer.set_config(config)
        x = torch.randn(5, 6, 8, 8) if isinstance(base, nn.Conv2d) else torch.randn(3, 5, base.weight.shape[0] if isinstance(base, Conv1D) else base.in_features)
        y1, g1 = run(layer, x, True)
        y2, g2 = run(layer, x, False)
        assert g1.keys() == g2.keys(), (config, g1.keys(), g2.keys())
        worst = max(worst, ((y1 - y2).norm() / y2.norm()).item())
        for n in g1:
            worst = max(worst, ((g1[n] - g2[n]).norm() / (g2[n].norm() + 1e-12)).item())
    print("WORST", worst)
    assert worst < 1e-5, worst
    """
)


def test_fused_weight_kernels_match_the_pytorch_path() -> None:
    tests = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "WORST" in done.stdout


WEIGHT_SCRIPT = textwrap.dedent(
    """
    import os, random
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from glora.layers import functional, kernels
    from glora.layers.choices import parse_choice

    worst, cases = 0.0, 0
    for seed in range(40):
        rng = random.Random(seed)
        torch.manual_seed(seed)
        out, inn = rng.choice([(40, 72), (33, 20), (130, 70)])
        w0 = torch.randn(out, inn).to(rng.choice([torch.float32, torch.bfloat16]))
        factors = [torch.randn(out, 8), torch.randn(8, inn), torch.randn(out, 8), torch.randn(8, inn)]
        names = ["lora_2", "lora_8", "vector", "scalar", "none"]
        plan = (parse_choice("A", rng.choice(names), 8), parse_choice("B", rng.choice(names), 8))
        if plan[0].kind == "none" and plan[1].kind == "none":
            continue
        dtype = rng.choice([torch.float32, torch.bfloat16])
        kernels.available = lambda w: True
        fused = functional.effective_weight(plan + (None,) * 3, w0, *factors, dtype)
        kernels.available = lambda w: False
        plain = functional.effective_weight(plan + (None,) * 3, w0, *factors, dtype)
        assert fused.dtype == plain.dtype == dtype and fused.shape == plain.shape, (plan, fused.dtype, plain.dtype)
        # both round one float32 sum to dtype; Triton's interpreter truncates where the GPU rounds to nearest even,
        # so a bf16 result may differ by up to two steps of bf16 (the float32 sums differ in their last bits)
        rel = 1e-5 if dtype == torch.float32 else 2 ** -6
        worst = max(worst, ((fused.float() - plain.float()).abs() / (rel * plain.float().abs() + 1e-5)).max().item())
        cases += 1
    print("WORST", worst, "CASES", cases)
    assert cases >= 30 and worst <= 1.0, worst
    """
)


def test_weight_kernel_matches_the_pytorch_terms_on_every_form() -> None:
    """The one-launch ``W'`` (stored factors read with rank and broadcast as arguments) equals the PyTorch terms for
    lora slices, vectors, scalars and absent terms, over float32 and bf16 bases."""
    done = subprocess.run([sys.executable, "-c", WEIGHT_SCRIPT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "WORST" in done.stdout
