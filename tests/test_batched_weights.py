"""The weights built for a whole forward (batched_weights.py) must train exactly like the per-layer node."""

from __future__ import annotations

import contextlib
import copy
import pickle
import random
import weakref

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import glora
from glora.layers import batched_weights, linear_function
from glora.layers.linear_function import GLoRALinearFunction
from glora.training.gradient_checkpointing import enable_gradient_checkpointing
from glora.tuner.wrapping import adapter_parameters, glora_layers, set_batched_weights
from models import CASES, TinyTransformer

LINEAR_CASES = [c for c in CASES if c.name != "convnet"]


def _perturbed(case, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = case.make()
    glora.wrap(model, glora.GLoRAConfig(rank=4, ranks=[1, 2, 4], target_modules=case.targets, add_bias=seed % 3 != 0))
    with torch.no_grad():
        for _, p in adapter_parameters(model):
            p.copy_(torch.randn_like(p) * 0.1)
    return model.train()


def _path(model: nn.Module, batched: bool) -> contextlib.AbstractContextManager:
    """The batched weights (the default), or every layer's own node (the reference)."""
    return contextlib.nullcontext() if batched else batched_weights.per_layer_nodes(model)


def _step(case, model: nn.Module, inputs, batched: bool) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks for both paths
    with _path(model, batched), torch.autocast("cpu", dtype=torch.bfloat16):
        out = case.run(model, inputs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * weights).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in adapter_parameters(model) if p.grad is not None}


@pytest.mark.parametrize("case", LINEAR_CASES, ids=repr)
@pytest.mark.parametrize("seed", range(4))
def test_same_outputs_and_gradients_as_the_node(case, seed: int, monkeypatch) -> None:
    """Random subnets, perturbed adapters, bf16 autocast: bit-identical outputs and A, B gradients. PyTorch's
    linear backward returns the bias gradient in bf16 (as for any bias trained under autocast) where the node sums
    it in float32, so C, D, E's gradients are compared with the node's computed from its bias gradient rounded to
    bf16 once."""
    model = _perturbed(case, seed)
    glora.set_subnet(model, glora.sample_subnet(model, seed))
    inputs = case.make_input(torch.Generator().manual_seed(seed))
    exact = linear_function.bias_grads
    monkeypatch.setattr(
        linear_function,
        "bias_grads",
        lambda grads, plan, gb, *rest: exact(grads, plan, gb.bfloat16().to(gb.dtype), *rest),
    )
    out_node, grads_node = _step(case, model, inputs, False)
    out, grads = _step(case, model, inputs, True)
    assert torch.equal(out, out_node)
    assert grads.keys() == grads_node.keys()
    for name, g in grads.items():
        ref = grads_node[name]
        if name.rsplit(".", 1)[-1] in ("Ad", "Au", "Bd", "Bu"):
            assert torch.equal(g, ref), name  # the weight's gradient is the node's g^T x, bit for bit
        else:  # the bf16 sums may differ by one rounding step
            assert (g - ref).norm() <= 1e-2 * ref.norm() + 1e-6, name


@pytest.mark.parametrize("seed", range(6))
def test_the_node_is_not_used_when_every_layer_takes_part(seed: int, monkeypatch) -> None:
    model = _perturbed(CASES[0], seed)
    glora.supernet_mode(model, seed)

    def refuse(*args):
        raise AssertionError("a layer ran its own GLoRALinear node")

    monkeypatch.setattr(GLoRALinearFunction, "apply", refuse)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(4, 12)).sum().backward()
    assert any(p.grad is not None for _, p in adapter_parameters(model))


@pytest.mark.parametrize("seed", range(4))
def test_supernet_training_steps_match_the_node(seed: int) -> None:
    """Three optimizer steps on fixed random plans: the adapters end where the per-layer node takes them."""
    finals = []
    for batched in (False, True):
        model = _perturbed(CASES[3], seed)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        rng = random.Random(seed)
        for step in range(3):
            glora.set_subnet(model, glora.sample_subnet(model, rng.randrange(1 << 20)))
            with _path(model, batched), torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(step))).float().pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        finals.append({n: p.detach().clone() for n, p in adapter_parameters(model)})
    for name, value in finals[1].items():
        torch.testing.assert_close(value, finals[0][name], rtol=2e-2, atol=2e-4)


