"""Supernet training and subnet evaluation: learning, exact resume, evaluator against merged models, errors."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

import glora
from glora.training.checkpoint import check_same_run, read_checkpoint, space_record, write_checkpoint
from glora.training.losses import classification_loss
from glora.tuner.subnets import UniformSampler
from glora.tuner.wrapping import glora_layers
from models import MLP, ConvNet, TinyTransformer, perturbed


def _task(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian clusters in 12 dimensions: a small classification task an MLP learns quickly."""
    centers = torch.randn(3, 12, generator=torch.Generator().manual_seed(1234)) * 3.0
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    return centers[labels] + torch.randn(n, 12, generator=g), labels


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], modules_to_save=["head"]))


@pytest.mark.parametrize("sampling", ["uniform", "budget", "sandwich"])
def test_training_reduces_the_loss(sampling: str) -> None:
    model = _model()
    config = glora.TrainConfig(
        steps=60,
        batch_size=32,
        lr=1e-2,
        warmup_steps=5,
        sampling=sampling,
        budget=600,
        progress=False,
        distill=sampling == "sandwich",
    )
    evaluator = glora.SubnetEvaluator(model, _task(128, 9), metric="neg_loss")
    subnets = [glora.sample_subnet(model, s) for s in range(4)]
    subnets = [s for s in subnets if glora.count_params(model, s) <= 600] or [glora.sample_subnet(model, 0)]
    before = sum(evaluator(subnets)) / len(subnets)
    result = glora.train_supernet(model, _task(), config)
    after = sum(evaluator(subnets)) / len(subnets)
    assert len(result.losses) == 60
    assert -after < 0.5 * -before, f"held-out loss {-before:.3f} -> {-after:.3f}"


@pytest.mark.parametrize("seed", range(4))
def test_fixed_training_moves_only_the_subnets_tensors(seed: int) -> None:
    model = _model(seed)
    subnet = glora.sample_subnet(model, seed)
    layers = dict(glora_layers(model))
    subnet["fc1"]["A"], subnet["fc1"]["B"], subnet["fc2"]["C"] = "none", "vector", "none"
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    evaluator = glora.SubnetEvaluator(model, _task(128, 9), metric="neg_loss")
    loss_before = -evaluator([subnet])[0]
    config = glora.TrainConfig(
        steps=40, batch_size=32, lr=1e-2, sampling="fixed", subnet=subnet, seed=seed, progress=False
    )
    glora.train_supernet(model, _task(), config)
    assert -evaluator([subnet])[0] < loss_before
    moved = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert {"fc1.Ad", "fc1.Au", "fc2.Cd", "fc2.Cu"}.isdisjoint(moved)
    assert "fc1.Bd" in moved and "head.weight" in moved
    assert glora.get_subnet(model) == subnet and layers["fc1"].fixed_config == subnet["fc1"]


