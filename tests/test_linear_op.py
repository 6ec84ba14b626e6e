"""The ``glora::linear`` custom op (the compiled supernet's linear layer): its registration passes torch's own
checks, and on many random plans, dtypes and layer shapes its output and gradients equal the eager node's, with
zero gradients exactly for the factors the plan leaves out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glora.layers import linear_op
from glora.layers.layer import HFConv1D, Linear
from glora.layers.linear_function import glora_linear
from glora.layers.plan_tensors import PlanTensors, unused_factors

CASES = [
    # (layer class, add_bias, base bias, base dtype, compute dtype)
    (Linear, False, True, torch.float32, torch.float32),
    (Linear, True, True, torch.float32, torch.float32),
    (Linear, True, False, torch.float32, torch.float32),
    (Linear, True, True, torch.float32, torch.bfloat16),
    (Linear, True, True, torch.bfloat16, torch.bfloat16),
    (Linear, False, False, torch.float64, torch.float64),
    (HFConv1D, True, True, torch.float32, torch.float32),
    (HFConv1D, True, True, torch.float32, torch.bfloat16),  # W0 a transposed view, cast: kept contiguous
    (HFConv1D, False, True, torch.bfloat16, torch.bfloat16),
]
IDS = [f"{c[0].__name__}-add_bias={c[1]}-bias={c[2]}-{c[3]}-{c[4]}" for c in CASES]


def _layer(kind: type, add_bias: bool, bias: bool, dtype: torch.dtype, seed: int) -> Linear:
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(seed)
    base = nn.Linear(12, 10, bias=bias) if kind is Linear else Conv1D(10, 12)
    base = base.to(dtype).requires_grad_(False)
    layer = kind(base, 4, (1, 2, 4), add_bias=add_bias)
    with torch.no_grad():
        for factor in layer.factors():
            if factor is not None:
                factor.copy_(torch.randn_like(factor) * 0.3)  # away from the zero init, so every term counts
    return layer


def _inputs(layer: Linear, plan_seed: int, compute: torch.dtype) -> tuple:
    generator = torch.Generator().manual_seed(plan_seed)
    plan = layer.plan_of(torch.randint(0, 1 << 30, (5,), generator=generator).tolist())
    tensors = PlanTensors(1, layer.max_rank, torch.device("cpu"))
    tensors.write([plan])
    x = torch.randn(3, 5, 12, generator=generator).to(compute).requires_grad_(True)
    return plan, tensors, x


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_op_equals_the_eager_node_on_random_plans(case) -> None:
    kind, add_bias, bias, base_dtype, compute = case
    for seed in range(12):
        layer = _layer(kind, add_bias, bias, base_dtype, seed)
        plan, tensors, x = _inputs(layer, seed, compute)
        w0, b0, factors = layer.weight_matrix(), layer.base_layer.bias, layer.factors()
        gy = torch.randn(3, 5, 10, dtype=compute)

        eager = glora_linear(x, w0, b0, plan, compute, factors)
        present = [f for f in factors if f is not None]
        eager_grads = torch.autograd.grad(eager, [x, *present], gy, allow_unused=True)
        y, _ = linear_op.linear(x, w0, b0, tensors.host, 0, *factors)
        op_grads = torch.autograd.grad(y, [x, *present], gy, allow_unused=True)

        assert torch.equal(y, eager), (plan, seed)
        assert torch.equal(op_grads[0], eager_grads[0]), (plan, seed)
        unused = [u for u, f in zip(unused_factors(plan), factors) if f is not None]
        for drop, got, want in zip(unused, op_grads[1:], eager_grads[1:]):
            if drop:
                assert want is None and torch.count_nonzero(got) == 0, (plan, seed)
            else:
                assert want is not None and torch.equal(got, want), (plan, seed)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_op_passes_torch_library_opcheck(case) -> None:
    kind, add_bias, bias, base_dtype, compute = case
    layer = _layer(kind, add_bias, bias, base_dtype, 0)
    for seed in range(6):
        _, tensors, x = _inputs(layer, seed, compute)
        args = (x, layer.weight_matrix(), layer.base_layer.bias, tensors.host, 0, *layer.factors())
        torch.library.opcheck(linear_op.linear, args)


def test_the_host_table_is_decoded_again_after_every_write() -> None:
    layer = _layer(Linear, True, True, torch.float32, 0)
    tensors = PlanTensors(1, layer.max_rank, torch.device("cpu"))
    x = torch.randn(2, 12)
    w0, b0, factors = layer.weight_matrix(), layer.base_layer.bias, layer.factors()
    for seed in range(8):
        plan = layer.plan_of(torch.randint(0, 1 << 30, (5,), generator=torch.Generator().manual_seed(seed)).tolist())
        tensors.write([plan])
        y, _ = linear_op.linear(x, w0, b0, tensors.host, 0, *factors)
        assert torch.equal(y, glora_linear(x, w0, b0, plan, torch.float32, factors)), plan