class Checkpointed(nn.Module):
    """Two checkpointed transformer blocks (reentrant: each segment runs its own backward pass)."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.first, self.second = TinyTransformer(), TinyTransformer()
        self.first.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = checkpoint(self.first, x, use_reentrant=self.reentrant)
        return checkpoint(self.second, x, use_reentrant=self.reentrant)


class Plain(Checkpointed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


@pytest.mark.parametrize("base", ["float32", "bfloat16"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
@pytest.mark.parametrize("seed", range(3))
def test_gradient_checkpointing_changes_nothing(seed: int, reentrant: bool, base: str) -> None:
    """Non-reentrant: the recomputed forward uses the weights built for the original one, same gradients bit for
    bit (over a bf16 base the checkpoint's saved-tensor hooks take precedence: ``W'`` is kept, not rebuilt).
    Reentrant: the first pass runs without gradients (the per-layer path), each segment's backward calls the
    batched node for its own layers; the same gradients as without checkpointing."""
    grads = []
    for model_type in (Plain, Checkpointed):
        torch.manual_seed(seed)
        model = model_type(reentrant)
        glora.wrap(model, glora.GLoRAConfig(rank=4, target_modules=r"(.*\.)?(q|k|v|o|up|down)"))
        with torch.no_grad():
            for _, p in adapter_parameters(model):
                p.copy_(torch.randn_like(p) * 0.1)
        for _, layer in glora_layers(model):
            layer.base_layer.to(getattr(torch, base))
        glora.set_subnet(model, glora.sample_subnet(model, seed))
        x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(seed), requires_grad=reentrant)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x).float().sum().backward()
        grads.append([p.grad for _, p in adapter_parameters(model)])
    for a, b in zip(*grads):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("base", ["float32", "bfloat16"])
def test_a_layer_called_twice_gets_both_gradients(base: str) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.tanh(self.fc(x)))

    grads = []
    for batched in (False, True):
        torch.manual_seed(0)
        model = glora.wrap(Twice(), glora.GLoRAConfig(rank=2, target_modules=["fc"]))
        with torch.no_grad():
            for _, p in adapter_parameters(model):
                p.copy_(torch.randn_like(p) * 0.1)
        model.fc.base_layer.to(getattr(torch, base))  # bf16: the second call finds W' handed over, runs the node
        glora.set_subnet(model, {"fc": {"A": "lora_2", "B": "vector", "C": "lora_2", "D": "scalar", "E": "vector"}})
        with _path(model, batched), torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.randn(3, 8, generator=torch.Generator().manual_seed(0))).float().sum().backward()
        grads.append({n: p.grad for n, p in adapter_parameters(model)})
    for name, g in grads[1].items():
        ref = grads[0][name]
        assert (g is None) == (ref is None), name
        if g is not None:
            assert ((g - ref).norm() / ref.norm()).item() < 2e-2, name


def test_stale_weights_are_not_used() -> None:
    """After the optimizer's step, a layer called on its own (not through the model) computes with the new
    factors, and a new plan set between forwards is honoured."""
    model = _perturbed(CASES[0], 0)
    glora.set_subnet(
        model,
        {
            n: {"A": "lora_4", "B": "lora_2", "C": "vector", "D": "vector", "E": "scalar"}
            for n, _ in glora_layers(model)
        },
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(4, 12)).sum().backward()
    assert model.fc1.prepared_weights is not None
    with torch.no_grad():
        model.fc1.Ad.add_(1.0)
    x = torch.randn(4, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direct = model.fc1(x)
    model.fc1.prepare(None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fresh = model.fc1(x)
    assert torch.equal(direct, fresh)


def test_copies_pickles_and_merges_after_a_step() -> None:
    model = _perturbed(CASES[0], 1)
    subnet = glora.sample_subnet(model, 1)
    glora.set_subnet(model, subnet)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(4, 12)).sum().backward()
    clone = copy.deepcopy(model)
    assert clone.fc1.prepared_weights is None
    model.fc1.prepare(None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        clone(torch.randn(4, 12)).sum().backward()
    assert (
        clone.fc1.prepared_weights is not None and model.fc1.prepared_weights is None
    )  # the copy's hook builds the copy's layers
    pickle.loads(pickle.dumps(model))
    merged = glora.merge(model, subnet)
    assert not merged._forward_pre_hooks
    x = torch.randn(4, 12)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-6)


def test_no_build_without_gradients() -> None:
    model = _perturbed(CASES[0], 2)
    glora.set_subnet(model, glora.sample_subnet(model, 2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(4, 12))
    assert model.fc1.prepared_weights is None


@pytest.mark.slow
@pytest.mark.parametrize("base", ["float32", "bfloat16"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per_layer_node"])
def test_torch_compile_of_a_wrapped_model(batched: bool, base: str) -> None:
    """torch.compile traces both paths (the autocast toggle, the cached masks and, over a bf16 base, the
    saved-tensor hooks that rebuild ``W'`` have traceable forms there): outputs and gradients as in eager mode."""
    model = _perturbed(CASES[0], 5)
    for _, layer in glora_layers(model):
        layer.base_layer.to(getattr(torch, base))
    glora.set_subnet(
        model,
        {
            n: {"A": "lora_2", "B": "vector", "C": "lora_4", "D": "scalar", "E": "vector"}
            for n, _ in glora_layers(model)
        },
    )
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(5))
    results = []
    for run in (model, torch.compile(model, backend="aot_eager")):
        model.zero_grad(set_to_none=True)
        with _path(model, batched), torch.autocast("cpu", dtype=torch.bfloat16):
            out = run(x)
        out.float().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in adapter_parameters(model) if p.grad is not None}))
    (eager, eager_grads), (compiled, compiled_grads) = results
    assert torch.equal(compiled, eager)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, g in compiled_grads.items():
        assert (g - eager_grads[name]).norm() <= 1e-2 * eager_grads[name].norm() + 1e-6, name