def _run(sampling: str, steps_first: int, total: int, tmp_path, precision: str = "fp32", accum: int = 1):
    model = _model(1)
    config = glora.TrainConfig(
        steps=total,
        batch_size=16,
        lr=5e-3,
        warmup_steps=2,
        grad_accum=accum,
        max_grad_norm=1.0,
        sampling=sampling,
        budget=(0, 700),
        precision=precision,
        progress=False,
        seed=4,
    )
    data = _task(96, 1)
    trainer = glora.SupernetTrainer(model, data, config)
    first = trainer.train(steps_first).losses
    if steps_first == total:
        return first, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.save_checkpoint(tmp_path / "ckpt.pt")
    resumed_model = _model(1)  # the same frozen base; scrambled trainable tensors must come back from the checkpoint
    with torch.no_grad():
        for p in resumed_model.parameters():
            if p.requires_grad:
                p.normal_()
    resumed = glora.SupernetTrainer(resumed_model, data, config)
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    second = resumed.train().losses
    return first + second, {n: p.detach().clone() for n, p in resumed_model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("sampling", ["uniform", "budget", "sandwich"])
@pytest.mark.parametrize("precision, accum", [("fp32", 1), ("bf16", 2)])
def test_resume_from_a_checkpoint_is_bit_for_bit(sampling: str, precision: str, accum: int, tmp_path) -> None:
    straight_losses, straight = _run(sampling, 10, 10, tmp_path, precision, accum)
    split_losses, split = _run(sampling, 4, 10, tmp_path, precision, accum)
    assert straight_losses == split_losses
    assert straight.keys() == split.keys()
    assert all(torch.equal(straight[k], split[k]) for k in straight)


def test_resume_is_bit_for_bit_with_losses_read_a_step_late(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("glora.training.trainer.read_lag", lambda device, precision: 1)  # a GPU's way, on the CPU
    straight_losses, straight = _run("uniform", 10, 10, tmp_path, "fp32", 1)
    split_losses, split = _run("uniform", 4, 10, tmp_path, "fp32", 1)
    assert len(straight_losses) == 10 and straight_losses == split_losses
    assert all(torch.equal(straight[k], split[k]) for k in straight)


def test_checkpoint_mismatch_and_bad_settings(tmp_path) -> None:
    trainer = glora.SupernetTrainer(_model(), _task(64), glora.TrainConfig(steps=2, batch_size=16, progress=False))
    trainer.save_checkpoint(tmp_path / "a.pt")
    other = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1"], modules_to_save=["head"]))
    with pytest.raises(ValueError, match="fc2"):
        glora.SupernetTrainer(
            other, _task(64), glora.TrainConfig(steps=2, batch_size=16, progress=False)
        ).load_checkpoint(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="fewer than one batch"):
        glora.SupernetTrainer(_model(), _task(8), glora.TrainConfig(steps=2, batch_size=16))
    with pytest.raises(ValueError, match="needs a budget"):
        glora.TrainConfig(steps=2, sampling="budget")
    with pytest.raises(ValueError, match="sampling must be one of"):
        glora.TrainConfig(steps=2, sampling="random")
    with pytest.raises(ValueError, match="distill=True needs sampling='sandwich'"):
        glora.TrainConfig(steps=2, distill=True)
    with pytest.raises(ValueError, match="sampling='fixed' trains the subnet given"):
        glora.TrainConfig(steps=2, sampling="fixed")
    with pytest.raises(ValueError, match="sampling='fixed' trains the subnet given"):
        glora.TrainConfig(steps=2, subnet={})
    with pytest.raises(KeyError, match="missing layer.*fc2"):
        glora.SupernetTrainer(
            _model(),
            _task(64),
            glora.TrainConfig(steps=2, sampling="fixed", subnet={"fc1": glora.sample_subnet(_model(), 0)["fc1"]}),
        )
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        glora.TrainConfig(steps=0)
    with pytest.raises(glora.ImpossibleBudgetError):
        glora.SupernetTrainer(_model(), _task(64), glora.TrainConfig(steps=2, sampling="budget", budget=(10**8, 10**9)))
    with pytest.raises(ValueError, match="call glora.wrap"):
        glora.SupernetTrainer(MLP(), _task(64), glora.TrainConfig(steps=2))
    with pytest.raises(ValueError, match="differ in length"):
        glora.SupernetTrainer(_model(), (torch.randn(10, 12), torch.zeros(9)), glora.TrainConfig(steps=2, batch_size=4))


def test_periodic_checkpoints_let_a_killed_run_continue_exactly(tmp_path) -> None:
    config = glora.TrainConfig(
        steps=10, batch_size=16, lr=5e-3, warmup_steps=2, sampling="budget", budget=(0, 700), progress=False, seed=3
    )
    data = _task(96, 1)
    straight_model = _model(1)
    straight = glora.SupernetTrainer(straight_model, data, config).train().losses
    calls = []

    def killed_in_step_8(model, batch):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return classification_loss(model, batch)

    killed = glora.SupernetTrainer(_model(1), data, config, killed_in_step_8)
    with pytest.raises(KeyboardInterrupt):
        killed.train(checkpoint=tmp_path / "c.pt", checkpoint_every=3)
    assert read_checkpoint(tmp_path / "c.pt")["step"] == 6  # the last multiple of 3 before the kill
    resumed_model = _model(1)
    resumed = glora.SupernetTrainer(resumed_model, data, config)
    resumed.load_checkpoint(tmp_path / "c.pt")
    assert resumed.train().losses == straight[6:]
    trained = {n: p for n, p in straight_model.named_parameters() if p.requires_grad}
    resumed_trained = {n: p for n, p in resumed_model.named_parameters() if p.requires_grad}
    assert trained and resumed_trained.keys() == trained.keys()
    assert all(torch.equal(p, trained[n]) for n, p in resumed_trained.items())
    ended = glora.SupernetTrainer(_model(1), data, config)
    ended.train(8, checkpoint=tmp_path / "e.pt", checkpoint_every=3)
    assert read_checkpoint(tmp_path / "e.pt")["step"] == 8  # and at the end
    with pytest.raises(ValueError, match="checkpoint and checkpoint_every go together"):
        killed.train(checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer, got 0"):
        killed.train(checkpoint=tmp_path / "c.pt", checkpoint_every=0)


def test_gradient_checkpointing_may_change_on_resume_but_under_compile(tmp_path) -> None:
    """Under compile it decides whether a GPU replays CUDA graphs (numerically another step), so it is part of the run."""
    for compile in (False, True):
        config = glora.TrainConfig(steps=4, batch_size=16, progress=False, compile=compile)
        trainer = glora.SupernetTrainer(_model(), _task(64), config)
        trainer.save_checkpoint(tmp_path / "g.pt")
        state, space = read_checkpoint(tmp_path / "g.pt"), space_record(trainer.sampler.layers)
        other = dataclasses.replace(config, gradient_checkpointing=True)  # checked as load_checkpoint checks
        if compile:
            with pytest.raises(ValueError, match="gradient_checkpointing False there, True here"):
                check_same_run(tmp_path / "g.pt", state, other, space, 1)
        else:
            check_same_run(tmp_path / "g.pt", state, other, space, 1)


@pytest.mark.parametrize("sampling", ["uniform", "budget", "sandwich", "fixed"])
def test_paths_per_step_is_what_a_step_draws(sampling: str) -> None:
    """The trainer replays CUDA graphs only with one path per step: the count must be the sampler's own."""
    model = _model()
    subnet = glora.sample_subnet(model, 0) if sampling == "fixed" else None
    budget = (0, 700) if sampling in ("budget", "sandwich") else None
    config = glora.TrainConfig(steps=3, batch_size=16, sampling=sampling, subnet=subnet, budget=budget)
    sampler = glora.SupernetTrainer(model, _task(64), config).sampler
    assert sampler.paths_per_step == (3 if sampling == "sandwich" else 1)
    assert all(len(sampler.paths(step)) == sampler.paths_per_step for step in range(3))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path) -> None:
    config = glora.TrainConfig(steps=4, batch_size=16, lr=1e-3, progress=False)
    trainer = glora.SupernetTrainer(_model(), _task(64), config)
    trainer.train(2)
    trainer.save_checkpoint(tmp_path / "a.pt")
    glora.SupernetTrainer(_model(), _task(64), dataclasses.replace(config, progress=True)).load_checkpoint(
        tmp_path / "a.pt"
    )
    for change, message in [
        ({"lr": 2e-3}, "lr 0.001 there, 0.002 here"),
        ({"steps": 8}, "steps 4 there, 8 here"),
        (
            {"sampling": "budget", "budget": 600},
            r"sampling 'uniform' there, 'budget' here; budget None there, \(0, 600\) here",
        ),
        ({"seed": 1, "batch_size": 8}, "batch_size 16 there, 8 here; .*seed 0 there, 1 here"),
    ]:
        other = glora.SupernetTrainer(_model(), _task(64), dataclasses.replace(config, **change))
        with pytest.raises(
            ValueError, match=f"written with other training settings \\({message}\\); resume with the TrainConfig"
        ):
            other.load_checkpoint(tmp_path / "a.pt")
    torch.manual_seed(0)
    narrower = glora.wrap(
        MLP(),
        glora.GLoRAConfig(target_modules=["fc1", "fc2"], modules_to_save=["head"], choices={"B": ["lora", "none"]}),
    )
    with pytest.raises(
        ValueError,
        match="another search space: layer 'fc1' gene B offers lora_4, vector, scalar, none there, lora_4, none here",
    ):
        glora.SupernetTrainer(narrower, _task(64), config).load_checkpoint(tmp_path / "a.pt")
    budgeted = dataclasses.replace(config, sampling="budget", budget=600)
    written = glora.SupernetTrainer(_model(), _task(64), budgeted)
    written.save_checkpoint(tmp_path / "b.pt")
    for same in ((0, 600), [0, 600]):
        glora.SupernetTrainer(_model(), _task(64), dataclasses.replace(budgeted, budget=same)).load_checkpoint(
            tmp_path / "b.pt"
        )
    state = read_checkpoint(tmp_path / "a.pt")
    write_checkpoint(tmp_path / "two.pt", {**state, "world": 2})
    with pytest.raises(ValueError, match="written by 2 processes, this run has 1"):
        glora.SupernetTrainer(_model(), _task(64), config).load_checkpoint(tmp_path / "two.pt")


@pytest.mark.parametrize("per_pass", [1, 3])
@pytest.mark.parametrize("metric", ["accuracy", "neg_loss"])
def test_evaluator_matches_plain_evaluation_of_merged_models(per_pass: int, metric: str) -> None:
    torch.manual_seed(0)
    model = perturbed(
        glora.wrap(TinyTransformer(), glora.GLoRAConfig(target_modules="all-linear", exclude_modules=["head"])), 0
    )
    x = torch.randn(40, 5, 16)
    y = torch.randint(0, 4, (40, 5))

    def plain(logits, labels):
        logits, labels = logits.reshape(-1, 4), labels.reshape(-1)
        return glora.training.evaluator.METRICS[metric](logits, labels)

    evaluator = glora.SubnetEvaluator(model, (x, y), metric=plain, batch_size=16, subnets_per_pass=per_pass)
    subnets = [glora.sample_subnet(model, s) for s in range(7)]
    scores = evaluator(subnets)
    for subnet, score in zip(subnets, scores):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", glora.BiasAddedWarning)
            merged = glora.merge(model, subnet).eval()
        with torch.no_grad():
            expected = float(plain(merged(x), y))
        assert score == pytest.approx(expected, abs=1e-5)
    assert glora.get_subnet(model) is None  # folding left no fixed subnet behind


def test_evaluator_on_a_conv_net_and_its_errors() -> None:
    torch.manual_seed(0)
    model = perturbed(glora.wrap(ConvNet(), glora.GLoRAConfig(target_modules=["c1", "c2", "c4"])), 1)
    x, y = torch.randn(12, 3, 8, 8), torch.randint(0, 2, (12,))
    evaluator = glora.SubnetEvaluator(model, (x, y), metric="neg_loss")
    subnet = glora.sample_subnet(model, 3)
    merged = glora.merge(model, subnet)
    with torch.no_grad():
        expected = -torch.nn.functional.cross_entropy(merged(x), y).item()
    assert evaluator([subnet])[0] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="all linear"):
        glora.SubnetEvaluator(model, (x, y), subnets_per_pass=2)
    with pytest.raises(ValueError, match="empty"):
        glora.SubnetEvaluator(model, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="the metric returned nan for subnet 0"):
        glora.SubnetEvaluator(model, (x, y), metric=lambda logits, labels: float("nan"))([subnet])
    with pytest.raises(KeyError, match="subnet 0 of the batch: .*missing layer"):
        evaluator([{"c1": subnet["c1"]}])
    with pytest.raises(ValueError, match="metric must be one of"):
        glora.SubnetEvaluator(model, (x, y), metric="f1")


def test_evaluator_drives_a_search() -> None:
    model = _model()
    data = _task(128)
    glora.train_supernet(model, data, glora.TrainConfig(steps=40, batch_size=32, lr=1e-2, progress=False))
    evaluator = glora.SubnetEvaluator(model, _task(64, 5), subnets_per_pass=4)
    result = glora.search(model, evaluator, 600, generations=3, progress=False)
    assert evaluator.subnets_evaluated == result.evaluations
    assert 0.0 <= result.best_score <= 1.0 and result.best_params <= 600


def _assert_checkpointing_changes_nothing(make_model, data, **settings) -> None:
    """Training with gradient checkpointing gives the same losses and tensors as without, bit for bit: the
    recomputed forward must run the same configuration as the first one (uniform draws are held)."""

    def train(checkpointing: bool):
        torch.manual_seed(0)
        model = make_model(checkpointing)
        cfg = glora.TrainConfig(lr=1e-2, gradient_checkpointing=checkpointing, progress=False, **settings)
        losses = glora.train_supernet(model, data, cfg).losses
        return losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    plain_losses, plain = train(False)
    checkpointed_losses, checkpointed = train(True)
    assert plain_losses == checkpointed_losses
    assert all(torch.equal(plain[k], checkpointed[k]) for k in plain)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: the weights built for the whole forward are reused
@pytest.mark.parametrize("sampling", ["uniform", "sandwich"])
def test_gradient_checkpointing_of_a_bert_changes_nothing(sampling: str, precision: str) -> None:
    transformers = pytest.importorskip("transformers")
    from glora.tasks.text_classification import BERT_LINEARS, MeanPoolClassifier

    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    g = torch.Generator().manual_seed(0)
    data = {
        "input_ids": torch.randint(0, 50, (32, 10), generator=g),
        "attention_mask": torch.ones(32, 10, dtype=torch.long),
        "labels": torch.randint(0, 2, (32,), generator=g),
    }

    def make(checkpointing: bool) -> torch.nn.Module:
        model = MeanPoolClassifier(transformers.BertModel(config, add_pooling_layer=False), 2)
        glora.wrap(model, glora.GLoRAConfig(target_modules=BERT_LINEARS, modules_to_save=["head"]))
        if checkpointing:  # the classifier forwards the encoder's switch
            model.activation_checkpointing_enable = model.encoder.activation_checkpointing_enable
        return model

    _assert_checkpointing_changes_nothing(
        make,
        data,
        steps=6,
        batch_size=8,
        sampling=sampling,
        budget=3000,
        distill=sampling == "sandwich",
        precision=precision,
    )


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradient_checkpointing_of_a_timm_vit_changes_nothing(precision: str) -> None:
    pytest.importorskip("timm")
    from models import vit_tiny

    g = torch.Generator().manual_seed(0)
    data = (torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 3, (16,), generator=g))

    def make(checkpointing: bool) -> torch.nn.Module:
        return glora.wrap(
            vit_tiny(), glora.GLoRAConfig(target_modules=["qkv", "proj", "fc1", "fc2"], modules_to_save=["head"])
        )

    _assert_checkpointing_changes_nothing(make, data, steps=4, batch_size=8, precision=precision)


