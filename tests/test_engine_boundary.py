"""The native engine's boundary: typed objects only (no JSON strings), stubs that match the compiled module, the
settings' defaults and checks, and the sampler's extremes (torch-free)."""

from __future__ import annotations

import ast
import inspect
import pathlib
import random

import pytest

from glora import _engine
from glora.engine import SearchConfig, SearchSpace, budget_bounds
from glora.errors import GLoRAError, ImpossibleBudgetError, SearchError
from glora.training.sampling import BudgetSampler
from spaces import synthetic_space

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "python" / "glora"
STUB = PACKAGE / "_engine.pyi"


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text())


def _public(names: list[str]) -> set[str]:
    return {n for n in names if not n.startswith("_") or n in ("__init__", "__len__", "__iter__", "__getitem__")}


def _parameters(fn: ast.FunctionDef) -> list[str]:
    args = fn.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return [n for n in names if n != "self"]


def test_stubs_match_the_compiled_module() -> None:
    stub = _stub()
    stub_names = set()
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            stub_names.add(node.name)
            runtime = getattr(_engine, node.name)
            assert inspect.isclass(runtime), node.name
            members = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
            runtime_members = _public(
                [
                    n
                    for n in vars(runtime)
                    if n
                    not in (
                        "__new__",
                        "__doc__",
                        "__module__",
                        "__eq__",
                        "__repr__",
                        "__hash__",
                        "__ne__",
                        "__lt__",
                        "__le__",
                        "__gt__",
                        "__ge__",
                    )
                ]
            )
            assert set(members) - {"__init__"} == runtime_members - {"__init__"}, node.name
            for name, fn in members.items():
                target = runtime if name == "__init__" else getattr(runtime, name)
                signature = getattr(target, "__text_signature__", None)
                if signature is None or isinstance(target, property) or (name.startswith("__") and name != "__init__"):
                    continue
                runtime_params = [
                    p for p in inspect.signature(target).parameters if p not in ("self", "$self", "cls", "$cls")
                ]
                assert _parameters(fn) == runtime_params, f"{node.name}.{name}"
        elif isinstance(node, ast.FunctionDef):
            stub_names.add(node.name)
            runtime_params = list(inspect.signature(getattr(_engine, node.name)).parameters)
            assert _parameters(node) == runtime_params, node.name
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stub_names.add(node.target.id)
    runtime_names = {n for n in dir(_engine) if not n.startswith("_")} | {"__version__"}
    aliases = {"Budget", "Subnet"}  # type aliases of the stub only
    assert stub_names - aliases == runtime_names


def test_no_json_string_crosses_the_boundary() -> None:
    stub = STUB.read_text()
    assert "json" not in stub.lower()
    for node in ast.walk(_stub()):
        if isinstance(node, ast.FunctionDef) and node.returns is not None:
            assert ast.unparse(node.returns) != "str" or node.name in (
                "name",
                "objective",
                "nonfinite",
                "operators",
                "log",
                "glora_version",
            ), node.name
    for path in [
        *(PACKAGE / "engine").glob("*.py"),
        PACKAGE / "training" / "sampling.py",
        PACKAGE / "cli" / "replay.py",
    ]:
        text = path.read_text()
        assert "json.loads" not in text and "space_json" not in text and "to_json" not in text, path.name


def test_errors_share_one_base_and_carry_native_details() -> None:
    space = synthetic_space([(8, 8)])
    with pytest.raises(ImpossibleBudgetError) as info:
        space.check_budget((10**9, 10**9 + 1))
    err = info.value
    assert isinstance(err, GLoRAError) and isinstance(err, SearchError) and isinstance(err, ValueError)
    assert err.kind == "impossible_budget" and type(err.details) is dict
    assert err.details == {"min": 10**9, "max": 10**9 + 1, "smallest": 0, "largest": space.max_params}


