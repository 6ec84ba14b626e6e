"""Properties every GLoRA-wrapped model must keep, checked on many random subnets and seeds per model type."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import glora
from glora.layers.choices import GENES
from glora.layers.layer import GLoRALayer
from glora.training.sampling import BudgetSampler
from glora.tuner.subnets import draw_plans
from glora.tuner.wrapping import glora_layers
from models import CASES, MLP, Case

SEEDS = range(6)


def _wrapped(case: Case, seed: int, **config) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    base = case.make().eval()
    model = glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(target_modules=case.targets, **config))
    return base, model


def _perturb(model: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("seed", SEEDS)
def test_fresh_adapter_equals_base_for_every_subnet(case: Case, seed: int) -> None:
    base, model = _wrapped(case, seed, ranks=[1, 2, 4])
    inputs = case.make_input(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = case.run(base, inputs)
        for k in range(5):
            glora.set_subnet(model, glora.sample_subnet(model, seed * 100 + k))
            torch.testing.assert_close(case.run(model, inputs), expected, rtol=0, atol=0)
        glora.supernet_mode(model, seed)
        torch.testing.assert_close(case.run(model, inputs), expected, rtol=0, atol=0)


def _double(inputs: torch.Tensor) -> torch.Tensor:
    return inputs.double() if inputs.is_floating_point() else inputs


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """||got - expected|| / ||expected|| in float64."""
    return ((got.double() - expected.double()).norm() / expected.double().norm()).item()


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("add_bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_merged_equals_fixed_subnet(case: Case, seed: int, add_bias: bool, dtype: torch.dtype) -> None:
    base, model = _wrapped(case, seed, rank=4, add_bias=add_bias)
    base, model = base.to(dtype), model.to(dtype)
    _perturb(model, seed, scale=0.05)
    inputs = case.make_input(torch.Generator().manual_seed(seed))
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for k in range(4):
        subnet = glora.sample_subnet(model, seed * 10 + k)
        glora.set_subnet(model, subnet)
        with torch.no_grad():
            expected = case.run(model, inputs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", glora.BiasAddedWarning)
                merged = glora.merge(model, subnet)
            got = case.run(merged, inputs)
            # fp32 rounding of the unmerged model itself (against float64) bounds what a merge can match
            rounding = _relative_error(expected, case.run(copy.deepcopy(model).double(), _double(inputs)))
        assert _relative_error(got, expected) < max(tolerance, 4 * rounding)
        assert not any(isinstance(m, GLoRALayer) for m in merged.modules())
        gained_bias = any(
            getattr(mm, "bias", None) is not None and getattr(bm, "bias", None) is None
            for (_, mm), (_, bm) in zip(merged.named_modules(), base.named_modules())
        )
        n_merged = sum(p.numel() for p in merged.parameters())
        n_base = sum(p.numel() for p in base.parameters())
        if not gained_bias:
            assert n_merged == n_base
            assert type(merged) is type(base)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "merge altered the wrapped model"


def test_merge_warns_when_a_bias_is_added() -> None:
    model = glora.wrap(MLP(bias=False), glora.GLoRAConfig(target_modules=["fc1", "fc2"], add_bias=True))
    subnet = {n: {"A": "none", "B": "none", "C": "vector", "D": "none", "E": "none"} for n in ["fc1", "fc2"]}
    with pytest.warns(glora.BiasAddedWarning, match="fc1"):
        merged = glora.merge(model, subnet)
    assert merged.fc1.bias is not None


@pytest.mark.parametrize("seed", range(3))
def test_by_default_a_bias_free_model_keeps_its_architecture(seed: int) -> None:
    """With the default config, bias-free layers offer no term that creates a bias; any subnet merges into
    bias-free layers, without a warning."""
    model = glora.wrap(MLP(bias=False), glora.GLoRAConfig(target_modules=["fc1", "fc2"]))
    for _, layer in glora_layers(model):
        assert layer.choices["C"] == layer.choices["D"] == layer.choices["E"] == ("none",)
    with warnings.catch_warnings():
        warnings.simplefilter("error", glora.BiasAddedWarning)
        merged = glora.merge(model, glora.sample_subnet(model, seed))
    assert merged.fc1.bias is None and merged.fc2.bias is None


def _table_cost(gene: str, choice: str, out: int, inn: int) -> int:
    """docs/method.md section 2, written out independently of glora.layers.choices."""
    if choice == "none":
        return 0
    if choice == "scalar":
        return 1
    if choice.startswith("lora_"):
        r = int(choice[5:])
        return r * (out + inn) if gene in "AB" else r * (inn + 1)
    return inn if gene == "C" else out


def _matrix_shape(module: torch.nn.Module) -> tuple[int, int]:
    w = module.weight
    if type(module).__name__ == "Conv1D":
        return w.shape[1], w.shape[0]
    return w.shape[0], w[0].numel()


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("seed", SEEDS)
def test_count_params_matches_method_table(case: Case, seed: int) -> None:
    _, model = _wrapped(case, seed, ranks=[2, 3, 8])
    space = glora.search_space(model)
    for k in range(4):
        subnet = glora.sample_subnet(model, seed * 7 + k)
        expected = 0
        for name, layer in glora_layers(model):
            out, inn = _matrix_shape(layer.base_layer)
            expected += sum(_table_cost(g, subnet[name][g], out, inn) for g in GENES)
        assert glora.count_params(model, subnet) == expected
        assert space.count(subnet) == expected
    assert space.min_params == 0
    largest = {layer.name: {g: max(layer.costs[g], key=layer.costs[g].get) for g in GENES} for layer in space}
    assert glora.count_params(model, largest) == space.max_params


def test_vit_b16_space_matches_method_figures() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_base_patch16_224", pretrained=False)
    glora.wrap(
        model, glora.GLoRAConfig(rank=4, target_modules=r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)")
    )
    space = glora.search_space(model)
    assert len(space) == 48
    assert 1.55e6 < space.max_params < 1.65e6  # docs/method.md: the largest configuration is 1.60 M


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_only_adapter_and_chosen_modules_get_gradients(case: Case) -> None:
    torch.manual_seed(0)
    base = case.make()
    head = "head" if any(n == "head" for n, _ in base.named_modules()) else None
    model = glora.wrap(base, glora.GLoRAConfig(target_modules=case.targets, modules_to_save=[head] if head else None))
    _perturb(model, 0)
    glora.supernet_mode(model, 0)
    out = case.run(model, case.make_input(torch.Generator().manual_seed(0)))
    out.float().pow(2).mean().backward()
    adapter = {n for n, _ in glora.adapter_parameters(model)}
    for name, p in model.named_parameters():
        allowed = name in adapter or (head is not None and name.startswith(head + "."))
        assert p.requires_grad == allowed, name
        if not allowed:
            assert p.grad is None, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in adapter)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_save_load_round_trip(case: Case, tmp_path) -> None:
    _, model = _wrapped(case, 3)
    _perturb(model, 3)
    subnet = glora.sample_subnet(model, 3)
    glora.set_subnet(model, subnet)
    inputs = case.make_input(torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = case.run(model, inputs)
    glora.save_adapter(model, tmp_path, subnet=subnet)
    torch.manual_seed(3)
    fresh = case.make().eval()
    glora.load_adapter(fresh, tmp_path)
    assert glora.get_subnet(fresh) == subnet
    with torch.no_grad():
        torch.testing.assert_close(case.run(fresh, inputs), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("mlp", "transformer", "convnet", "vit")], ids=repr)
def test_low_precision_forward(case: Case, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    base = case.make().to(dtype)
    model = glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(target_modules=case.targets))
    inputs = case.make_input(torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        expected = case.run(base, inputs)
        for k in range(3):
            glora.set_subnet(model, glora.sample_subnet(model, k))
            out = case.run(model, inputs)
            assert out.dtype == dtype
            torch.testing.assert_close(out, expected, rtol=0, atol=0)
    _perturb(model, 1, scale=0.01)
    glora.supernet_mode(model, 1)
    out = case.run(model, inputs)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    subnet = glora.sample_subnet(model, 1)
    glora.set_subnet(model, subnet)
    case.run(model, inputs).float().sum().backward()
    for name, p in glora.adapter_parameters(model):
        layer, tensor = name.rsplit(".", 1)
        choice = subnet[layer][tensor[0]]
        # a lora choice uses both factors; a vector or scalar only the down factor (and D, E themselves)
        used = choice != "none" and (choice.startswith("lora") or tensor in ("Ad", "Bd", "Cd", "D", "E"))
        assert (p.grad is not None) == used, f"{name} under {tensor[0]}={choice}"
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_bf16_autocast_training_step() -> None:
    torch.manual_seed(0)
    model = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], modules_to_save=["head"]))
    glora.supernet_mode(model, 0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    losses = []
    for _ in range(30):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_supernet_mode_is_seeded_and_varies() -> None:
    torch.manual_seed(0)
    model = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"]))
    _perturb(model, 0)
    x = torch.randn(3, 12)
    glora.supernet_mode(model, 123)
    first = [model(x) for _ in range(6)]
    glora.supernet_mode(model, 123)
    second = [model(x) for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert any(not torch.equal(first[0], o) for o in first[1:])
    assert glora.get_subnet(model) is None


def test_summary_mentions_counts() -> None:
    model = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1"], modules_to_save=["head"]))
    text = glora.trainable_parameters_summary(model)
    layer = model.fc1
    assert (
        f"supernet adapter params: {sum(p.numel() for n, p in layer.named_parameters() if 'base_layer' not in n):,}"
        in text
    )
    assert f"other trainable params: {sum(p.numel() for p in model.head.parameters()):,}" in text


@pytest.mark.parametrize("seed", range(3))
def test_a_restricted_space_holds_in_every_draw_search_and_file(seed: int, tmp_path) -> None:
    """``GLoRAConfig.choices``: uniform draws, the supernet's per-layer draws, budget-aware draws and the search
    use only the kinds offered, and an adapter file brings the restriction back."""
    choices = {"A": ["vector", "none"], "B": ["lora", "none"]}
    torch.manual_seed(seed)
    model = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], ranks=[2, 4], choices=choices))
    allowed = {"A": {"vector", "none"}, "B": {"lora_2", "lora_4", "none"}}

    def kinds_ok(subnet) -> bool:
        return all(config[g] in allowed[g] for config in subnet.values() for g in allowed)

    layers = [layer for _, layer in glora_layers(model)]
    plans = draw_plans(layers, torch.Generator().manual_seed(seed))
    assert all(plan[0].name in allowed["A"] and plan[1].name in allowed["B"] for plan in plans)
    assert all(kinds_ok(glora.sample_subnet(model, seed * 10 + i)) for i in range(10))
    space = glora.search_space(model)
    budget = (space.min_params + space.max_params) // 2
    assert all(kinds_ok(s) for s in BudgetSampler(space, (0, budget), seed).draw(0, 10))
    found = glora.search(
        model,
        lambda subnets: [float(glora.count_params(model, s)) for s in subnets],
        budget,
        seed=seed,
        population=8,
        parents=4,
        generations=2,
        progress=False,
    )
    assert kinds_ok(found.best_subnet)
    glora.save_adapter(model, tmp_path, subnet=found.best_subnet)
    fresh = glora.load_adapter(MLP(), tmp_path)
    assert fresh.glora_config.choices == {"A": ["vector", "none"], "B": ["lora", "none"]}
    assert [layer.choices for _, layer in glora_layers(fresh)] == [layer.choices for layer in layers]