@pytest.mark.parametrize("seed", range(3))
def test_plans_drawn_together_equal_plans_drawn_one_by_one(seed: int) -> None:
    """The trainer and ``supernet_mode`` draw every layer's configuration from one call to the generator: the same
    configurations, and the generator left in the same state, as a layer drawing its own when its forward runs."""
    from glora.tuner.wrapping import set_batched_weights
    from models import vit_tiny

    model = glora.wrap(vit_tiny(), glora.GLoRAConfig(ranks=[2, 4], target_modules=["qkv", "attn.proj", "fc1", "fc2"]))
    layers = [layer for _, layer in glora_layers(model)]
    together, one_by_one = (
        UniformSampler(torch.Generator().manual_seed(seed)),
        UniformSampler(torch.Generator().manual_seed(seed)),
    )
    for _ in range(3):
        assert together.draw_all(layers) == [one_by_one(layer) for layer in layers]
    assert torch.equal(together.generator.get_state(), one_by_one.generator.get_state())
    # supernet_mode over the batched build: the forward runs the configurations drawn for the layers, in order
    perturbed(model, seed)  # adapters that change the output, so another configuration would show
    x = torch.randn(2, 3, 32, 32)
    drawn = glora.sample_subnet(model, seed)  # what the first forward under supernet_mode(model, seed) draws
    glora.supernet_mode(model, seed)
    set_batched_weights(model, "always")
    sampled = model(x)
    fixed = glora.set_subnet(model, drawn)(x)
    torch.testing.assert_close(sampled, fixed, rtol=0, atol=0)


