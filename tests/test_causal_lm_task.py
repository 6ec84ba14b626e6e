"""The causal-lm task of ``glora run``: tiny random decoders (LLaMA, GPT-2, GPT-NeoX, OPT) with a tokenizer trained
offline on the test's own documents."""

from __future__ import annotations

import json
import math
import os
import random
import warnings

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from glora.data.documents import Documents, read_documents  # noqa: E402
from glora.errors import DataError  # noqa: E402
from glora.tasks.causal_lm import CausalLM, TokenNLL, negative_token_loss, token_loss  # noqa: E402
from glora.tasks.settings import RunSettings  # noqa: E402
from glora.tuner.config import GLoRAConfig  # noqa: E402
from glora.tuner.merging import merge  # noqa: E402
from glora.tuner.subnets import sample_subnet, set_subnet, supernet_mode  # noqa: E402
from glora.tuner.wrapping import adapter_parameters, wrap  # noqa: E402

CPU = torch.device("cpu")
WORDS = {
    "adj": ["small", "red", "quiet", "old", "bright", "green", "heavy", "quick"],
    "noun": ["cat", "dog", "river", "house", "garden", "engine", "teacher", "window"],
    "verb": ["sees", "finds", "likes", "paints", "opens", "follows", "builds", "moves"],
}