def _tiny_transformer(seed: int, base: str, mode: str = "auto") -> nn.Module:
    torch.manual_seed(seed)
    model = TinyTransformer()
    glora.wrap(
        model,
        glora.GLoRAConfig(
            rank=4, ranks=[2, 4], target_modules=r"(.*\.)?(q|k|v|o|up|down)", add_bias=True, batched_weights=mode
        ),
    )
    with torch.no_grad():
        for _, p in adapter_parameters(model):
            p.copy_(torch.randn_like(p) * 0.1)
    if base == "bfloat16_autocast":
        for _, layer in glora_layers(model):
            layer.base_layer.to(torch.bfloat16)
    return model


def _forward(model: nn.Module, x: torch.Tensor, base: str) -> torch.Tensor:
    if base == "bfloat16_autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)
    return model(x)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("base", ["bfloat16_autocast", "float32_plain"])
@pytest.mark.parametrize("mode", ["auto", "always"])
def test_batched_modes_match_the_node_over_any_base(seed: int, base: str, mode: str, monkeypatch) -> None:
    """A base in the compute dtype (an LLM's bf16 weights) and float32 training without autocast: ``auto``
    rebuilds ``W'`` in the backward, ``always`` keeps it; both give the node's outputs and A/B gradients, and
    C/D/E's up to the bias gradient's rounding. No layer runs its own node."""
    node_calls = []
    apply = GLoRALinearFunction.apply
    monkeypatch.setattr(GLoRALinearFunction, "apply", lambda *args: node_calls.append(1) or apply(*args))
    results = []
    for batched in (False, True):
        node_calls.clear()
        model = _tiny_transformer(seed, base, mode)
        glora.set_subnet(model, glora.sample_subnet(model, seed))
        with _path(model, batched):
            out = _forward(model, torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(seed)), base)
        out.float().sum().backward()
        results.append(
            (out.detach(), {n: p.grad for n, p in adapter_parameters(model) if p.grad is not None}, len(node_calls))
        )
    (out_node, grads_node, calls_node), (out, grads, calls) = results
    assert calls_node > 0 and calls == 0
    assert torch.equal(out, out_node)
    assert grads.keys() == grads_node.keys()
    tolerance = 1e-2 if base == "bfloat16_autocast" else 1e-5
    for name, g in grads.items():
        ref = grads_node[name]
        if name.rsplit(".", 1)[-1] in ("Ad", "Au", "Bd", "Bu"):
            torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-7, msg=name)
        else:
            assert (g - ref).norm() <= tolerance * ref.norm() + 1e-6, name


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("how", ["inside_autocast", "create_graph"])
def test_the_rebuild_is_the_same_in_any_backward(how: str) -> None:
    """``W'`` rebuilt in a backward run inside the autocast region, or with ``create_graph=True`` (grad mode on
    while it runs), gives the gradients of the usual backward."""
    grads = []
    for variant in ("usual", how):
        model = _tiny_transformer(3, "bfloat16_autocast")
        glora.set_subnet(model, glora.sample_subnet(model, 3))
        x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(3))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().sum()
            if variant == "inside_autocast":
                loss.backward()
        if variant == "usual":
            loss.backward()
        elif variant == "create_graph":
            loss.backward(create_graph=True)
        grads.append({n: p.grad.detach() for n, p in adapter_parameters(model) if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


@pytest.mark.parametrize("case", LINEAR_CASES, ids=repr)
@pytest.mark.parametrize("seed", range(2))
def test_rebuilt_weights_match_the_node_on_every_model_kind(case, seed: int, monkeypatch) -> None:
    """Over a bf16 base (``W'`` rebuilt in the backward) on every linear model kind, Hugging Face ``Conv1D``
    (a transposed ``W0``) included: the node's outputs and A/B gradients; C/D/E's as in
    ``test_same_outputs_and_gradients_as_the_node`` (the node's bias gradient rounded to bf16 once)."""
    exact = linear_function.bias_grads
    monkeypatch.setattr(
        linear_function,
        "bias_grads",
        lambda grads, plan, gb, *rest: exact(grads, plan, gb.bfloat16().to(gb.dtype), *rest),
    )
    results = []
    for batched in (False, True):
        model = _perturbed(case, seed)
        for _, layer in glora_layers(model):
            layer.base_layer.to(torch.bfloat16)
        glora.set_subnet(model, glora.sample_subnet(model, seed))
        inputs = case.make_input(torch.Generator().manual_seed(seed))
        torch.manual_seed(0)
        with _path(model, batched), torch.autocast("cpu", dtype=torch.bfloat16):
            out = case.run(model, inputs)
        out.float().sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in adapter_parameters(model) if p.grad is not None}))
    (out_node, grads_node), (out, grads) = results
    assert torch.equal(out, out_node)
    assert grads.keys() == grads_node.keys()
    for name, g in grads.items():
        ref = grads_node[name]
        if name.rsplit(".", 1)[-1] in ("Ad", "Au", "Bd", "Bu"):
            torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-7, msg=name)
        else:
            assert (g - ref).norm() <= 1e-2 * ref.norm() + 1e-6, name


