"""Supernet training under torch.distributed (2 CPU processes, gloo): every rank ends with the same adapters, and
they equal single-process training on the combined batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import glora
from models import MLP

pytestmark = pytest.mark.slow  # two processes each


def _task() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 12, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], modules_to_save=["head"]))


def _config(batch: int, precision: str = "fp32") -> glora.TrainConfig:
    return glora.TrainConfig(
        steps=6,
        batch_size=batch,
        lr=1e-2,
        warmup_steps=1,
        max_grad_norm=1.0,
        seed=3,
        progress=False,
        precision=precision,
    )


def _worker(rank: int, world: int, init: str, out: str, precision: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = _model()
        trainer = glora.SupernetTrainer(model, _task(), _config(16, precision))
        losses = trainer.train().losses
        trainer.save_checkpoint(os.path.join(out, "ckpt.pt"))
        state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({**state, "losses": torch.tensor(losses)}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: the weights built for the whole forward, under DDP
def test_two_processes_match_one_process_on_the_combined_batch(tmp_path, precision: str) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(2, init, str(tmp_path), precision), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # the adapters and the reported losses
    single = _model()
    single_losses = glora.SupernetTrainer(single, _task(), _config(32, precision)).train().losses
    # bf16: the combined batch rounds differently (up to ~5e-3 after 6 steps, the per-layer node alike)
    rtol, atol = (1e-4, 1e-6) if precision == "fp32" else (2e-2, 1e-2)
    # every rank reports the loss over the whole global batch, that of one process on the combined batch
    torch.testing.assert_close(rank0.pop("losses"), torch.tensor(single_losses), rtol=rtol, atol=atol)
    for name, p in single.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(rank0[name], p.detach(), rtol=rtol, atol=atol, msg=name)
    assert (tmp_path / "ckpt.pt").exists()


def _search_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = _perturbed_model()
        evaluator = glora.SubnetEvaluator(model, _task(), metric="neg_loss")
        subnets = [glora.sample_subnet(model, s) for s in range(7)]
        scores = evaluator(subnets)
        log = os.path.join(out, "search.jsonl") if rank == 0 else None
        result = glora.search(model, evaluator, 400, generations=3, log=log, progress=False)
        torch.save(
            {"scores": scores, "history": [g.to_dict() for g in result.history], "best": result.best_subnet},
            os.path.join(out, f"search{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _perturbed_model() -> torch.nn.Module:
    model = _model()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def test_evaluation_spread_over_processes_gives_every_rank_the_same_search(tmp_path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_search_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "search0.pt")
    rank1 = torch.load(tmp_path / "search1.pt")
    assert rank0 == rank1
    model = _perturbed_model()
    evaluator = glora.SubnetEvaluator(model, _task(), metric="neg_loss")
    assert rank0["scores"] == evaluator([glora.sample_subnet(model, s) for s in range(7)])
    single = glora.search(model, evaluator, 400, generations=3, progress=False)
    assert [g.to_dict() for g in single.history] == rank0["history"] and single.best_subnet == rank0["best"]
    assert (tmp_path / "search.jsonl").exists()


def _torchrun(*argv: str, cwd: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m glora ...`` with two CPU (gloo) processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [*command, "-m", "glora", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_torchrun_runs_the_whole_pipeline_with_files_written_once(tmp_path) -> None:
    from texts import labelled_rows, save_tiny_bert, write_csv

    model = save_tiny_bert(tmp_path)
    train = write_csv(tmp_path / "train.csv", labelled_rows(0, 64))
    test = write_csv(tmp_path / "test.csv", labelled_rows(64, 24))
    out = tmp_path / "run"
    done = _torchrun(
        "run", "--task", "text-classification", "--model", str(model), "--train", str(train), "--test", str(test),
        "--text-column", "sentence", "--label-column", "sentiment", "--validation-size", "16", "--steps", "6",
        "--batch-size", "8", "--population", "6", "--generations", "2", "--device", "cpu", "--out", str(out),
        cwd=str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # process 0 alone reports and writes
    result = json.loads((out / "result.json").read_text())
    assert result["processes"] == 2 and result["search"]["evaluations"] == 12
    evals = [r for r in map(json.loads, (out / "search.jsonl").read_text().splitlines()) if r.get("type") == "eval"]
    assert len(evals) == 12  # every evaluation logged once, though the two processes shared them
    assert result["test_merged"]["accuracy"] == pytest.approx(result["test"]["accuracy"], abs=1 / 24 + 1e-9)
    assert (out / "merged" / "head.safetensors").exists() and (out / "adapter" / "glora.json").exists()
