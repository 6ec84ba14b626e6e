"""Folded weights kept between evaluations during a search: the same scores as folding anew, formed again once
their sources change, dropped when the search ends, and never more than the byte limit."""

from __future__ import annotations

import random

import pytest
import torch

import glora
from glora.layers.fold_cache import FoldCache, stamp_of
from glora.tuner.wrapping import glora_layers
from models import MLP, ConvNet, TinyTransformer, gpt2_tiny, perturbed


def _mlp() -> tuple[torch.nn.Module, tuple]:
    model = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], rank=3))
    return model, (torch.randn(30, 12), torch.randint(0, 3, (30,)))


def _conv() -> tuple[torch.nn.Module, tuple]:
    model = glora.wrap(ConvNet(), glora.GLoRAConfig(target_modules=["c1", "c2", "c3", "c4"], rank=2))
    return model, (torch.randn(10, 3, 8, 8), torch.randint(0, 2, (10,)))


class _MeanLogits(torch.nn.Module):
    """A transformer's logits averaged over the tokens: one prediction per sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyTransformer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(1)


def _transformer() -> tuple[torch.nn.Module, tuple]:
    config = glora.GLoRAConfig(target_modules="all-linear", exclude_modules=["body.head"], rank=4)
    return glora.wrap(_MeanLogits(), config), (torch.randn(12, 5, 16), torch.randint(0, 4, (12,)))


class _Pooled(torch.nn.Module):
    """GPT-2 (Hugging Face Conv1D layers) with a head on the mean of its states."""

    def __init__(self) -> None:
        super().__init__()
        self.body = gpt2_tiny()
        self.head = torch.nn.Linear(32, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(input_ids=ids).last_hidden_state.mean(1))


def _gpt2() -> tuple[torch.nn.Module, tuple]:
    model = glora.wrap(_Pooled(), glora.GLoRAConfig(target_modules=r"body\.h\.\d+\.(attn|mlp)\.c_\w+", rank=2))
    return model, (torch.randint(0, 50, (8, 6)), torch.randint(0, 3, (8,)))


MODELS = {"mlp": _mlp, "conv": _conv, "transformer": _transformer, "gpt2": _gpt2}


def _subnets(model: torch.nn.Module, n: int, seed: int) -> list[dict]:
    """``n`` subnets as a search makes them: random ones, then children taking each layer from one of two earlier
    subnets, now and then a fresh random layer, and some repeated whole."""
    rng = random.Random(seed)
    subnets = [glora.sample_subnet(model, seed * 1000 + i) for i in range(4)]
    while len(subnets) < n:
        a, b = rng.sample(subnets, 2)
        fresh = glora.sample_subnet(model, rng.randrange(1 << 30))
        child = {name: dict((a if rng.random() < 0.5 else b)[name]) for name in a}
        for name in child:
            if rng.random() < 0.15:
                child[name] = dict(fresh[name])
        subnets.append(child if rng.random() < 0.9 else dict(rng.choice(subnets)))
    return subnets


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("seed", range(3))
def test_kept_folds_score_every_subnet_as_folding_anew(kind: str, seed: int) -> None:
    torch.manual_seed(seed)
    model, data = MODELS[kind]()
    perturbed(model, seed)
    subnets = _subnets(model, 40, seed)
    fresh = glora.SubnetEvaluator(model, data, metric="neg_loss", fold_cache_bytes=0)
    kept = glora.SubnetEvaluator(model, data, metric="neg_loss")
    with fresh.search_scope():
        expected = [s for i in range(0, len(subnets), 7) for s in fresh(subnets[i : i + 7])]
    with kept.search_scope():
        got = [s for i in range(0, len(subnets), 7) for s in kept(subnets[i : i + 7])]
        assert kept.fold_cache.hits > kept.fold_cache.misses and len(kept.fold_cache) > 0
    assert got == expected  # bit for bit: a kept W' is the one folding would form
    assert fresh.fold_cache.hits == 0 and len(fresh.fold_cache) == 0
    assert len(kept.fold_cache) == 0 and kept.fold_cache.bytes == 0  # dropped at the exit
    hits = kept.fold_cache.hits
    assert kept(subnets[:7]) == expected[:7] and kept.fold_cache.hits == hits  # outside: nothing kept
    if kind in ("mlp", "transformer"):  # stacked plans: several subnets per pass from kept folds
        stacked = glora.SubnetEvaluator(model, data, metric="neg_loss", subnets_per_pass=3)
        with stacked.search_scope():
            again = [s for i in range(0, len(subnets), 7) for s in stacked(subnets[i : i + 7])]
        assert again == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", list(MODELS))
def test_changed_factors_or_base_weights_are_folded_again(kind: str) -> None:
    torch.manual_seed(0)
    model, data = MODELS[kind]()
    perturbed(model, 0)
    subnets = _subnets(model, 12, 1)
    kept = glora.SubnetEvaluator(model, data, metric="neg_loss")

    def check() -> None:
        expected = glora.SubnetEvaluator(model, data, metric="neg_loss", fold_cache_bytes=0)(subnets)
        assert kept(subnets) == expected

    def step(optimizer: type, **options) -> None:
        opt = optimizer([p for _, p in glora.adapter_parameters(model)], lr=0.05, **options)
        x, y = data
        model.train()
        glora.set_subnet(model, subnets[0])
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()

    with kept.search_scope():  # inside a search's span: changes autograd counts are seen
        before = kept(subnets)
        step(torch.optim.SGD)  # an optimizer step on the factors (in place)
        check()
        state = {n: p.detach() * 1.5 for n, p in glora.adapter_parameters(model)}
        model.load_state_dict(state, strict=False)  # a load of other factors
        check()
        _, layer = next(iter(glora_layers(model)))
        with torch.no_grad():
            layer.base_layer.weight.mul_(0.5)  # a base weight changed in place
        check()
        assert kept(subnets) != before
    # between searches nothing is kept: a fused optimizer's step (which autograd's counter does not see) is seen too
    with kept.search_scope():
        kept(subnets)
    step(torch.optim.AdamW, fused=True)
    check()
    with kept.search_scope():
        check()


def test_the_byte_limit_holds_and_the_oldest_leave_first() -> None:
    torch.manual_seed(0)
    model, data = _transformer()
    perturbed(model, 0)
    subnets = _subnets(model, 30, 2)
    expected = glora.SubnetEvaluator(model, data, fold_cache_bytes=0, metric="neg_loss")(subnets)
    one_weight = 64 * 16 * 4  # the largest W' of the model (up: 64 x 16, float32 on a CPU)
    for limit in (1, one_weight, 3 * one_weight, 20 * one_weight):
        evaluator = glora.SubnetEvaluator(model, data, fold_cache_bytes=limit, metric="neg_loss")
        with evaluator.search_scope():
            assert [s for i in range(0, 30, 5) for s in evaluator(subnets[i : i + 5])] == expected
            cache = evaluator.fold_cache
            assert cache.bytes <= limit and cache.max_bytes == limit
            kept = [t for _, t in cache._entries.values() if t is not None]
            assert bool(kept) == (limit > 1)  # at 1 byte only bias-free layers' absent biases (None) are kept
            assert cache.bytes == sum(t.numel() * t.element_size() for _, t in cache._entries.values() if t is not None)

    cache = FoldCache(100)
    made: list[str] = []

    def make(key: str, n: int):
        return lambda: made.append(key) or torch.zeros(n, dtype=torch.uint8)

    for key in "abc":
        cache.get(key, (), make(key, 40))  # c pushes a out
    assert len(cache) == 2 and cache.bytes == 80 and made == ["a", "b", "c"]
    cache.get("b", (), make("b", 40))  # a hit: b is now the most recent
    cache.get("d", (), make("d", 40))  # c leaves, not b
    cache.get("b", (), make("b", 40))
    assert made == ["a", "b", "c", "d"] and (cache.hits, cache.misses) == (2, 4)
    cache.get("b", ((1, 1),), make("b", 40))  # other sources: made again, in place of the old entry
    assert made[-1] == "b" and len(cache) == 2 and cache.bytes == 80
    big = cache.get("e", (), make("e", 101))  # larger than the limit: returned, not kept
    assert big is not None and big.numel() == 101 and len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_a_stamp_follows_storage_and_version() -> None:
    t = torch.zeros(3)
    first = stamp_of([t, None])
    t.add_(1)
    assert stamp_of([t]) != first
    moved = t.clone()
    assert stamp_of([moved]) != stamp_of([t])


@pytest.mark.parametrize("value", [-1, 1.5, True, "1GB"])
def test_bad_cache_sizes_are_named(value) -> None:
    model, data = _mlp()
    with pytest.raises(ValueError, match="fold_cache_bytes must be a non-negative integer"):
        glora.SubnetEvaluator(model, data, fold_cache_bytes=value)


def test_a_search_reuses_most_folds() -> None:
    torch.manual_seed(0)
    model, data = _transformer()
    perturbed(model, 3)
    evaluator = glora.SubnetEvaluator(model, data, metric="neg_loss")
    budget = glora.count_params(model, glora.sample_subnet(model, 0))
    result = glora.search(model, evaluator, budget, seed=0, population=20, generations=5, progress=False)
    plain = glora.SubnetEvaluator(model, data, metric="neg_loss", fold_cache_bytes=0)
    again = glora.search(model, plain, budget, seed=0, population=20, generations=5, progress=False)
    assert result.best_subnet == again.best_subnet and result.best_score == again.best_score
    assert [(g.best, g.mean) for g in result.history] == [(g.best, g.mean) for g in again.history]
    cache = evaluator.fold_cache
    assert cache.hits / (cache.hits + cache.misses) > 0.5 and len(cache) == 0  # kept during the search only


def test_scopes_nest_and_end_on_errors() -> None:
    torch.manual_seed(0)
    model, data = _mlp()
    perturbed(model, 1)
    evaluator = glora.SubnetEvaluator(model, data, metric="neg_loss")
    subnets = _subnets(model, 6, 0)
    with evaluator.search_scope():
        with evaluator.search_scope():
            evaluator(subnets)
        assert len(evaluator.fold_cache) > 0  # the inner end keeps them
    assert len(evaluator.fold_cache) == 0
    with pytest.raises(RuntimeError, match="boom"), evaluator.search_scope():
        evaluator(subnets)
        raise RuntimeError("boom")
    assert len(evaluator.fold_cache) == 0
    evaluator(subnets)  # outside any scope nothing is kept
    assert len(evaluator.fold_cache) == 0

    calls = 0

    def failing(batch: list) -> list[float]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return evaluator(batch)

    failing.search_scope = evaluator.search_scope  # a wrapper forwards the evaluator's scope
    budget = glora.count_params(model, subnets[0])
    with pytest.raises(KeyboardInterrupt):
        glora.search(model, failing, budget, seed=0, population=8, generations=4, progress=False)
    assert calls == 3 and len(evaluator.fold_cache) == 0 and evaluator.fold_cache.hits > 0


def test_the_search_enters_a_fitness_scope_once_and_leaves_other_context_managers_alone() -> None:
    torch.manual_seed(0)
    model, data = _mlp()
    events: list[str] = []

    class Scoped:
        def __call__(self, batch: list) -> list[float]:
            events.append("score")
            return [0.0] * len(batch)

        def search_scope(self):
            events.append("enter")
            return _Recording(events)

        def __enter__(self):  # an unrelated context manager of the user's: not entered by the search
            events.append("user enter")
            return self

        def __exit__(self, *exc) -> None:
            events.append("user exit")

    budget = glora.count_params(model, glora.sample_subnet(model, 0))
    glora.search(model, Scoped(), budget, seed=0, population=6, generations=2, progress=False)
    assert events[0] == "enter" and events[-1] == "exit" and events.count("enter") == events.count("exit") == 1
    assert "user enter" not in events and events.count("score") == 2


class _Recording:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        self.events.append("exit")
