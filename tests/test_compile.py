"""torch.compile: a wrapped model compiles without graph breaks with a fixed subnet and with the trainer's paths
(which enter as tensors, so the graph is not compiled again as they change), and computes what eager execution
computes. The backend is aot_eager (forward and backward traced, no code generation) to keep the tests fast on a
CPU; one slow test runs the default backend (inductor)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch._dynamo.backends.debugging import aot_eager
from torch._dynamo.utils import counters

import glora
from glora.training import coded_forward
from glora.training import trainer as trainer_module
from glora.training.paths import PathSampler
from glora.tuner.wrapping import glora_layers

MAX_COMPILES = 2
"""The bound SupernetTrainer(compile=True) states: one compilation, one more for the first batch of another shape
(2 each with distill, whose teacher's logits are absent for the first path and present after)."""


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
    counters.clear()


class Counting:
    """A backend that counts the graphs it compiles (aot_eager underneath)."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return aot_eager(gm, example_inputs)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    # the head is trained, not wrapped: on the logits' layer a scalar E's gradient (the sum of the softmax's
    # gradient) is zero up to rounding, which AdamW would scale up to a step, making eager and compiled differ
    config = glora.GLoRAConfig(target_modules=["0", "2"], rank=2, ranks=[1, 2], modules_to_save=["4"])
    return glora.wrap(model, config)


def _bert(seed: int) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=50,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return glora.wrap(BertModel(config), glora.GLoRAConfig(target_modules="all-linear", rank=2, add_bias=True))


class _Mixed(nn.Module):
    """A convolution, a bias-free linear layer and Hugging Face's Conv1D (GPT-2), every kind of GLoRA layer."""

    def __init__(self, conv_bias: bool = True) -> None:
        from transformers.pytorch_utils import Conv1D

        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=conv_bias)
        self.fc = nn.Linear(64, 6, bias=False)
        self.proj = Conv1D(5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.tanh(self.fc(torch.relu(self.conv(x)).flatten(1))))