def test_config_defaults_and_checks_live_in_the_engine() -> None:
    default = SearchConfig()
    assert default.to_dict() == {
        "population": 50,
        "parents": 10,
        "mutants": 25,
        "crossovers": 25,
        "mutation_prob": 0.2,
        "generations": 20,
        "objective": "fitness",
        "nonfinite": "error",
        "operators": "guided",
        "threads": None,
        "metric": None,
        "racing": None,
    }
    odd = SearchConfig(population=7)
    assert (odd.mutants, odd.crossovers) == (3, 4)
    assert (
        odd.replace(population=10).mutants == 5
        and SearchConfig(population=7, mutants=1).replace(population=10).mutants == 1
    )
    assert SearchConfig(objective="pareto") == SearchConfig().replace(objective="pareto") != default
    for kwargs, message in [
        ({"population": 0}, "population must be a positive integer, got 0"),
        ({"parents": True}, "parents must be a positive integer, got True"),
        ({"mutants": -1}, "mutants must be a non-negative integer, got -1"),
        ({"generations": 2.5}, "generations must be a positive integer, got 2.5"),
        ({"mutation_prob": 1.5}, r"mutation_prob must be a number in \[0, 1\], got 1.5"),
        ({"objective": "speed"}, "objective must be 'fitness' or 'pareto', got 'speed'"),
        ({"operators": "smart"}, "operators must be 'guided' or 'reference', got 'smart'"),
        ({"nonfinite": None, "threads": "4"}, "threads must be a positive integer or None, got '4'"),
        ({"population": 10**12}, "population must be at most 1000000, got 1000000000000"),
        ({"mutants": 2**63}, f"mutants must be at most 1000000, got {2**63}"),
        ({"crossovers": 10**40}, f"crossovers must be at most 1000000, got {10**40}"),
        ({"parents": -(10**40)}, "parents must be a positive integer, got -1"),
        ({"generations": 10**7}, "generations must be at most 1000000, got 10000000"),
        ({"threads": 100_000}, "threads must be at most 1024"),
        ({"metric": 5}, "metric must be a name of at most 200 printable characters, or None, got 5"),
        ({"metric": "a\nb"}, "metric must be a name"),
    ]:
        with pytest.raises(SearchError, match=message) as info:
            SearchConfig(**kwargs)
        assert info.value.kind == "bad_parameter"
    assert budget_bounds(700) == budget_bounds((0, 700)) == budget_bounds([0, 700.0]) == (0, 700)
    with pytest.raises(ValueError, match=r"budget must be a maximum or a \(min, max\) pair, got \(1, 2, 3\)"):
        budget_bounds((1, 2, 3))


def test_space_round_trips_and_costs_come_from_shapes() -> None:
    space = synthetic_space([(64, 32), (16, 80)])
    layer = space["layer0"]
    assert layer.costs["A"] == {"lora_4": 4 * 96, "vector": 64, "scalar": 1, "none": 0}
    assert layer.costs["C"] == {"lora_4": 4 * 33, "vector": 32, "none": 0}
    assert layer.costs["D"] == {"vector": 64, "scalar": 1, "none": 0}
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert space.min_params == 0 and space.max_params == sum(
        max(c.values()) for layer_ in space for c in layer_.costs.values()
    )
    with pytest.raises(SearchError, match="gene C"):
        _engine.LayerSpace("x", 4, 4, {"A": ["none"], "B": ["none"], "C": ["scalar"], "D": ["none"], "E": ["none"]})


def _reference_extreme(space: SearchSpace, budget: tuple[int, int], largest: bool) -> dict:
    """The sandwich extremes as first written in Python: the engine must reproduce them, ties included."""
    lo, hi = budget
    pick = max if largest else min
    layers = list(space)
    config = {layer.name: {g: pick(layer.costs[g], key=layer.costs[g].get) for g in "ABCDE"} for layer in layers}
    total = space.count(config)
    while (total > hi) if largest else (total < lo):
        best = None
        for layer in layers:
            costs = layer.costs
            for g in "ABCDE":
                current = costs[g][config[layer.name][g]]
                steps = [c for c in layer.choices[g] if (costs[g][c] < current if largest else costs[g][c] > current)]
                if not steps:
                    continue
                nxt = (max if largest else min)(steps, key=costs[g].get)
                key = current if largest else -current
                if best is None or key > best[0]:
                    best = (key, layer.name, g, nxt, costs[g][nxt] - current)
        if best is None:
            break
        _, name, g, nxt, delta = best
        config[name][g] = nxt
        total += delta
    return config


def test_budget_sampler_draws_within_budget_and_its_extremes_match_the_reference() -> None:
    rng = random.Random(0)
    for trial in range(6):
        space = synthetic_space(
            [(rng.randrange(8, 200), rng.randrange(8, 200)) for _ in range(rng.randrange(2, 9))],
            rank=rng.choice([2, 4, 8]),
        )
        hi = rng.randrange(space.max_params // 4, space.max_params)
        lo = rng.randrange(0, hi // 2)
        try:
            sampler = BudgetSampler(space, (lo, hi), seed=trial)
        except ImpossibleBudgetError:
            continue
        for subnet in sampler.draw(3, 8):
            assert lo <= space.count(subnet) <= hi
        assert sampler.draw(3, 8) == sampler.draw(3, 8) != sampler.draw(4, 8)
        for largest, extreme in ((True, sampler.largest), (False, sampler.smallest)):
            expected = _reference_extreme(space, (lo, hi), largest)
            if lo <= space.count(expected) <= hi:
                assert extreme() == expected
            else:
                with pytest.raises(SearchError, match="fits the budget"):
                    extreme()