def test_retired_settings_are_refused_by_name(tmp_path) -> None:
    """``lr_ratios`` and ``budget_spread`` are gone (no benchmark showed them help): a config naming them fails with
    the name, and a checkpoint recording a setting this version lacks is refused naming it."""
    for retired in ({"lr_ratios": {"A": 2.0}}, {"budget_spread": True}):
        with pytest.raises(TypeError, match=next(iter(retired))):
            glora.TrainConfig(steps=2, **retired)
    config = glora.TrainConfig(steps=4, batch_size=16, progress=False)
    trainer = glora.SupernetTrainer(_model(), _task(64), config)
    trainer.train(2)
    trainer.save_checkpoint(tmp_path / "a.safetensors")
    state = read_checkpoint(tmp_path / "a.safetensors")
    write_checkpoint(tmp_path / "used.safetensors", {**state, "config": {**state["config"], "lr_ratios": None}})
    with pytest.raises(ValueError, match=r"records settings glora .* does not have: \['lr_ratios'\]"):
        glora.SupernetTrainer(_model(), _task(64), config).load_checkpoint(tmp_path / "used.safetensors")


@pytest.mark.parametrize(("sampling", "label"), [("uniform", "supernet"), ("fixed", "subnet")])
def test_the_progress_bar_names_what_is_trained(capsys, sampling, label) -> None:
    model = _model()
    subnet = glora.sample_subnet(model, 0) if sampling == "fixed" else None
    config = glora.TrainConfig(steps=2, batch_size=32, sampling=sampling, subnet=subnet, progress=True)
    glora.SupernetTrainer(model, _task(64), config).train()
    err = capsys.readouterr().err
    assert f"{label}: 100%" in err and ("supernet:" in err) == (label == "supernet")