def _mixed(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return glora.wrap(_Mixed(), glora.GLoRAConfig(target_modules=["conv", "fc", "proj"], rank=2, add_bias=True))


def _bias_free_scalar_e(seed: int) -> nn.Module:
    """A bias-free convolution given a bias by E alone, E offering only a scalar: the bias must still be a vector."""
    torch.manual_seed(seed)
    config = glora.GLoRAConfig(
        target_modules=["conv", "fc", "proj"], rank=2, add_bias=True, choices={"C": ["none"], "E": ["scalar"]}
    )
    return glora.wrap(_Mixed(conv_bias=False), config)


MAKERS = {"mlp": _mlp, "bert": _bert, "mixed": _mixed, "scalar_e": _bias_free_scalar_e}


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """The adapters away from their zero start, so every term counts."""
    torch.manual_seed(seed + 100)
    for _, p in glora.adapter_parameters(model):
        nn.init.normal_(p, std=0.2)
    return model


def _input(kind: str, seed: int, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind in ("mixed", "scalar_e"):
        return torch.randn(batch, 3, 4, 4, generator=g)
    return torch.randn(batch, 8, generator=g) if kind == "mlp" else torch.randint(0, 50, (batch, 7), generator=g)


def _loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    out = out if isinstance(out, torch.Tensor) else out.last_hidden_state
    return (out * torch.linspace(-1, 1, out.shape[-1])).square().mean()


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _run(model: nn.Module, fn, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = fn(model, x)
    loss.backward()
    return loss.detach(), _grads(model)


def _assert_close(eager: tuple, compiled: tuple) -> None:
    (loss_e, grads_e), (loss_c, grads_c) = eager, compiled
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    assert sorted(grads_c) == sorted(grads_e)
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-4, atol=1e-6, msg=name)


KINDS = [
    "mlp",
    "mixed",
    "scalar_e",
    pytest.param("bert", marks=pytest.mark.slow),
]  # a tiny BERT compiles for 20 s on two cores


@pytest.mark.parametrize("kind", KINDS)
def test_a_fixed_subnet_compiles_without_graph_breaks_and_matches_eager(kind) -> None:
    make = MAKERS[kind]
    for seed in range(3 if kind == "mlp" else 2):
        torch._dynamo.reset()
        model = _randomised(make(seed), seed)
        glora.set_subnet(model, glora.sample_subnet(model, seed))
        x = _input(kind, seed)
        eager = _run(model, _loss, x)
        compiled = _run(model, torch.compile(_loss, backend="aot_eager", fullgraph=True), x)
        _assert_close(eager, compiled)
        assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.parametrize("kind", KINDS)
def test_the_trainers_paths_enter_as_tensors_one_graph_for_every_path(kind) -> None:
    """Paths applied by the trainer's PathSampler under compile=True: one graph (forward and backward), no break,
    the outputs and gradients of eager execution on each path, unused factors' gradients dropped as eagerly."""
    model = _randomised(MAKERS[kind](0), 0)
    reference = copy.deepcopy(model)
    sampler = PathSampler(model, glora.TrainConfig(steps=1, compile=True, progress=False))
    eager_sampler = PathSampler(reference, glora.TrainConfig(steps=1, progress=False))
    backend = Counting()
    compiled = torch.compile(_loss, backend=backend, fullgraph=True)
    for step in range(6):
        (plans,) = sampler.paths(step)
        sampler.apply(plans)
        eager_sampler.apply(plans)
        x = _input(kind, step)
        expected = _run(reference, _loss, x)
        model.zero_grad(set_to_none=True)
        loss = compiled(model, x)
        loss.backward()
        sampler.drop_unused_gradients()
        _assert_close(expected, (loss.detach(), _grads(model)))
    assert backend.graphs == 1
    for batch in (3, 4, 5):  # another batch size compiles once more, with the size dynamic
        compiled(model, _input(kind, batch, batch)).backward()
    assert backend.graphs == 2
    assert not counters["graph_break"], dict(counters["graph_break"])


def _training(compile: bool, steps: int, **settings) -> tuple[nn.Module, glora.TrainResult]:
    model = _mlp(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
    config = glora.TrainConfig(steps=steps, batch_size=8, lr=1e-3, progress=False, compile=compile, **settings)
    trainer = glora.SupernetTrainer(model, (x, y), config)
    if compile:
        assert trainer.forward_loss is not trainer._forward_loss
    return model, trainer.train()


@pytest.mark.parametrize(
    "settings",
    [
        {"sampling": "uniform"},
        {"sampling": "uniform", "grad_accum": 2},
        {"sampling": "sandwich", "budget": (60, 200), "distill": True},
        {"sampling": "fixed", "subnet": "drawn"},
    ],
    ids=["uniform", "accumulated", "distill", "fixed"],
)
def test_compiled_training_compiles_a_bounded_number_of_times_and_matches_eager(monkeypatch, settings) -> None:
    if settings.get("subnet") == "drawn":
        settings = {**settings, "subnet": glora.sample_subnet(_mlp(0), 3)}
    backend = Counting()
    monkeypatch.setattr(trainer_module, "COMPILE_BACKEND", backend)
    steps = 50 if settings == {"sampling": "uniform"} else 12
    compiled_model, compiled = _training(True, steps, **settings)
    assert not counters["graph_break"], dict(counters["graph_break"])
    bound = MAX_COMPILES * (2 if settings.get("distill") else 1)
    assert 1 <= backend.graphs <= bound
    eager_model, eager = _training(False, steps, **settings)
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(compiled_model.named_parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize(
    "settings",
    [
        {"sampling": "uniform"},
        {"sampling": "uniform", "grad_accum": 2},
        {"sampling": "sandwich", "budget": (60, 200)},
        {"sampling": "fixed", "subnet": "drawn"},
    ],
    ids=["uniform", "accumulated", "sandwich", "fixed"],
)
def test_compiled_training_on_a_gpu_replays_cuda_graphs_and_matches_eager(settings) -> None:
    """On one GPU, with one backward per step, the layers form their weights from the codes in the graph, replayed
    as a CUDA graph (several backward passes per step take the weights built outside the graph, without CUDA
    graphs: a replay would overwrite the gradients they accumulate): no graph break, no CUDA graph skipped, a
    bounded number of compilations, eager's losses and weights."""
    graphs = settings.get("grad_accum", 1) == 1 and settings["sampling"] != "sandwich"
    if settings.get("subnet") == "drawn":
        settings = {**settings, "subnet": glora.sample_subnet(_mlp(0), 3)}
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
    runs = {}
    for compile in (True, False):
        model = _mlp(0)
        config = glora.TrainConfig(steps=30, batch_size=8, lr=1e-3, progress=False, compile=compile, **settings)
        trainer = glora.SupernetTrainer(model, (x, y), config, device="cuda")
        assert (trainer.weight_builders == []) == (graphs or not compile)
        runs[compile] = (model, trainer.train())
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
    assert 1 <= counters["stats"]["unique_graphs"] <= MAX_COMPILES
    (compiled_model, compiled), (eager_model, eager) = runs[True], runs[False]
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=1e-3, atol=1e-4)
    for (name, p), q in zip(compiled_model.named_parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


def test_compiled_training_takes_frozen_linear_weights_built_outside_the_graph(monkeypatch) -> None:
    """The trainer hands each frozen linear layer its path's W' and b' (graph inputs), so no layer forms a coded
    W' in the graph and no code is written when every layer is given its weights, and the layers forget them after
    each step."""
    from glora.layers import layer as layer_module
    from glora.layers.plan_tensors import PlanTensors

    def coded(*args, **kwargs):
        raise AssertionError("a frozen linear layer formed its coded weights in the graph")

    def write(*args, **kwargs):
        raise AssertionError("codes written that no layer reads")

    monkeypatch.setattr(layer_module, "coded_weights", coded)
    monkeypatch.setattr(PlanTensors, "write", write)
    monkeypatch.setattr(trainer_module, "COMPILE_BACKEND", Counting())
    model, result = _training(True, 5)
    assert len(result.losses) == 5
    assert all(layer._given is None for _, layer in glora_layers(model))


@pytest.mark.parametrize("kind", ["mixed", "scalar_e", "nested"])
def test_compiled_training_of_every_layer_kind_compiles_once_and_matches_eager(monkeypatch, kind) -> None:
    """Convolutions, bias-free layers, Conv1D's transposed weights and a scalar-only E (whose given weights could
    change layout from path to path), and a wrapped model inside another module, over many paths."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 3, 4, 4, generator=g), torch.randint(0, 5, (64,), generator=g)
    results = {}
    for compile in (True, False):
        backend = Counting()
        monkeypatch.setattr(trainer_module, "COMPILE_BACKEND", backend)
        model = _randomised(MAKERS["mixed" if kind == "nested" else kind](0), 0)
        model = nn.Sequential(model) if kind == "nested" else model
        config = glora.TrainConfig(steps=20, batch_size=8, lr=1e-3, progress=False, compile=compile)
        # a regression loss: under cross-entropy the output layer's scalar E gets a gradient that is zero up to
        # rounding, which AdamW scales up to a full step (see _mlp)
        trainer = glora.SupernetTrainer(model, (x, y), config, loss_fn=lambda m, batch: _loss(m, batch[0]))
        results[compile] = (model, trainer.train())
        if compile:
            assert backend.graphs == 1 and not counters["graph_break"], dict(counters["graph_break"])
    (compiled_model, compiled), (eager_model, eager) = results[True], results[False]
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(compiled_model.named_parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_compiled_training_under_bf16_autocast_matches_eager(monkeypatch) -> None:
    backend = Counting()
    monkeypatch.setattr(trainer_module, "COMPILE_BACKEND", backend)
    _, compiled = _training(True, 8, precision="bf16")
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert 1 <= backend.graphs <= MAX_COMPILES
    _, eager = _training(False, 8, precision="bf16")
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=2e-2, atol=1e-2)


def test_compile_is_a_checked_bool_and_a_run_flag() -> None:
    import argparse

    from glora.cli.run_command import add_run_flags, given_settings
    from glora.errors import ConfigError
    from glora.tasks.settings import RunSettings

    with pytest.raises(ValueError, match="compile must be True or False"):
        glora.TrainConfig(steps=1, compile=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="compile must be true or false"):
        RunSettings(compile="yes")  # type: ignore[arg-type]
    parser = argparse.ArgumentParser()
    add_run_flags(parser)
    assert given_settings(parser.parse_args(["--compile"]))["compile"] is True
    assert "compile" not in given_settings(parser.parse_args([]))


@pytest.mark.slow
def test_inductor_compiles_a_training_run() -> None:
    """The default backend (inductor: generated C++ on the CPU) trains as eager execution does."""
    pytest.importorskip("torch._inductor")
    compiled_model, compiled = _training(True, 6)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] <= MAX_COMPILES
    eager_model, eager = _training(False, 6)
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_glora_run_compile_completes(monkeypatch, tmp_path) -> None:
    from glora.cli.main import main
    from texts import labelled_rows, save_tiny_bert, write_csv

    backend, search_backend = Counting(), Counting()
    monkeypatch.setattr(trainer_module, "COMPILE_BACKEND", backend)
    monkeypatch.setattr(coded_forward, "COMPILE_BACKEND", search_backend)
    (tmp_path / "bert").mkdir()
    model = save_tiny_bert(tmp_path / "bert")
    train = write_csv(tmp_path / "train.csv", labelled_rows(0, 60))
    out = tmp_path / "run"
    args = [
        "run", "--task", "text-classification", "--model", str(model), "--train", str(train), "--out", str(out),
        "--text-column", "sentence", "--label-column", "sentiment", "--steps", "6", "--batch-size", "8",
        "--population", "4", "--generations", "1", "--device", "cpu", "--compile",
    ]  # fmt: skip
    assert main(args) == 0
    assert (out / "result.json").exists() and (out / "merged").is_dir()
    assert 1 <= backend.graphs <= MAX_COMPILES
    assert 1 <= search_backend.graphs <= 2  # the search's evaluator: a graph for the batch and the last batch
    assert not counters["graph_break"], dict(counters["graph_break"])


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from test_distributed import _config, _model, _task

    trainer_module.COMPILE_BACKEND = "aot_eager"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = _model()
        config = _config(16)
        config.compile = True
        glora.SupernetTrainer(model, _task(), config).train()
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({"params": params, "breaks": dict(counters["graph_break"])}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_compiled_match_one_eager_process(tmp_path) -> None:
    """DistributedDataParallel (2 CPU processes, gloo) over the compiled forward: the eager single process's
    adapters on the combined batches, no graph break."""
    import torch.multiprocessing as mp

    from test_distributed import _config, _model, _task

    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert not ranks[0]["breaks"] and not ranks[1]["breaks"], ranks[0]["breaks"]
    single = _model()
    glora.SupernetTrainer(single, _task(), _config(32)).train()
    for name, p in single.named_parameters():
        if p.requires_grad:
            assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name])
            torch.testing.assert_close(ranks[0]["params"][name], p.detach(), rtol=1e-4, atol=1e-6, msg=name)


def _classifier_training(compile: bool) -> list[float]:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=50,
        num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    wrapping = glora.GLoRAConfig(target_modules="all-linear", rank=2, modules_to_save=["classifier"])
    model = glora.wrap(BertForSequenceClassification(config), wrapping)
    g = torch.Generator().manual_seed(0)
    data = {"input_ids": torch.randint(0, 50, (32, 12), generator=g), "labels": torch.randint(0, 2, (32,), generator=g)}
    settings = glora.TrainConfig(
        steps=6, batch_size=8, lr=1e-3, progress=False, gradient_checkpointing=True, compile=compile
    )
    return glora.SupernetTrainer(model, data, settings).train().losses


@pytest.mark.slow
def test_gradient_checkpointing_compiles_without_graph_breaks(monkeypatch) -> None:
    """transformers' checkpointing, with its input-gradient hook and cache switch taken away under compile."""
    backend = Counting()
    monkeypatch.setattr(trainer_module, "COMPILE_BACKEND", backend)
    compiled = _classifier_training(True)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert 1 <= backend.graphs <= MAX_COMPILES
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(_classifier_training(False)), rtol=1e-5, atol=1e-6)


def _spread(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A score every output and every term moves (the logits' weighted spread, shifted by the labels)."""
    weights = torch.linspace(-1, 1, logits.shape[-1])
    return -((logits * weights).square().mean(-1) + labels.float() * 0.01).mean()


@pytest.mark.parametrize("kind", ["mlp", "mixed", "scalar_e"])
def test_the_compiled_evaluator_scores_every_subnet_as_eager_one_graph_for_all(monkeypatch, kind) -> None:
    """SubnetEvaluator(compile=True): the subnets enter the compiled forward as codes, so one graph (two with a
    last, smaller batch) serves every subnet, and the scores are the eager evaluator's; the layers keep their
    plans."""
    backend = Counting()
    monkeypatch.setattr(coded_forward, "COMPILE_BACKEND", backend)
    model = _randomised(MAKERS[kind](0), 0)
    g = torch.Generator().manual_seed(2)
    x = _input(kind, 3, 50)
    y = torch.randint(0, 4, (50,), generator=g)
    subnets = [glora.sample_subnet(model, seed) for seed in range(25)]
    glora.set_subnet(model, subnets[0])
    eager = glora.SubnetEvaluator(model, (x, y), metric=_spread, batch_size=16)(subnets)
    compiled = glora.SubnetEvaluator(model, (x, y), metric=_spread, batch_size=16, compile=True)
    scores = compiled(subnets[:10]) + compiled(subnets[10:])
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(eager), rtol=1e-5, atol=1e-6)
    assert backend.graphs == 2 and not counters["graph_break"], dict(counters["graph_break"])
    assert glora.get_subnet(model) == subnets[0]
    assert all(layer._coded is None for _, layer in glora_layers(model))


def test_the_compiled_evaluator_drives_a_search_and_refuses_bad_options(monkeypatch) -> None:
    monkeypatch.setattr(coded_forward, "COMPILE_BACKEND", Counting())
    model = _randomised(_mlp(0), 0)
    g = torch.Generator().manual_seed(3)
    data = (torch.randn(40, 8, generator=g), torch.randint(0, 4, (40,), generator=g))
    results = [
        glora.search(
            model,
            glora.SubnetEvaluator(model, data, metric="neg_loss", compile=compile),
            budget=200,
            seed=1,
            generations=3,
            progress=False,
        )
        for compile in (False, True)
    ]
    assert results[1].best_score == pytest.approx(results[0].best_score, rel=1e-5)
    with pytest.raises(ValueError, match="compile must be True or False, got 'yes'"):
        glora.SubnetEvaluator(model, data, compile="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compile=True evaluates one subnet per pass"):
        glora.SubnetEvaluator(model, data, compile=True, subnets_per_pass=2)


def test_the_compiled_evaluator_under_bf16_in_supernet_mode_and_after_a_failing_metric(monkeypatch) -> None:
    """bf16 autocast scores as the folded bf16 evaluation does (within bf16 rounding); a model in supernet mode
    samples again afterwards; a metric that raises leaves the layers' plans as they were."""
    monkeypatch.setattr(coded_forward, "COMPILE_BACKEND", Counting())
    model = _randomised(_mlp(0), 0)
    g = torch.Generator().manual_seed(4)
    data = (torch.randn(64, 8, generator=g), torch.randint(0, 4, (64,), generator=g))
    subnets = [glora.sample_subnet(model, seed) for seed in range(12)]
    folded = glora.SubnetEvaluator(model, data, metric=_spread, precision="bf16")(subnets)
    glora.supernet_mode(model, 0)
    compiled = glora.SubnetEvaluator(model, data, metric=_spread, precision="bf16", compile=True)(subnets)
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(folded), rtol=2e-2, atol=1e-3)
    layers = [layer for _, layer in glora_layers(model)]
    assert all(layer.fixed_plan is None and layer.sampler is not None and layer._coded is None for layer in layers)
    glora.set_subnet(model, subnets[3])

    def failing(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        glora.SubnetEvaluator(model, data, metric=failing, compile=True)(subnets[:4])
    assert glora.get_subnet(model) == subnets[3] and all(layer._coded is None for layer in layers)


@pytest.mark.slow
def test_inductor_compiles_the_coded_evaluator() -> None:
    """The compiled evaluator with the default backend (inductor: generated C++ on the CPU) scores as folding does."""
    pytest.importorskip("torch._inductor")
    model = _randomised(_mlp(0), 0)
    g = torch.Generator().manual_seed(6)
    data = (torch.randn(48, 8, generator=g), torch.randint(0, 4, (48,), generator=g))
    subnets = [glora.sample_subnet(model, seed) for seed in range(8)]
    folded = glora.SubnetEvaluator(model, data, metric="neg_loss")(subnets)
    compiled = glora.SubnetEvaluator(model, data, metric="neg_loss", compile=True)(subnets)
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(folded), rtol=1e-5, atol=1e-6)
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_a_table_of_subnets_holds_the_codes_each_write_sets() -> None:
    from glora.layers.plan_tensors import PlanTensors

    model = _mlp(0)
    layers = [layer for _, layer in glora_layers(model)]
    tensors = PlanTensors(len(layers), max(layer.max_rank for layer in layers), torch.device("cpu"))
    subnets = [[layer.validate(config) for layer, config in zip(layers, glora.sample_subnet(model, s).values())]
               for s in range(6)]  # fmt: skip
    table = tensors.table(subnets)
    assert table.shape == (6, len(layers), 5, tensors.max_rank + 2)
    for j, plans in enumerate(subnets):
        tensors.write(plans)
        assert torch.equal(table[j], tensors.codes)
    assert len({tuple(t.flatten().tolist()) for t in table}) > 1  # the subnets differ
