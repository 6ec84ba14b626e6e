"""The ``text-classification`` task: a Hugging Face encoder folder and labelled texts.

A folder whose config names a ``...ForSequenceClassification`` architecture keeps that head (re-sized to the
labels); any other encoder is mean-pooled over its tokens, as sentence encoders are trained, under a new linear
head (:class:`MeanPoolClassifier`). Texts and labels come from CSV, TSV, JSON Lines, JSON, Parquet or a
``save_to_disk`` folder (``glora.data.tables``), or from the movie sentences of ``vaderSentiment``'s source
distribution (``glora.tasks.movie``), the built-in example (``glora.tasks.settings.BUILTIN``).

The merged model is written with ``save_pretrained`` beside its tokenizer, the label names in its config's
``id2label``; a mean-pooled one also writes its head as ``head.safetensors`` (``weight``, ``bias``): logits =
head(mean of the encoder's last hidden states over the attention mask).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from glora.data.labels import LabelSet
from glora.data.splits import plan_splits
from glora.data.tables import check_texts, read_columns
from glora.errors import DataError
from glora.tasks.base import EncodedSplits, RawSplits, Tensors
from glora.tasks.classification import ClassificationTask
from glora.tasks.hf_models import check_model_folder, default_model_path, loaded, quiet_transformers
from glora.tasks.movie import is_movie_data, read_sentences

BERT_LINEARS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
DISTILBERT_LINEARS = ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]
HEAD_FILE = "head.safetensors"
MOVIE_LABELS = ("negative", "positive")


class MeanPoolClassifier(nn.Module):
    """An encoder with mean pooling over tokens and a linear head."""

    def __init__(self, encoder: nn.Module, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, classes)  # type: ignore[union-attr, arg-type]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))


class TextClassification(ClassificationTask):
    name = "text-classification"
    defaults = {**ClassificationTask.defaults, "steps": 640, "max_len": 128}

    def read_data(self) -> RawSplits:
        s = self.settings
        if s.train is None:
            raise DataError("text-classification needs --train FILE (texts and labels)", details={"path": None})
        texts, values, _ = self.read_examples(s.train, "train")
        label_set = LabelSet.from_train(values, s.train, s.label_column)
        train_ids = label_set.ids(values, s.train, s.label_column, "train")
        given = {role: getattr(s, role) for role in ("validation", "test") if getattr(s, role)}
        cut = [role for role in ("validation", "test") if role not in given]
        sizes = {"train": s.train_size, "validation": s.validation_size, "test": s.test_size}
        index, record = plan_splits(len(texts), train_ids, cut, sizes, s.seed)
        splits: dict[str, Any] = {
            role: ([texts[i] for i in idx], [train_ids[i] for i in idx]) for role, idx in index.items()
        }
        for role, path in given.items():
            role_texts, role_values, _ = self.read_examples(path, role)
            splits[role] = (role_texts, label_set.ids(role_values, path, s.label_column, role))
        record |= {"files": {"train": s.train, **given}, "sizes": {role: len(v[1]) for role, v in splits.items()}}
        return RawSplits(splits["train"], splits["validation"], splits.get("test"), label_set.names, record)

    def read_examples(self, path: str, role: str, labelled: bool = True) -> Any:
        """``(texts, labels, path)`` of one file (labels None when not ``labelled``)."""
        s = self.settings
        if is_movie_data(path):
            texts, ints = read_sentences(path)
            return texts, ([MOVIE_LABELS[y] for y in ints] if labelled else None), path
        columns = [s.text_column, s.label_column] if labelled else [s.text_column]
        table = read_columns(path, columns, role)
        texts = check_texts(table[s.text_column], path, s.text_column, role)
        return texts, (table[s.label_column] if labelled else None), path

    def load_model(self, raw: RawSplits) -> nn.Module:
        from transformers import AutoConfig

        path = self.settings.model or default_model_path()
        check_model_folder(path)
        quiet_transformers()
        config = loaded(path, "config.json", AutoConfig.from_pretrained)
        labels = raw.labels or []
        self.tokenizer = loaded(path, "tokenizer", _tokenizer)
        self.label_names = list(labels)
        if _has_classification_head(config):
            from transformers import AutoModelForSequenceClassification

            model = loaded(
                path,
                "sequence-classification model",
                lambda p: AutoModelForSequenceClassification.from_pretrained(
                    p,
                    num_labels=len(labels),
                    id2label=dict(enumerate(labels)),
                    label2id={n: i for i, n in enumerate(labels)},
                    ignore_mismatched_sizes=True,
                ),
            )
            return model.float()
        encoder = loaded(path, "encoder", _encoder)
        encoder.config.id2label = dict(enumerate(labels))
        encoder.config.label2id = {n: i for i, n in enumerate(labels)}
        return MeanPoolClassifier(encoder.float(), len(labels))

    def default_targets(self, model: nn.Module) -> list[str]:
        names = [n for n, _ in model.named_modules()]
        if any(n.endswith("attention.self.query") for n in names):
            return list(BERT_LINEARS)
        if any(n.endswith("q_lin") for n in names):
            return list(DISTILBERT_LINEARS)
        head = set(self.modules_to_save(model))
        return [
            n
            for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(n == h or n.startswith(h + ".") for h in head)
        ]

    def default_budget(self, model: nn.Module) -> str:
        """LoRA r=8 on the attention's query and value, the common LoRA setting, where the names are known."""
        names = [n for n, _ in model.named_modules()]
        if any(n.endswith("attention.self.query") for n in names):
            return "lora:8:query,value"
        if any(n.endswith("q_lin") for n in names):
            return "lora:8:q_lin,v_lin"
        return "lora:8"

    def modules_to_save(self, model: nn.Module) -> list[str]:
        if isinstance(model, MeanPoolClassifier):
            return ["head"]
        return [name for name in ("classifier", "score") if hasattr(model, name)][:1]

    def encode(self, raw: RawSplits) -> EncodedSplits:
        return EncodedSplits(
            self._tensors(*raw.train),
            self._tensors(*raw.validation),
            self._tensors(*raw.test) if raw.test is not None else None,
        )

    def _tensors(self, texts: list[str], labels: Any) -> Tensors:
        enc = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.settings.max_len, return_tensors="pt"
        )
        data = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if labels is not None:
            data["labels"] = torch.tensor(list(labels), dtype=torch.long)
        return data

    def encode_examples(self, examples: Any) -> Tensors:
        texts, labels, path = examples
        ids = (
            None if labels is None else LabelSet(self.label_names).ids(labels, path, self.settings.label_column, "test")
        )
        return self._tensors(texts, ids)

    def predict(self, model: nn.Module, examples: Any, device: torch.device) -> list[dict[str, Any]]:
        texts = examples[0]
        rows = self.class_rows(model, self._tensors(texts, None), device)
        return [{"text": t, **row} for t, row in zip(texts, rows)]

    def save_merged(self, merged: nn.Module, folder: str, raw: RawSplits) -> None:
        if isinstance(merged, MeanPoolClassifier):
            from safetensors.torch import save_file

            merged.encoder.save_pretrained(folder)  # type: ignore[operator]
            head = {k: v.detach().contiguous() for k, v in merged.head.state_dict().items()}
            save_file(head, os.path.join(folder, HEAD_FILE))
        else:
            merged.save_pretrained(folder)  # type: ignore[operator]
        self.tokenizer.save_pretrained(folder)

    def load_merged(self, folder: str) -> nn.Module:
        check_model_folder(folder)
        quiet_transformers()
        self.tokenizer = loaded(folder, "tokenizer", _tokenizer)
        if not os.path.exists(os.path.join(folder, HEAD_FILE)):
            from transformers import AutoModelForSequenceClassification

            model = loaded(folder, "model", AutoModelForSequenceClassification.from_pretrained)
            self.label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
            return model.float()
        from safetensors.torch import load_file

        encoder = loaded(folder, "encoder", _encoder)
        head = load_file(os.path.join(folder, HEAD_FILE))
        self.label_names = [encoder.config.id2label[i] for i in range(len(head["bias"]))]
        model = MeanPoolClassifier(encoder.float(), len(head["bias"]))
        model.head.load_state_dict(head)
        return model


def _has_classification_head(config: Any) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in (getattr(config, "architectures", None) or []))


def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _encoder(path: str) -> Any:
    """The folder's base model, without BERT's pooler (mean pooling replaces it) where it has one."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_pretrained(path)
