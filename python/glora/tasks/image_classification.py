"""The ``image-classification`` task: a pretrained image model under a new classification head, and labelled
images.

Models (``--model``):

- a timm model folder (timm's Hugging Face hub format: ``config.json`` naming the ``architecture`` and
  ``model.safetensors``), loaded offline with ``timm.create_model("local-dir:FOLDER", pretrained=True,
  num_classes=K)``; or a timm model name (``resnet18``, ``hf-hub:timm/...``), whose weights timm fetches or finds
  in its cache;
- ``torchvision:NAME`` (torchvision's default weights, from torch's cache ``$TORCH_HOME/hub/checkpoints``, fetched
  once when online) or ``torchvision:NAME:FILE`` (a state dict in ``FILE``, ``.pth`` or ``.safetensors``, read
  without pickle); the last ``nn.Linear`` is the head;
- a Hugging Face image-classification folder (``AutoModelForImageClassification`` with its
  ``AutoImageProcessor``).

The head is new (K outputs) and trained in full (``modules_to_save``). GLoRA wraps the backbone's convolutions
and linears, grouped and depthwise convolutions too; the default budget is LoRA rank 4's count on the others
(PEFT's LoRA needs a rank divisible by a convolution's groups, so it has no count on a depthwise one). With
them the search fills LoRA's budget on EfficientNet-Lite0 (about 90,600 of 91,372 parameters, against about 77,500
without them; docs/benchmarks.md, "Accuracy against PEFT methods"). A layer of a subclass with its
own forward, such as timm's ``Conv2dSame`` (TensorFlow "same" padding of strided convolutions), keeps that forward
once wrapped. For transformers (ViT and the like) only the linears of the blocks (``qkv``, ``proj``, ``fc1``, ``fc2``, or the
query/key/value/dense layers), not the patch embedding. Linears inside ``nn.MultiheadAttention`` are left out
(it reads their weights directly).

Images are resized whole (no crop) to the model's own input side (timm's ``resolve_data_config``, the torchvision
weights' crop size, the image processor's ``size``), or ``image_size``, with the model's interpolation, and kept
as uint8 tensors ``pixel_values`` ``(N, 3, side, side)``: 1 byte a pixel. :class:`ImageClassifier` scales them to
[0, 1] and normalises them with the model's mean and std on the fly. Batch-norm statistics stay as pretrained
(the backbone is frozen: its norm layers run in eval mode in training too), so the merged model is exactly the
base plus the found adapter.

The merged model is written in its family's format, loadable without glora: timm's folder (``model.safetensors``
+ ``config.json`` with ``num_classes``, ``label_names`` and the input size, ``crop_pct`` 1.0); the Hugging Face
folder (``save_pretrained`` with ``id2label``, and the image processor); for torchvision ``model.safetensors``
+ ``config.json`` (``architecture``, ``num_classes``, ``label_names``, ``input_size``, ``mean``, ``std``), loaded
with ``torchvision.models.get_model(architecture, num_classes=K).load_state_dict(...)``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from glora.data.images import ImageExamples, read_images, resize_images
from glora.data.labels import LabelSet
from glora.data.splits import plan_splits
from glora.errors import ConfigError, DataError
from glora.tasks.base import EncodedSplits, RawSplits, Tensors
from glora.tasks.classification import ClassificationTask
from glora.tasks.hf_models import first_line, loaded, quiet_transformers
from glora.tuner.targeting import select_targets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION = "torchvision:"
TORCHVISION_CONFIG = "torchvision"
"""The ``library`` of a merged torchvision model's ``config.json``."""
BUDGET = "lora:4"
"""The default budget's form: LoRA rank 4 (:meth:`ImageClassification.default_budget` names its modules)."""
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSFORMER_LINEARS = ("qkv", "attention.query", "self.query", "q_proj", "in_proj")
_NORMS = (nn.modules.batchnorm._BatchNorm,)
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


