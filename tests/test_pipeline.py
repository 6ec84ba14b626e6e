"""The movie-sentence data and the whole `glora run` pipeline, on a tiny BERT and synthetic sentences."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
import torch

from glora.tasks import movie as movie_data

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "film", "plot", "the", "a", "very", "not"]


def _lines(n: int = 120) -> list[str]:
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n):
        positive = i % 2 == 0
        words = [WORDS[j] for j in torch.randint(6, 12, (5,), generator=g).tolist()]
        words.insert(int(torch.randint(0, 5, (1,), generator=g)), WORDS[int(torch.randint(0, 3, (1,), generator=g)) + (0 if positive else 3)])
        rating = (1.5 if positive else -1.5) + 0.01 * i * (1 if positive else -1)
        lines.append(f"{i}\t{rating}\t{' '.join(words)} {i}")
    lines += ["900\t0.3\tneutral sentence", f"901\t2.0\t{lines[0].split(chr(9))[2]}", "902\t-1.0\tcaf\xe9 noir"]
    return lines


def _sdist(path, lines: list[str]) -> None:
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


def test_reading_filters_and_splits(tmp_path) -> None:
    path = tmp_path / movie_data.SDIST
    _sdist(path, _lines())
    texts, labels = movie_data.read_sentences(path)
    assert len(texts) == 121  # 120 + the latin-1 one; the neutral and the duplicate are dropped
    assert "caf\xe9 noir" in texts and "neutral sentence" not in texts
    txt = tmp_path / "snippets.txt"
    txt.write_bytes("\n".join(_lines()).encode("latin-1"))
    assert movie_data.read_sentences(txt) == (texts, labels)
    train, val = movie_data.balanced_splits(texts, labels, (40, 20), seed=3)
    assert sum(train.labels) == 20 and sum(val.labels) == 10
    assert not set(train.texts) & set(val.texts)
    again, _ = movie_data.balanced_splits(texts, labels, (40, 20), seed=3)
    assert again.texts == train.texts
    with pytest.raises(ValueError, match="need 100 sentences of each label"):
        movie_data.balanced_splits(texts, labels, (200,), seed=0)
    with pytest.raises(FileNotFoundError, match="pip download --no-deps --no-binary :all: vaderSentiment==3.3.2"):
        movie_data.read_sentences(tmp_path / "missing" / movie_data.SDIST)
    txt.write_text("1\tgood\tbroken rating\n")
    with pytest.raises(ValueError, match="line 1 has a rating that is not a number"):
        movie_data.read_sentences(txt)


def test_the_whole_pipeline_on_a_tiny_bert(tmp_path, capsys) -> None:
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[str(i) for i in range(1000)], "caf", "##e", "noir"]
    model_dir = tmp_path / "tiny-bert"
    model_dir.mkdir()
    (model_dir / "vocab.txt").write_text("\n".join(vocab))
    transformers.BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt")).save_pretrained(model_dir)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(model_dir)
    data = tmp_path / movie_data.SDIST
    _sdist(data, _lines())
    from glora.cli.main import main

    out = tmp_path / "run"
    args = ["run", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--steps", "30", "--batch-size", "16",
            "--lr", "3e-3", "--budget", "3000", "--population", "8", "--generations", "2", "--train-size", "60", "--val-size", "20", "--test-size", "40",
            "--seed", "1", "--device", "cpu", "--finetune-steps", "10", "--sampling", "sandwich"]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    subnet = json.loads((out / "subnet.json").read_text())
    assert {config["B"] for config in subnet.values()} <= {"lora_4", "none"}  # the default space: no vector/scalar B
    assert result["adapter_params"] <= 3000
    assert result["merged_test_accuracy"] == pytest.approx(result["test_accuracy"], abs=1 / 40 + 1e-9)
    assert result["finetune_steps"] == 10 and 0 <= result["test_accuracy_supernet"] <= 1
    assert result["search"]["fitness"] == "neg_loss" and result["search"]["best_fitness"] <= 0  # the default fitness
    assert 0 <= result["search"]["best_validation_accuracy"] <= 1
    assert {"adapter", "merged", "subnet.json", "search.jsonl", "supernet.pt", "finetune.pt"} <= set(os.listdir(out))
    merged = transformers.AutoModel.from_pretrained(out / "merged", add_pooling_layer=False)
    base = transformers.AutoModel.from_pretrained(model_dir, add_pooling_layer=False)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in base.parameters())
    assert (out / "merged" / "head.safetensors").exists()
    assert main([*args, "--resume"]) == 0  # a finished run resumes without re-training or re-evaluating
    capsys.readouterr()
    assert main([*args, "--resume", "--lr", "1e-3"]) == 2  # other settings would not continue the same run
    assert "written with other training settings (lr 0.003 there, 0.001 here)" in capsys.readouterr().err
    assert main(args) == 2  # refused before any training, with a message rather than a traceback
    assert "holds an earlier run (supernet.pt, search.jsonl, finetune.pt): pass --resume" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "other"), "--batch-size", "0"]) == 2  # TrainConfig's check, as a message
    assert "batch_size must be a positive integer, got 0" in capsys.readouterr().err


def test_pipeline_settings_are_checked_before_any_work() -> None:
    from glora.tasks.pipeline import PipelineConfig

    assert PipelineConfig().choices == {"B": ["lora", "none"]} and PipelineConfig().choices is not PipelineConfig().choices
    for bad, message in [({"fitness": "loss"}, "fitness must be one of accuracy, neg_loss, got 'loss'"),
                         ({"population": 0}, "population must be a positive integer, got 0"),
                         ({"generations": 2.5}, "generations must be a positive integer, got 2.5"),
                         ({"seed": -1}, "seed must be a non-negative integer, got -1"),
                         ({"finetune_steps": -1}, "finetune_steps must be a non-negative integer, got -1"),
                         ({"budget": -5}, "budget maximum must be a non-negative whole number of parameters, got -5"),
                         ({"device": "tpu"}, "device 'tpu' is not a torch device")]:
        with pytest.raises(ValueError, match=message):
            PipelineConfig(**bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': torch sees no CUDA GPU here"):
            PipelineConfig(device="cuda")
    else:
        with pytest.raises(ValueError, match=f"device 'cuda:{torch.cuda.device_count()}': torch sees"):
            PipelineConfig(device=f"cuda:{torch.cuda.device_count()}")


def test_an_interrupted_run_says_how_to_resume(monkeypatch, capsys) -> None:
    import glora.tasks.pipeline
    from glora.cli.main import main

    def interrupted(cfg) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(glora.tasks.pipeline, "run", interrupted)
    assert main(["run", "--model", "unused", "--device", "cpu"]) == 130
    assert "interrupted; the finished training phases and search evaluations are kept" in capsys.readouterr().err