@pytest.mark.parametrize("lag", [0, 1])
@pytest.mark.parametrize("accum", [1, 3])
def test_a_non_finite_loss_stops_training_before_the_optimizer_step(
    accum: int, lag: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lag 1 is a GPU's way (each loss read a step late, the fused AdamW told to skip): here on the CPU
    monkeypatch.setattr("glora.training.trainer.read_lag", lambda device, precision: lag)
    model = _model()
    calls = []

    def loss_fn(m: torch.nn.Module, batch) -> torch.Tensor:
        calls.append(1)
        loss = classification_loss(m, batch)
        return loss * float("nan") if len(calls) == 2 * accum else loss  # the second step's last micro-batch

    config = glora.TrainConfig(steps=5, batch_size=16, grad_accum=accum, progress=False)
    trainer = glora.SupernetTrainer(model, _task(96), config, loss_fn=loss_fn)
    trainer.train(steps=1)
    after_one = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    adam_steps = {id(p): int(state["step"]) for p, state in trainer.optimizer.state.items()}
    with pytest.raises(FloatingPointError, match=r"the loss became nan at step 1; lower the learning rate"):
        trainer.train()
    assert trainer.step == 1
    assert all(torch.equal(p, after_one[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert trainer.scheduler.last_epoch == 1
    for p, state in trainer.optimizer.state.items():  # a state first made by a skipped step is a fresh one
        assert int(state["step"]) == adam_steps.get(id(p), 0)
        assert id(p) in adam_steps or not state["exp_avg"].any()
    again = trainer.train()  # training on after the error: no gradient of the failed step is left behind
    assert trainer.step == 5 and len(again.losses) == 4 and all(math.isfinite(v) for v in again.losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("lag", [0, 1])
def test_an_interrupted_call_leaves_no_unread_loss_to_the_next(lag: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("glora.training.trainer.read_lag", lambda device, precision: lag)
    calls = []

    def loss_fn(m: torch.nn.Module, batch) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return classification_loss(m, batch)

    trainer = glora.SupernetTrainer(
        _model(), _task(96), glora.TrainConfig(steps=5, batch_size=16, progress=False), loss_fn=loss_fn
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.step == 2
    assert len(trainer.train().losses) == 3


def test_a_checkpoint_never_holds_a_step_whose_loss_was_not_finite(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read a step late, a non-finite loss at step 2 is found when step 3 is to be saved: nothing is written."""
    monkeypatch.setattr("glora.training.trainer.read_lag", lambda device, precision: 1)
    calls = []

    def loss_fn(m: torch.nn.Module, batch) -> torch.Tensor:
        calls.append(1)
        loss = classification_loss(m, batch)
        return loss * float("nan") if len(calls) == 3 else loss

    trainer = glora.SupernetTrainer(
        _model(), _task(96), glora.TrainConfig(steps=6, batch_size=16, progress=False), loss_fn=loss_fn
    )
    with pytest.raises(FloatingPointError, match="at step 2"):
        trainer.train(checkpoint=tmp_path / "c.pt", checkpoint_every=3)
    assert trainer.step == 2 and not (tmp_path / "c.pt").exists()


def test_the_reported_loss_is_the_mean_over_micro_batches() -> None:
    losses = {}
    for accum in (1, 4):
        torch.manual_seed(0)
        model = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], modules_to_save=["head"]))
        config = glora.TrainConfig(
            steps=1,
            batch_size=64 // accum,
            grad_accum=accum,
            sampling="fixed",
            subnet=glora.sample_subnet(model, 0),
            lr=1e-9,
            progress=False,
        )
        losses[accum] = glora.SupernetTrainer(model, _task(64), config).train().losses[0]
    assert losses[4] == pytest.approx(losses[1], rel=1e-5)
