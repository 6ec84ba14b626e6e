"""The movie-sentence data and the whole `glora run` pipeline, on a tiny BERT and synthetic sentences.

The pipeline runs once per module (``finished_run``, slow tier); each slow test checks one thing about that run, on
its own copy of the output folder where it runs the command again. Refusals that need no trained run are fast."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

import glora.tasks.pipeline
from glora.cli.main import main
from glora.tasks import movie as movie_data

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "film", "plot", "the", "a", "very", "not"]


def sentence_lines(n: int = 120) -> list[str]:
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n):
        positive = i % 2 == 0
        words = [WORDS[j] for j in torch.randint(6, 12, (5,), generator=g).tolist()]
        words.insert(
            int(torch.randint(0, 5, (1,), generator=g)),
            WORDS[int(torch.randint(0, 3, (1,), generator=g)) + (0 if positive else 3)],
        )
        rating = (1.5 if positive else -1.5) + 0.01 * i * (1 if positive else -1)
        lines.append(f"{i}\t{rating}\t{' '.join(words)} {i}")
    lines += ["900\t0.3\tneutral sentence", f"901\t2.0\t{lines[0].split(chr(9))[2]}", "902\t-1.0\tcaf\xe9 noir"]
    return lines


def write_sdist(path, lines: list[str]) -> None:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        data = "\n".join(lines).encode("latin-1")
        info = tarfile.TarInfo(movie_data.FILE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path, "w:gz") as tar:
        blob = inner.getvalue()
        info = tarfile.TarInfo(movie_data.INNER)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))


@pytest.fixture
def sentences(tmp_path) -> tuple[list[str], list[int]]:
    path = tmp_path / movie_data.SDIST
    write_sdist(path, sentence_lines())
    return movie_data.read_sentences(path)


def test_reading_drops_neutral_and_duplicate_sentences(sentences) -> None:
    texts, labels = sentences
    assert len(texts) == len(labels) == 121  # 120 + the latin-1 one; the neutral and the duplicate are dropped
    assert "caf\xe9 noir" in texts and "neutral sentence" not in texts
    assert labels[texts.index("caf\xe9 noir")] == 0 and labels[0] == 1 and labels[1] == 0
    assert texts.count(texts[0]) == 1  # line 901 repeats line 0's text


def test_the_text_file_reads_as_the_tarball_does(sentences, tmp_path) -> None:
    txt = tmp_path / "snippets.txt"
    txt.write_bytes("\n".join(sentence_lines()).encode("latin-1"))
    assert movie_data.read_sentences(txt) == sentences


def test_splits_are_balanced_disjoint_and_seeded(sentences) -> None:
    texts, labels = sentences
    train, val = movie_data.balanced_splits(texts, labels, (40, 20), seed=3)
    assert (len(train.texts), len(val.texts)) == (40, 20)
    assert sum(train.labels) == 20 and sum(val.labels) == 10
    assert not set(train.texts) & set(val.texts)
    again, _ = movie_data.balanced_splits(texts, labels, (40, 20), seed=3)
    assert again.texts == train.texts
    other, _ = movie_data.balanced_splits(texts, labels, (40, 20), seed=4)
    assert other.texts != train.texts
    with pytest.raises(ValueError, match="need 100 sentences of each label"):
        movie_data.balanced_splits(texts, labels, (200,), seed=0)


def test_missing_or_broken_data_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --no-binary :all: vaderSentiment==3.3.2"):
        movie_data.read_sentences(tmp_path / "missing" / movie_data.SDIST)
    txt = tmp_path / "snippets.txt"
    txt.write_text("1\tgood\tbroken rating\n")
    with pytest.raises(ValueError, match="line 1 has a rating that is not a number"):
        movie_data.read_sentences(txt)


# The whole pipeline on a tiny BERT (2 layers, width 32) and 60/20/40 sentences.
TRAIN_STEPS, FINETUNE_STEPS, BUDGET, TEST_SIZE, VAL_SIZE = 30, 10, 3000, 40, 20


def save_tiny_bert(model_dir: Path) -> Path:
    """A 2-layer BERT of width 32 with a word-level vocabulary of the synthetic sentences, saved in ``model_dir``."""
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[str(i) for i in range(1000)], "caf", "##e", "noir"]
    (model_dir / "vocab.txt").write_text("\n".join(vocab))
    transformers.BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt")).save_pretrained(model_dir)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def movie_sdist(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / movie_data.SDIST
    write_sdist(path, sentence_lines())
    return path


def _args(model: Path, data: Path, out: Path) -> list[str]:
    return [
        "run", "--model", str(model), "--data", str(data), "--out", str(out),
        "--steps", str(TRAIN_STEPS), "--batch-size", "16", "--lr", "3e-3", "--budget", str(BUDGET),
        "--population", "8", "--generations", "2",
        "--train-size", "60", "--val-size", str(VAL_SIZE), "--test-size", str(TEST_SIZE),
        "--seed", "1", "--device", "cpu", "--finetune-steps", str(FINETUNE_STEPS), "--sampling", "sandwich",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tiny_bert, movie_sdist, tmp_path_factory) -> Path:
    """The output folder of one whole ``glora run``: train, search, fine-tune, merge, save."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_args(tiny_bert, movie_sdist, out)) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tiny_bert, movie_sdist, tmp_path) -> tuple[list[str], Path]:
    """The command line of the finished run pointed at a copy of its output folder, for tests that run again."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return _args(tiny_bert, movie_sdist, out), out


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_a_run_writes_every_output(finished_run) -> None:
    assert {
        "adapter",
        "merged",
        "subnet.json",
        "search.jsonl",
        "result.json",
        "supernet.safetensors",
        "finetune.safetensors",
    } <= set(os.listdir(finished_run))
    result = _result(finished_run)
    assert result["device"] == "cpu" and result["config"]["budget"] == BUDGET
    assert result["supernet_steps"] == TRAIN_STEPS and result["finetune_steps"] == FINETUNE_STEPS
    assert result["final_train_loss"] is not None and result["final_train_loss"] > 0
    assert result["files"] == [*glora.tasks.pipeline.FILES, "finetune.safetensors"] and result["sessions"] == 1
    assert result["train_seconds"] > 0 and result["finetune_seconds"] > 0


@pytest.mark.slow
def test_the_search_log_holds_every_evaluation(finished_run) -> None:
    result = _result(finished_run)
    records = [json.loads(line) for line in (finished_run / "search.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("type") == "eval"]
    assert len(evals) == result["search"]["evaluations"] == 8 * 2  # population x generations
    assert all(r["params"] <= BUDGET for r in evals)
    best = max(evals, key=lambda r: r["score"])
    assert best["score"] == pytest.approx(result["search"]["best_fitness"])
    assert best["params"] == result["adapter_params"]


@pytest.mark.slow
def test_the_searched_subnet_is_in_the_default_space_and_within_the_budget(finished_run) -> None:
    subnet = json.loads((finished_run / "subnet.json").read_text())
    assert len(subnet) == 2 * 6  # every encoder linear of both layers
    assert {config["B"] for config in subnet.values()} <= {"lora_4", "none"}  # the default space: no vector/scalar B
    assert 0 < _result(finished_run)["adapter_params"] <= BUDGET


@pytest.mark.slow
def test_the_search_scores_by_validation_loss(finished_run) -> None:
    search = _result(finished_run)["search"]
    assert search["fitness"] == "neg_loss" and search["best_fitness"] <= 0  # the default fitness
    assert 0 <= search["best_validation_accuracy"] <= 1
    assert (search["best_validation_accuracy"] * VAL_SIZE) == pytest.approx(
        round(search["best_validation_accuracy"] * VAL_SIZE)
    )


@pytest.mark.slow
def test_the_merged_model_keeps_the_accuracy_and_the_base_size(finished_run, tiny_bert) -> None:
    transformers = pytest.importorskip("transformers")
    result = _result(finished_run)
    for key in ("test_accuracy", "merged_test_accuracy", "test_accuracy_supernet"):
        assert 0 <= result[key] <= 1 and result[key] * TEST_SIZE == pytest.approx(round(result[key] * TEST_SIZE))
    assert result["merged_test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1 / TEST_SIZE + 1e-9)
    merged = transformers.AutoModel.from_pretrained(finished_run / "merged", add_pooling_layer=False)
    base = transformers.AutoModel.from_pretrained(tiny_bert, add_pooling_layer=False)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in base.parameters())
    from safetensors.torch import load_file

    head = load_file(finished_run / "merged" / "head.safetensors")
    assert {k: tuple(v.shape) for k, v in head.items()} == {"weight": (2, 32), "bias": (2,)}


@pytest.mark.slow
def test_a_finished_run_resumes_without_training_or_searching_again(run_copy, capsys) -> None:
    args, out = run_copy
    before = _result(out)
    log = (out / "search.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert (
        f"wrote {out}/: adapter/, merged/, subnet.json, search.jsonl, result.json, supernet.safetensors, finetune.safetensors"
        in (capsys.readouterr().out)
    )
    after = _result(out)
    assert after["sessions"] == 2 and after["final_train_loss"] == before["final_train_loss"]
    for key in ("train_seconds", "finetune_seconds"):  # the recorded timings, plus the resumed run's few seconds
        assert before[key] <= after[key] < before[key] + 5, key
    assert before["search"]["fitness_seconds"] <= after["search"]["fitness_seconds"]
    assert (out / "search.jsonl").read_text() == log  # no subnet evaluated again
    assert after["supernet_steps"] == TRAIN_STEPS and after["finetune_steps"] == FINETUNE_STEPS
    for key in ("adapter_params", "test_accuracy", "merged_test_accuracy", "test_accuracy_supernet"):
        assert after[key] == before[key], key
    assert after["search"]["best_fitness"] == before["search"]["best_fitness"]


@pytest.mark.slow
def test_resuming_with_other_training_settings_is_refused(run_copy, capsys) -> None:
    args, out = run_copy
    log = (out / "search.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--resume", "--lr", "1e-3"]) == 2  # other settings would not continue the same run
    assert "written with other training settings (lr 0.003 there, 0.001 here)" in capsys.readouterr().err
    assert (out / "search.jsonl").read_text() == log


@pytest.mark.slow
def test_a_finished_run_is_not_overwritten_without_resume(run_copy, capsys) -> None:
    args, out = run_copy
    before = (out / "result.json").read_text()
    capsys.readouterr()
    assert main(args) == 2  # refused before any training, with a message rather than a traceback
    assert (
        "holds an earlier run (supernet.safetensors, search.jsonl, finetune.safetensors): pass --resume"
        in capsys.readouterr().err
    )
    assert (out / "result.json").read_text() == before


def test_an_earlier_run_is_refused_before_the_model_is_read(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("supernet.safetensors", "search.jsonl", "finetune.safetensors"):
        (out / name).write_bytes(b"")
    assert main(["run", "--model", str(tmp_path / "no-model"), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "glora run: error: the output folder" in err
    assert "holds an earlier run (supernet.safetensors, search.jsonl, finetune.safetensors): pass --resume" in err
    assert sorted(os.listdir(out)) == ["finetune.safetensors", "search.jsonl", "supernet.safetensors"]


def test_bad_training_settings_are_a_message_before_training(tiny_bert, movie_sdist, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main([*_args(tiny_bert, movie_sdist, out), "--batch-size", "0"]) == 2  # TrainConfig's check, as a message
    assert "batch_size must be a positive integer, got 0" in capsys.readouterr().err
    assert not (out / "supernet.safetensors").exists()


def test_the_default_space_leaves_out_bs_vector_and_scalar_forms() -> None:
    from glora.tasks.pipeline import PipelineConfig

    assert PipelineConfig().choices == {"B": ["lora", "none"]}
    assert PipelineConfig().choices is not PipelineConfig().choices  # each config its own dict


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"fitness": "loss"}, "fitness must be one of accuracy, neg_loss, got 'loss'"),
        ({"population": 0}, "population must be a positive integer, got 0"),
        ({"generations": 2.5}, "generations must be a positive integer, got 2.5"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
        ({"finetune_steps": -1}, "finetune_steps must be a non-negative integer, got -1"),
        ({"budget": -5}, "budget maximum must be a non-negative whole number of parameters, got -5"),
        ({"device": "tpu"}, "device 'tpu' is not a torch device"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else "",
)
def test_pipeline_settings_are_checked_before_any_work(bad: dict, message: str) -> None:
    from glora.tasks.pipeline import PipelineConfig

    with pytest.raises(ValueError, match=message):
        PipelineConfig(**bad)


def test_a_gpu_that_torch_cannot_see_is_refused() -> None:
    from glora.tasks.pipeline import PipelineConfig

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': torch sees no CUDA GPU here"):
            PipelineConfig(device="cuda")
    else:
        with pytest.raises(ValueError, match=f"device 'cuda:{torch.cuda.device_count()}': torch sees"):
            PipelineConfig(device=f"cuda:{torch.cuda.device_count()}")