def _built_weights(monkeypatch) -> list:
    """Weak references to every ``W'`` the batched node builds from now on."""
    refs = []
    apply = batched_weights._BuildWeights.apply

    def record(*args):
        outputs = apply(*args)
        refs.extend(weakref.ref(t) for t in outputs)
        return outputs

    monkeypatch.setattr(batched_weights._BuildWeights, "apply", record)
    return refs


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("base", ["bfloat16_autocast", "float32_plain"])
def test_auto_mode_keeps_no_weight_copy_over_a_compute_dtype_base(seed: int, base: str, monkeypatch) -> None:
    """Between the forward and the backward no built ``W'`` is alive (the graph holds recipes), and the
    backward still gives the same gradients as a second identical model under ``always``."""
    refs = _built_weights(monkeypatch)
    model = _tiny_transformer(seed, base)
    subnet = {
        n: {"A": "lora_4", "B": "lora_2", "C": "vector", "D": "none", "E": "scalar"} for n, _ in glora_layers(model)
    }
    glora.set_subnet(model, subnet)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(seed))
    loss = _forward(model, x, base).float().sum()
    assert refs and all(r() is None or r().dim() == 1 for r in refs)  # only the bias vectors remain
    loss.backward()
    kept = _tiny_transformer(seed, base)
    set_batched_weights(kept, "always")
    glora.set_subnet(kept, subnet)
    _forward(kept, x, base).float().sum().backward()
    for (name, p), (_, q) in zip(adapter_parameters(model), adapter_parameters(kept)):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name