def documents(n: int, seed: int = 0) -> list[str]:
    """``n`` short synthetic documents of one to three sentences."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(1, 3)):
            a, b = rng.sample(WORDS["noun"], 2)
            sentences.append(f"the {rng.choice(WORDS['adj'])} {a} {rng.choice(WORDS['verb'])} the {b}.")
        out.append(" ".join(sentences))
    return out


def save_tokenizer(folder: str, texts: list[str]) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return len(fast)


def tiny_model(kind: str, vocab: int) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    ids = {"bos_token_id": 1, "eos_token_id": 2}
    if kind == "llama":
        return tf.LlamaForCausalLM(
            tf.LlamaConfig(
                vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, **ids,
            )
        )  # fmt: skip
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(
            tf.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids)
        )
    if kind == "neox":
        return tf.GPTNeoXForCausalLM(
            tf.GPTNeoXConfig(
                vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=128, **ids,
            )
        )  # fmt: skip
    if kind == "opt":
        return tf.OPTForCausalLM(
            tf.OPTConfig(
                vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                word_embed_proj_dim=32, max_position_embeddings=128, pad_token_id=0, **ids,
            )
        )  # fmt: skip
    raise ValueError(kind)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "docs.txt"
    path.write_text("\n\n".join(documents(60)) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for kind in ("llama", "gpt2", "neox", "opt"):
        folder = str(root / kind)
        vocab = save_tokenizer(folder, documents(200, seed=1))
        tiny_model(kind, vocab).save_pretrained(folder)
        folders[kind] = folder
    return folders


def make_task(folder: str, **settings: object) -> CausalLM:
    values: dict = {"task": "causal-lm", "model": folder, "max_len": 32, **settings}
    return CausalLM(RunSettings(**values))


def loaded(folder: str, **settings: object) -> tuple[CausalLM, TokenNLL]:
    task = make_task(folder, **settings)
    model = task.load_model(None)  # type: ignore[arg-type]
    assert isinstance(model, TokenNLL)
    return task, model


def encoded(task: CausalLM, n: int = 12, seed: int = 3) -> dict[str, torch.Tensor]:
    texts = documents(n, seed)
    return task.encode_examples(Documents(texts, "mem", list(range(1, n + 1))))


def glora_wrapped(task: CausalLM, model: TokenNLL, seed: int = 0) -> dict:
    """``model`` wrapped on its default targets with random adapter tensors and a random subnet fixed."""
    wrap(model, GLoRAConfig(rank=2, target_modules=task.default_targets(model), choices=None))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    subnet = sample_subnet(model, seed)
    set_subnet(model, subnet)
    return subnet


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_token_loss_is_the_models_own_loss(model_folders: dict[str, str], kind: str) -> None:
    task, model = loaded(model_folders[kind])
    data = encoded(task)
    assert data["input_ids"].shape[1] <= 32
    labels = data["input_ids"].masked_fill(data["attention_mask"] == 0, -100)
    with torch.no_grad():
        hf = model.model(input_ids=data["input_ids"], attention_mask=data["attention_mask"], labels=labels).loss
        ours = token_loss(model, data)
        out = model(data["input_ids"], data["attention_mask"])
    assert out.shape == (len(data["labels"]), 2)
    assert torch.equal(out[:, 1].long(), data["labels"])  # labels: each document's predicted tokens
    assert abs(float(hf) - float(ours)) < 1e-5
    assert abs(float(negative_token_loss(out, data["labels"])) + float(hf)) < 1e-5
    report = task.evaluate(model, data, CPU)
    assert abs(report["loss"] - float(hf)) < 1e-5 and abs(report["perplexity"] - float(torch.exp(hf))) < 1e-3


def test_chunked_forward_without_gradients_matches(
    model_folders: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import glora.tasks.causal_lm as causal_lm

    task, model = loaded(model_folders["llama"])
    data = encoded(task)
    with torch.no_grad():
        whole = causal_lm.sequence_nll(model.model, data["input_ids"], data["attention_mask"])  # one forward
        monkeypatch.setattr(causal_lm, "ROWS_PER_FORWARD", 5)  # groups of similar length, back in order
        grouped = model(data["input_ids"], data["attention_mask"])
        monkeypatch.setattr(causal_lm, "LOGITS_PER_FORWARD", 1)  # one sequence per forward
        single = model(data["input_ids"], data["attention_mask"])
    assert len(set(data["attention_mask"].sum(1).tolist())) > 2
    torch.testing.assert_close(whole, grouped, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-5)


def test_default_targets_by_architecture(model_folders: dict[str, str]) -> None:
    expected = {
        "llama": (
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "lora:8:q_proj,v_proj",
        ),
        "gpt2": (["c_attn", "c_proj", "c_fc"], "lora:8:c_attn"),
        "neox": (["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"], "lora:8:query_key_value"),
    }
    for kind, (targets, budget) in expected.items():
        task, model = loaded(model_folders[kind])
        assert task.default_targets(model) == targets, kind
        assert task.default_budget(model) == budget, kind
        wrap(model, GLoRAConfig(rank=2, target_modules=targets))  # every target is a layer GLoRA wraps
    # OPT: no known family, so every linear layer but the output embedding (lm_head)
    task, model = loaded(model_folders["opt"])
    targets = task.default_targets(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert "model.lm_head" in linears and targets == [n for n in linears if n != "model.lm_head"]
    assert task.default_budget(model) == "lora:8"
    wrap(model, GLoRAConfig(rank=2, target_modules=targets))


def test_merged_llama_stays_bias_free_and_reloads_with_transformers(model_folders: dict[str, str], tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    task, model = loaded(model_folders["llama"])
    base_keys = set(model.model.state_dict())
    data = encoded(task)
    subnet = glora_wrapped(task, model)
    supernet = task.evaluate(model, data, CPU)
    merged = merge(model, subnet)
    assert isinstance(merged, TokenNLL)
    for name, module in merged.named_modules():
        if name.endswith(("_proj",)):
            assert isinstance(module, torch.nn.Linear) and module.bias is None, name
    assert set(merged.model.state_dict()) == base_keys
    report = task.evaluate(merged, data, CPU)
    assert abs(report["loss"] - supernet["loss"]) < 1e-4
    task.save_merged(merged, str(tmp_path / "merged"), None)  # type: ignore[arg-type]
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).float().eval()
    labels = data["input_ids"].masked_fill(data["attention_mask"] == 0, -100)
    with torch.no_grad():
        hf = plain(input_ids=data["input_ids"], attention_mask=data["attention_mask"], labels=labels).loss
    assert abs(float(hf) - report["loss"]) < 1e-5
    assert all(m.bias is None for n, m in plain.named_modules() if n.endswith("_proj"))
    # glora eval's way: load_merged keeps the same figures
    again = make_task(str(tmp_path / "merged"))
    reloaded = again.load_merged(str(tmp_path / "merged"))
    assert (
        abs(
            again.evaluate(reloaded, again.encode_examples(Documents(documents(12, 3), "m", [])), CPU)["loss"]
            - float(hf)
        )
        < 1e-5
    )


def test_gpt2_merge_with_conv1d(model_folders: dict[str, str]) -> None:
    task, model = loaded(model_folders["gpt2"])
    data = encoded(task)
    subnet = glora_wrapped(task, model, seed=1)
    supernet = task.evaluate(model, data, CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = merge(model, subnet)
    assert abs(task.evaluate(merged, data, CPU)["loss"] - supernet["loss"]) < 1e-4


def test_training_loss_has_gradients(model_folders: dict[str, str]) -> None:
    task, model = loaded(model_folders["llama"])
    data = encoded(task)
    wrap(model, GLoRAConfig(rank=2, target_modules=task.default_targets(model)))
    supernet_mode(model, 0)
    loss = task.loss_fn()(model, {k: v[:4] for k, v in data.items()})  # type: ignore[misc]
    loss.backward()
    grads = [p.grad for _, p in adapter_parameters(model)]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_predict_greedy_continuations(model_folders: dict[str, str]) -> None:
    task, model = loaded(model_folders["llama"])
    docs = Documents(["the red cat sees", "the old dog"], "input.txt", [1, 2])
    rows = task.predict(model, docs, CPU, max_new_tokens=5)
    assert [r["prompt"] for r in rows] == docs.texts
    assert all(isinstance(r["continuation"], str) for r in rows)
    assert rows == task.predict(model, docs, CPU, max_new_tokens=5)  # greedy: the same each time
    json.dumps(rows)


def test_pad_token_is_eos_when_missing(model_folders: dict[str, str]) -> None:
    task, _ = loaded(model_folders["llama"])
    assert task.tokenizer is not None and task.tokenizer.pad_token == task.tokenizer.eos_token == "</s>"


# data


def test_read_formats(tmp_path) -> None:
    texts = ["first document here", "second one", "third, with a comma"]
    (tmp_path / "d.txt").write_text("\ufeff" + texts[0] + "\n\n  \n" + texts[1] + "\n" + texts[2], encoding="utf-8")
    docs = read_documents(str(tmp_path / "d.txt"), "text", "train")
    assert docs.texts == texts and docs.rows == [1, 4, 5]
    with open(tmp_path / "d.jsonl", "w", encoding="utf-8") as fh:
        for t in [texts[0], "", texts[1], texts[2]]:
            fh.write(json.dumps({"body": t, "n": 1}) + "\n")
    docs = read_documents(str(tmp_path / "d.jsonl"), "body", "train")
    assert docs.texts == texts and docs.rows == [1, 3, 4]
    (tmp_path / "d.csv").write_text('text\nfirst document here\nsecond one\n"third, with a comma"\n', encoding="utf-8")
    assert read_documents(str(tmp_path / "d.csv"), "text", "train").texts == texts
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), str(tmp_path / "d.parquet"))
    assert read_documents(str(tmp_path / "d.parquet"), "text", "train").texts == texts


def _bad(path: str, column: str = "text", role: str = "train") -> str:
    with pytest.raises(DataError) as info:
        read_documents(path, column, role)
    return str(info.value)


def test_bad_data_names_the_file(tmp_path) -> None:
    missing = str(tmp_path / "missing.txt")
    assert missing in _bad(missing)
    (tmp_path / "blank.txt").write_text("\n   \n\n", encoding="utf-8")
    message = _bad(str(tmp_path / "blank.txt"))
    assert "blank.txt" in message and "no document" in message
    (tmp_path / "binary.txt").write_bytes(b"fine line\n\xff\xfe bad\n")
    message = _bad(str(tmp_path / "binary.txt"))
    assert "binary.txt" in message and "line 2" in message
    (tmp_path / "d.jsonl").write_text('{"body": "x"}\n', encoding="utf-8")
    message = _bad(str(tmp_path / "d.jsonl"))
    assert "d.jsonl" in message and "'text'" in message
    (tmp_path / "n.jsonl").write_text('{"text": "ok"}\n{"text": 5}\n', encoding="utf-8")
    message = _bad(str(tmp_path / "n.jsonl"))
    assert "n.jsonl" in message and "'text'" in message and "row 2" in message
    (tmp_path / "e.jsonl").write_text('{"text": ""}\n{"text": "  "}\n', encoding="utf-8")
    message = _bad(str(tmp_path / "e.jsonl"), role="validation")
    assert "e.jsonl" in message and "validation" in message
    (tmp_path / "empty.csv").write_text("text\n", encoding="utf-8")
    assert "empty.csv" in _bad(str(tmp_path / "empty.csv"))
    (tmp_path / "data.xyz").write_text("hello\n", encoding="utf-8")
    assert "data.xyz" in _bad(str(tmp_path / "data.xyz"))


def test_bad_model_folders(tmp_path, corpus: str) -> None:
    for path in (str(tmp_path / "nowhere"), corpus, str(tmp_path)):
        with pytest.raises(DataError, match=os.path.basename(path)):
            make_task(path).load_model(None)  # type: ignore[arg-type]
    (tmp_path / "config.json").write_text('{"model_type": "bert", "vocab_size": 10}', encoding="utf-8")
    with pytest.raises(DataError, match="does not load"):
        make_task(str(tmp_path)).load_model(None)  # type: ignore[arg-type]


def test_read_data_cuts_splits(corpus: str, tmp_path) -> None:
    task = make_task("unused", train=corpus, validation_size=10, test_size=0.2, seed=3)
    raw = task.read_data()
    assert (len(raw.train), len(raw.validation), len(raw.test)) == (38, 10, 12)
    assert raw.record["sizes"] == {"train": 38, "validation": 10, "test": 12}
    assert raw.record["cut_from_train"] == ["validation", "test"]
    again = make_task("unused", train=corpus, validation_size=10, test_size=0.2, seed=3).read_data()
    assert again.validation.texts == raw.validation.texts
    test_file = tmp_path / "test.txt"
    test_file.write_text("one document\nanother\n", encoding="utf-8")
    raw = make_task("unused", train=corpus, test=str(test_file)).read_data()
    assert raw.test.texts == ["one document", "another"] and raw.record["cut_from_train"] == ["validation"]
    with pytest.raises(DataError, match="validation_size"):
        make_task("unused", train=corpus, validation_size=1000).read_data()
    with pytest.raises(DataError, match="--train"):
        make_task("unused").read_data()


def test_a_given_validation_file_is_used_whole(corpus: str, tmp_path) -> None:
    """--validation FILE is used whole (validation_size sizes only a split cut from --train)."""
    validation = tmp_path / "validation.txt"
    validation.write_text("\n".join(documents(15, seed=5)) + "\n", encoding="utf-8")
    raw = make_task("unused", train=corpus, validation=str(validation), validation_size=4, test_size=6).read_data()
    assert len(raw.validation) == 15 and raw.record["cut_from_train"] == ["test"]
    assert raw.record["sizes"] == {"train": 54, "validation": 15, "test": 6}


def test_documents_without_tokens_to_predict(model_folders: dict[str, str]) -> None:
    task, _ = loaded(model_folders["llama"])
    data = task.encode_examples(Documents(["the cat sees the dog.", "the"], "d.txt", [1, 2]))
    assert len(data["labels"]) == 1  # "the" is one token: nothing to predict
    with pytest.raises(DataError, match="d.txt"):
        task.encode_examples(Documents(["the", "."], "d.txt", [1, 2]))


def test_runner_end_to_end(model_folders: dict[str, str], corpus: str, tmp_path) -> None:
    runner = pytest.importorskip("glora.tasks.runner")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = str(tmp_path / "run")
    settings = RunSettings(
        task="causal-lm", model=model_folders["llama"], train=corpus, steps=4, batch_size=4, max_len=32,
        validation_size=8, test_size=8, population=4, generations=2, out=out,
    )  # fmt: skip
    result = runner.run(settings)
    assert set(result["test"]) == {"perplexity", "loss"}
    randoms = result["random_subnets"]
    assert randoms["count"] == runner.RANDOM_SUBNETS and randoms["split"] == "test"
    assert set(randoms["mean"]) == {"perplexity", "loss"} and math.isfinite(randoms["mean"]["loss"])
    assert abs(result["test_merged"]["loss"] - result["test"]["loss"]) < 1e-4
    merged = os.path.join(out, "merged")
    plain = AutoModelForCausalLM.from_pretrained(merged).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert tokenizer.pad_token == "</s>"
    assert all(m.bias is None for n, m in plain.named_modules() if n.endswith("_proj"))
    task = make_task(merged, train=corpus, validation_size=8, test_size=8, seed=settings.seed)
    raw = task.read_data()
    task.load_merged(merged)
    data = task.encode_examples(raw.test)
    labels = data["input_ids"].masked_fill(data["attention_mask"] == 0, -100)
    with torch.no_grad():
        hf = plain(input_ids=data["input_ids"], attention_mask=data["attention_mask"], labels=labels).loss
    assert abs(float(hf) - result["test_merged"]["loss"]) < 1e-5


def test_runner_with_sandwich_sampling(model_folders: dict[str, str], corpus: str, tmp_path) -> None:
    """The sandwich trains the task's own loss (its distillation is the classification loss's): the run completes."""
    runner = pytest.importorskip("glora.tasks.runner")
    settings = RunSettings(
        task="causal-lm", model=model_folders["llama"], train=corpus, steps=3, batch_size=4, max_len=32,
        validation_size=8, test_size=8, population=4, generations=1, sampling="sandwich", out=str(tmp_path / "run"),
    )  # fmt: skip
    result = runner.run(settings)
    assert result["settings"]["sampling"] == "sandwich" and result["supernet_steps"] == 3
    assert math.isfinite(result["final_train_loss"]) and set(result["test"]) == {"perplexity", "loss"}


def test_inspect_shows_the_space_the_run_searches(model_folders: dict[str, str], corpus: str, tmp_path, monkeypatch):
    """``glora inspect --config`` wraps as the run does: the same layers, choices and adapter sizes as the run's
    search log holds (its rank, choices and targets from the config, not inspect's own defaults)."""
    from glora.cli.main import main
    from glora.engine import read_log
    from glora.tuner import inspection

    out = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text(
        "\n".join(
            [
                'task = "causal-lm"',
                f'model = "{model_folders["llama"]}"',
                f'train = "{corpus}"',
                'targets = ["q_proj", "v_proj", "up_proj"]',
                "rank = 2",
                "steps = 2",
                "batch_size = 4",
                "max_len = 32",
                "validation_size = 8",
                "test_size = 8",
                "population = 4",
                "generations = 1",
                'device = "cpu"',
                f'out = "{out}"',
                "[choices]",
                'A = ["vector", "none"]',
                'E = ["scalar", "none"]',
            ]
        ),
        encoding="utf-8",
    )
    assert main(["run", "--config", str(config)]) == 0
    shown: list[dict] = []
    inspect_space = inspection.inspect_space
    monkeypatch.setattr(inspection, "inspect_space", lambda model: shown.append(inspect_space(model)) or shown[-1])
    assert main(["inspect", "--config", str(config)]) == 0
    space = read_log(out / "search.jsonl").space
    info = shown[0]
    assert [(layer["name"], layer["choices"]) for layer in info["layers"]] == [
        (layer.name, {gene: list(offered) for gene, offered in layer.choices.items()}) for layer in space.layers
    ]
    assert (info["min_params"], info["max_params"]) == (space.min_params, space.max_params)
    assert all(layer["choices"]["A"] == ["vector", "none"] for layer in info["layers"])


def test_compile_leaves_the_search_evaluator_eager(model_folders: dict[str, str], corpus: str, tmp_path, monkeypatch):
    """TokenNLL's evaluation forward groups rows by length (data-dependent): ``--compile`` compiles training only."""
    runner = pytest.importorskip("glora.tasks.runner")
    from torch._dynamo.backends.debugging import aot_eager

    from glora.training import coded_forward
    from glora.training import trainer as trainer_module

    graphs = {"trainer": 0, "search": 0}

    def counting(name: str):
        def backend(gm, example_inputs):
            graphs[name] += 1
            return aot_eager(gm, example_inputs)

        return backend

    monkeypatch.setattr(trainer_module, "COMPILE_BACKEND", counting("trainer"))
    monkeypatch.setattr(coded_forward, "COMPILE_BACKEND", counting("search"))
    settings = RunSettings(
        task="causal-lm", model=model_folders["llama"], train=corpus, steps=2, batch_size=4, max_len=32,
        validation_size=8, test_size=8, population=4, generations=1, finetune_steps=0, compile=True,
        out=str(tmp_path / "run"),
    )  # fmt: skip
    result = runner.run(settings)
    assert graphs["trainer"] >= 1 and graphs["search"] == 0
    assert math.isfinite(result["test"]["loss"])