class ImageClassifier(nn.Module):
    """A model of one family (``model``) taking uint8 ``pixel_values`` ``(N, 3, H, W)``: scaled to [0, 1],
    normalised with ``mean`` and ``std``, and classified; returns the logits. Batch norms stay in eval mode."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.float() if pixel_values.dtype == torch.uint8 else pixel_values
        scale = 255.0 if pixel_values.dtype == torch.uint8 else 1.0
        x = (x / scale - self.mean) / self.std
        out = self.model(x)
        return out.logits if hasattr(out, "logits") else out

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, _NORMS):
                m.eval()
        return self


class ImageClassification(ClassificationTask):
    name = "image-classification"
    defaults = {**ClassificationTask.defaults, "steps": 300}

    family: str = ""
    side: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    head: str = ""
    processor: Any = None
    architecture: str = ""

    # -- data -----------------------------------------------------------------------------------------------

    def read_data(self) -> RawSplits:
        s = self.settings
        if s.train is None:
            raise DataError("image-classification needs --train (an image folder, .npz or saved dataset)")
        train = self.read_examples(s.train, "train")
        assert train.labels is not None
        label_set = LabelSet.from_train(train.labels, s.train, s.label_column)
        train.ids = label_set.ids(train.labels, s.train, s.label_column, "train")
        given = {role: getattr(s, role) for role in ("validation", "test") if getattr(s, role)}
        cut = [role for role in ("validation", "test") if role not in given]
        sizes = {"train": s.train_size, "validation": s.validation_size, "test": s.test_size}
        index, record = plan_splits(len(train), train.ids, cut, sizes, s.seed)
        splits: dict[str, ImageExamples] = {role: train.subset(idx) for role, idx in index.items()}
        for role, path in given.items():
            examples = self.read_examples(path, role)
            assert examples.labels is not None
            examples.ids = label_set.ids(examples.labels, path, s.label_column, role)
            splits[role] = examples
        for role, examples in splits.items():
            if len(examples) == 0:
                raise DataError(f"the {role} split is empty", details={"path": examples.path})
        self.label_names = list(label_set.names)
        record |= {"files": {"train": s.train, **given}, "sizes": {r: len(v) for r, v in splits.items()}}
        return RawSplits(splits["train"], splits["validation"], splits.get("test"), label_set.names, record)

    def read_examples(self, path: str, role: str, labelled: bool = True) -> ImageExamples:
        """The images of ``path`` (:func:`glora.data.images.read_images`) with their label values."""
        s = self.settings
        return read_images(path, s.image_column, s.label_column, role, labelled)

    def encode(self, raw: RawSplits) -> EncodedSplits:
        return EncodedSplits(
            self._tensors(raw.train),
            self._tensors(raw.validation),
            None if raw.test is None else self._tensors(raw.test),
        )

    def encode_examples(self, examples: ImageExamples) -> Tensors:
        if examples.labels is not None and examples.ids is None:
            examples.ids = LabelSet(names=self.label_names).ids(
                examples.labels, examples.path, self.settings.label_column, examples.role
            )
        return self._tensors(examples)

    def _tensors(self, examples: ImageExamples) -> Tensors:
        data = {"pixel_values": resize_images(examples, self.side, self.interpolation)}
        if examples.ids is not None:
            data["labels"] = torch.tensor(examples.ids, dtype=torch.long)
        return data

    # -- the model ------------------------------------------------------------------------------------------

    def load_model(self, raw: RawSplits) -> nn.Module:
        names = list(raw.labels or [])
        self.label_names = names
        spec = self.settings.model
        if spec is None:
            raise DataError(
                "image-classification needs --model (a timm model or folder, torchvision:NAME, or a "
                "Hugging Face image-classification folder)"
            )
        if spec.startswith(TORCHVISION):
            model = self._torchvision(spec[len(TORCHVISION) :], len(names))
        elif os.path.isdir(spec):
            config = _read_config(spec)
            if "architecture" in config:
                model = self._timm(f"local-dir:{spec}", spec, len(names))
            elif "model_type" in config:
                model = self._hugging_face(spec, names)
            else:
                raise DataError(
                    f"model folder {spec}: its config.json names neither a timm architecture nor a Hugging Face "
                    "model_type",
                    details={"path": spec},
                )
        elif os.path.exists(spec):
            raise DataError(f"model {spec} is a file, not a model folder", details={"path": spec})
        else:
            model = self._timm(spec, spec, len(names))
        return self._wrapped(model)

    def _wrapped(self, model: nn.Module) -> ImageClassifier:
        if self.settings.image_size is not None:
            self.side = self.settings.image_size
        return ImageClassifier(model.float().eval(), self.mean, self.std)

    def _timm(self, name: str, spec: str, classes: int) -> nn.Module:
        import timm

        if not name.startswith(("local-dir:", "hf-hub:")) and not timm.is_model(name):
            raise DataError(
                f"model {spec} is neither a folder nor a timm model name nor torchvision:NAME", details={"path": spec}
            )
        try:
            model = timm.create_model(name, pretrained=True, num_classes=classes)
        except Exception as err:  # timm raises many kinds (RuntimeError, OSError, hub errors)
            raise DataError(
                f"model {spec} does not load with timm ({first_line(err)})", details={"path": spec}
            ) from None
        self._timm_preprocessing(model)
        self.family = "timm"
        pretrained: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
        self.architecture = str(pretrained.get("architecture") or name)
        self.head = str(pretrained.get("classifier") or "")
        if not self.head or not isinstance(_submodule(model, self.head), nn.Module):
            self.head = _last_linear(model)
        return model

    def _timm_preprocessing(self, model: nn.Module) -> None:
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=model)
        self.side = int(cfg["input_size"][-1])
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.interpolation = str(cfg.get("interpolation", "bilinear"))

    def _torchvision(self, spec: str, classes: int) -> nn.Module:
        import torchvision

        name, _, file = spec.partition(":")
        where = f"{TORCHVISION}{spec}"
        try:
            model = torchvision.models.get_model(name, weights=None)
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"model {where}: torchvision has no model {name!r} ({first_line(err)})") from None
        self.mean, self.std, self.side, self.interpolation = IMAGENET_MEAN, IMAGENET_STD, 224, "bilinear"
        try:
            if file:
                state = _read_state_dict(file)
            else:
                weights = torchvision.models.get_model_weights(name).DEFAULT
                state = weights.get_state_dict(progress=False, check_hash=True)
                t = weights.transforms()
                self.mean, self.std = tuple(t.mean), tuple(t.std)
                self.side = int(t.crop_size[0])
                self.interpolation = str(t.interpolation.value)
            model.load_state_dict(state)
        except DataError:
            raise
        except Exception as err:  # a missing cache offline, a wrong state dict
            raise DataError(
                f"model {where}: its weights do not load ({first_line(err)})", details={"path": file or None}
            ) from None
        self.head = _last_linear(model)
        old = _submodule(model, self.head)
        _set_submodule(model, self.head, nn.Linear(old.in_features, classes))
        self.family = TORCHVISION_CONFIG
        self.architecture = name
        return model

    def _hugging_face(self, path: str, names: list[str]) -> nn.Module:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        quiet_transformers()
        self.processor = loaded(path, "image processor", AutoImageProcessor.from_pretrained)
        model = loaded(
            path,
            "image-classification model",
            lambda folder: AutoModelForImageClassification.from_pretrained(
                folder,
                num_labels=len(names),
                id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)},
                ignore_mismatched_sizes=True,
            ),
        )
        self._hf_preprocessing()
        self.family = "hf"
        self.head = "classifier" if hasattr(model, "classifier") else _last_linear(model)
        return model

    def _hf_preprocessing(self) -> None:
        p = self.processor
        size = getattr(p, "size", None) or {}
        side = size.get("height") or size.get("shortest_edge") or size.get("width") or 224
        self.side = int(side)
        self.mean = tuple(getattr(p, "image_mean", None) or IMAGENET_MEAN)
        self.std = tuple(getattr(p, "image_std", None) or IMAGENET_STD)
        self.interpolation = _RESAMPLE.get(int(getattr(p, "resample", 2) or 2), "bilinear")

    def default_targets(self, model: nn.Module) -> list[str]:
        return _as_suffixes(model, [name for name, _ in self._adaptable(model)], self.modules_to_save(model))

    def default_budget(self, model: nn.Module) -> str:
        """LoRA rank 4's count on the run's targets (``targets``, else the default ones) that LoRA can adapt: all
        but the grouped (depthwise) convolutions, for which PEFT's LoRA needs a rank divisible by their groups."""
        head = self.modules_to_save(model)
        given = self.settings.targets
        targets = (
            self._adaptable(model)
            if given is None
            else [(name, model.get_submodule(name)) for name in select_targets(model, given, None, head)]
        )  # the user's targets as glora.wrap will take them
        plain = [name for name, module in targets if getattr(module, "groups", 1) == 1]
        if given is None and len(plain) == len(targets):
            return BUDGET  # the run's targets: the default ones, the head left out
        if not plain:
            raise ConfigError(
                "the default budget is LoRA rank 4's count on the targets that are not grouped convolutions, and "
                "every target is one: give --budget (a parameter count, or lora:R with R a multiple of the groups)",
                details={"setting": "budget"},
            )
        return f"{BUDGET}:{','.join(_as_suffixes(model, plain, head))}"

    def _adaptable(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The default targets, by full name: the backbone's convolutions (grouped and depthwise ones too) and
        linears, or only a transformer's block linears; never the head or ``nn.MultiheadAttention``'s linears."""
        head = self.modules_to_save(model)
        transformer = any(n.endswith(_TRANSFORMER_LINEARS) for n, _ in model.named_modules())
        kinds: tuple[type[nn.Module], ...] = (nn.Linear,) if transformer else _LAYERS
        chosen = []
        for name, module in model.named_modules():
            if not isinstance(module, kinds) or any(name == h or name.startswith(h + ".") for h in head):
                continue
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            if isinstance(model.get_submodule(parent), nn.MultiheadAttention):
                continue
            if transformer and ("embed" in name or "embedding" in name):
                continue
            chosen.append((name, module))
        return chosen

    def modules_to_save(self, model: nn.Module) -> list[str]:
        return [f"model.{self.head}"] if self.head else []

    # -- reports --------------------------------------------------------------------------------------------

    def predict(self, model: nn.Module, examples: ImageExamples, device: torch.device) -> list[dict[str, Any]]:
        data = {"pixel_values": resize_images(examples, self.side, self.interpolation)}
        rows = self.class_rows(model, data, device)
        return [{"example": name, **row} for name, row in zip(examples.names, rows)]

    # -- the merged model -----------------------------------------------------------------------------------

    def save_merged(self, merged: nn.Module, folder: str, raw: RawSplits) -> None:
        inner: Any = merged.model if isinstance(merged, ImageClassifier) else merged
        names = list(raw.labels or self.label_names)
        os.makedirs(folder, exist_ok=True)
        if self.family == "timm":
            from timm.models import save_for_hf

            save_for_hf(inner, folder, model_config={"label_names": names}, safe_serialization=True)
            self._timm_preprocessing_config(os.path.join(folder, "config.json"))
        elif self.family == "hf":
            inner.config.id2label = dict(enumerate(names))
            inner.config.label2id = {n: i for i, n in enumerate(names)}
            inner.save_pretrained(folder)
            self.processor.save_pretrained(folder)
        else:
            from safetensors.torch import save_file

            save_file(
                {k: v.detach().contiguous() for k, v in inner.state_dict().items()},
                os.path.join(folder, "model.safetensors"),
            )
            config = {
                "library": TORCHVISION_CONFIG,
                "architecture": self.architecture,
                "num_classes": len(names),
                "label_names": names,
                "input_size": [3, self.side, self.side],
                "interpolation": self.interpolation,
                "mean": list(self.mean),
                "std": list(self.std),
            }
            with open(os.path.join(folder, "config.json"), "w") as fh:
                json.dump(config, fh, indent=2)

    def _timm_preprocessing_config(self, path: str) -> None:
        """The run's preprocessing in a timm ``config.json``: the input side, whole images (``crop_pct`` 1.0), the
        interpolation, mean and std; no test-time size."""
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
        cfg = config.setdefault("pretrained_cfg", {})
        if list(cfg.get("input_size", []))[1:] != [self.side, self.side]:
            cfg.pop("pool_size", None)
        for key in ("test_input_size", "test_crop_pct", "test_pool_size"):
            cfg.pop(key, None)
        cfg |= {"input_size": [3, self.side, self.side], "crop_pct": 1.0, "interpolation": self.interpolation}
        cfg |= {"mean": list(self.mean), "std": list(self.std)}
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)

    def load_merged(self, folder: str) -> nn.Module:
        config = _read_config(folder)
        if config.get("library") == TORCHVISION_CONFIG:
            import torchvision

            model = torchvision.models.get_model(
                config["architecture"], weights=None, num_classes=config["num_classes"]
            )
            model.load_state_dict(_read_state_dict(os.path.join(folder, "model.safetensors")))
            self.family, self.architecture = TORCHVISION_CONFIG, config["architecture"]
            self.head = _last_linear(model)
            self.label_names = list(config["label_names"])
            self.side, self.interpolation = int(config["input_size"][-1]), config["interpolation"]
            self.mean, self.std = tuple(config["mean"]), tuple(config["std"])
        elif "architecture" in config:
            model = self._timm(f"local-dir:{folder}", folder, int(config["num_classes"]))
            self.label_names = [str(n) for n in config.get("label_names") or range(int(config["num_classes"]))]
        else:
            from transformers import AutoImageProcessor, AutoModelForImageClassification

            self.processor = loaded(folder, "image processor", AutoImageProcessor.from_pretrained)
            model = loaded(folder, "image-classification model", AutoModelForImageClassification.from_pretrained)
            self._hf_preprocessing()
            self.family, self.head = "hf", "classifier"
            self.label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.side = int(self.settings.image_size or self.side) if self.family == "hf" else self.side
        return ImageClassifier(model.float().eval(), self.mean, self.std)


def _read_config(folder: str) -> dict[str, Any]:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise DataError(
            f"model folder {folder} holds no config.json: it is not a timm, torchvision or Hugging Face model folder",
            details={"path": folder},
        )
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError) as err:
        raise DataError(
            f"model folder {folder}: config.json does not parse ({first_line(err)})", details={"path": folder}
        ) from None
    if not isinstance(config, dict):
        raise DataError(f"model folder {folder}: config.json is not a JSON object", details={"path": folder})
    return config


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise DataError(f"weights file {path} does not exist", details={"path": path})
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"weights file {path} does not load ({first_line(err)})", details={"path": path}) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"weights file {path} holds no state dict", details={"path": path})
    return state


def _submodule(model: nn.Module, name: str) -> Any:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _last_linear(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise DataError(f"the {type(model).__name__} model has no linear layer to serve as its classification head")
    return names[-1]


def _as_suffixes(model: nn.Module, chosen: list[str], head: list[str]) -> list[str]:
    """``chosen`` as the list of their leaf names where those match exactly the same wrappable modules outside the
    head, else the full names."""
    leaves = sorted({n.rsplit(".", 1)[-1] for n in chosen})
    matched = [
        name
        for name, module in model.named_modules()
        if isinstance(module, _LAYERS)
        and name.rsplit(".", 1)[-1] in leaves
        and not any(name == h or name.startswith(h + ".") for h in head)
    ]
    if any(leaf.isdigit() for leaf in leaves) or set(matched) != set(chosen):
        return list(chosen)
    return leaves