def test_a_factor_modified_between_forward_and_backward_is_reported() -> None:
    model = _tiny_transformer(0, "bfloat16_autocast")
    glora.set_subnet(
        model,
        {n: {"A": "lora_4", "B": "vector", "C": "none", "D": "none", "E": "none"} for n, _ in glora_layers(model)},
    )
    loss = _forward(model, torch.randn(2, 5, 16), "bfloat16_autocast").float().sum()
    with torch.no_grad():
        for _, layer in glora_layers(model):
            layer.Au.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place between the forward and the backward"):
        loss.backward()


def test_a_checkpointing_model_keeps_the_node_where_weights_would_be_rebuilt(monkeypatch) -> None:
    """With the model's checkpointing switch on, layers over a bf16 base run their own node (a batched ``W'``
    would live through the step for the recompute); a float32 base under bf16 autocast stays batched."""
    node_calls = []
    apply = GLoRALinearFunction.apply
    monkeypatch.setattr(GLoRALinearFunction, "apply", lambda *args: node_calls.append(1) or apply(*args))
    for base, expect_node in (("bfloat16_autocast", True), ("float32_autocast", False)):
        model = _tiny_transformer(0, "bfloat16_autocast" if base == "bfloat16_autocast" else "float32_plain")
        model.grad_checkpointing = True  # timm's switch (transformers: is_activation_checkpointing)
        glora.set_subnet(model, glora.sample_subnet(model, 0))
        node_calls.clear()
        _forward(model, torch.randn(2, 5, 16), "bfloat16_autocast").float().sum().backward()
        assert bool(node_calls) == expect_node, base


def test_transformers_checkpointing_switch_is_seen_on_a_submodule(monkeypatch) -> None:
    """transformers keeps its switch on submodules (the decoder layers, the inner model): enabling it after the
    wrap makes the layers over a bf16 base run their own node, and the step matches the one without it."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=32,
        max_position_embeddings=8,
    )
    ids = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))
    node_calls = []
    apply = GLoRALinearFunction.apply
    monkeypatch.setattr(GLoRALinearFunction, "apply", lambda *args: node_calls.append(1) or apply(*args))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
        glora.wrap(model, glora.GLoRAConfig(target_modules=r".*_proj"))
        glora.set_subnet(
            model,
            {n: {"A": "lora_4", "B": "vector", "C": "none", "D": "none", "E": "none"} for n, _ in glora_layers(model)},
        )
        with torch.no_grad():
            for _, p in adapter_parameters(model):
                p.copy_(torch.randn_like(p) * 0.1)
        if checkpointing:
            enable_gradient_checkpointing(model)  # the trainer's switch: transformers' own, non-reentrant
        model.train()
        node_calls.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids, labels=ids).loss.backward()
        assert bool(node_calls) == checkpointing
        grads.append({n: p.grad for n, p in adapter_parameters(model) if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert all(torch.allclose(grads[0][n], grads[1][n], rtol=1e-2, atol=1e-4) for n in grads[0])


def test_the_mode_is_the_wrapped_models_own() -> None:
    """Each wrapped model keeps its own copy of the config: setting the mode on one leaves the other as it was."""
    config = glora.GLoRAConfig(rank=2, target_modules=["fc1", "fc2"])
    first, second = (glora.wrap(CASES[0].make(), config) for _ in range(2))
    set_batched_weights(first, "always")
    assert (first.glora_config.batched_weights, second.glora_config.batched_weights, config.batched_weights) == (
        "always",
        "auto",
        "auto",
    )


def test_an_unknown_mode_is_refused() -> None:
    model = _perturbed(CASES[0], 0)
    with pytest.raises(ValueError, match="batched weights mode must be one of"):
        set_batched_weights(model, "sometimes")
    with pytest.raises(ValueError, match="batched weights mode must be one of"):
        glora.GLoRAConfig(target_modules=["fc1"], batched_weights="off")
    with pytest.raises(TypeError, match=r"glora.set_batched_weights\(model, mode\)"):
        set_batched_weights("always")
