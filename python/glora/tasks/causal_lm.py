"""``glora run --task causal-lm``: GLoRA on a Hugging Face decoder (``AutoModelForCausalLM``), trained and searched
on next-token prediction over plain documents.

- **Model**: a local folder that ``AutoModelForCausalLM`` and ``AutoTokenizer`` load (offline: nothing is
  downloaded), in float32. A tokenizer without a pad token pads with its end-of-sequence token (else its unknown
  token); padding is always masked out, so the choice changes no figure, and the merged folder's tokenizer keeps it.
- **What the runner trains**: :class:`TokenNLL`, a thin module around the Hugging Face model (``.model``) whose
  forward returns, per sequence, ``[summed next-token NLL, predicted tokens]`` (shape ``(batch, 2)``), so the
  search's evaluator keeps two numbers per example instead of ``(tokens, vocab)`` logits. It adds no module of its
  own, so targets (found by name suffix), wrapping and merging see the Hugging Face model's layers. The training
  loss is total NLL / total predicted tokens of the batch (Hugging Face's own ``labels=`` loss on the same
  batch); the fitness ``neg_loss`` is minus that over the whole validation split.
- **Data** (:mod:`glora.data.documents`): a ``.txt`` file holds one document per line, a table (CSV, TSV, JSON
  Lines, JSON, Parquet, ``save_to_disk`` folder) one per row of ``--text-column``; blank documents are skipped.
  Missing validation and test splits are cut from ``--train`` (seeded; ``--validation-size``/``--test-size``).
- **Tokens**: each document is tokenised as the tokenizer does by default (a LLaMA tokenizer adds its BOS token),
  cut to ``max_len`` tokens (the rest is dropped, not windowed) and padded on the right to the split's longest
  document. A document predicts its tokens after the first; one with fewer than two tokens predicts nothing and is
  left out (a note says how many); a split left with none is a :class:`~glora.errors.DataError`. The ``"labels"``
  entry of each split is every document's count of predicted tokens (what the evaluator's metric weighs by).
- **Report**: ``perplexity`` (``exp`` of the loss) and ``loss`` (mean NLL per predicted token, in nats).
- **Predict**: greedy continuation of each document, :data:`MAX_NEW_TOKENS` new tokens at most, from the
  document's last ``max_len`` tokens; one document at a time (no padding).
- **Targets**: LLaMA, Mistral, Qwen, Gemma and other models named the same way: ``q_proj, k_proj, v_proj, o_proj,
  gate_proj, up_proj, down_proj``; GPT-2: ``c_attn, c_proj, c_fc`` (transformers' ``Conv1D``); GPT-NeoX / Pythia:
  ``query_key_value, dense, dense_h_to_4h, dense_4h_to_h``; any other model: every ``nn.Linear`` (and ``Conv1D``)
  but the output embedding. The default budget is LoRA r=8's count on the attention's query and value
  projections (``c_attn`` for GPT-2, ``query_key_value`` for GPT-NeoX), or on the targets when the model has no
  such projections.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from glora.data.documents import Documents, read_documents
from glora.data.splits import plan_splits
from glora.errors import ConfigError, DataError
from glora.layers.layer import is_hf_conv1d
from glora.tasks.base import EncodedSplits, RawSplits, Task, Tensors
from glora.tasks.hf_models import check_model_folder, loaded, quiet_transformers
from glora.training.batches import Batch, logits_of, sorted_batches, to_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["MAX_NEW_TOKENS", "CausalLM", "TokenNLL", "negative_token_loss", "token_loss"]

MAX_NEW_TOKENS = 32
"""The most tokens ``glora predict`` generates after each document."""
EVAL_BATCH = 32
"""Documents per forward in :meth:`CausalLM.evaluate`."""
ROWS_PER_FORWARD = 32
LOGITS_PER_FORWARD = 1 << 26
"""Without gradients, :class:`TokenNLL` runs the model on at most :data:`ROWS_PER_FORWARD` sequences of similar
length at a time, and no more than keep the logits within this many elements (256 MiB in float32), so that the
evaluator's large batches fit a GPU whatever the vocabulary and little time goes into padding."""

LLAMA_STYLE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GPT2_STYLE = ["c_attn", "c_proj", "c_fc"]
NEOX_STYLE = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
FAMILIES: dict[str, tuple[list[str], list[str]]] = {
    "llama": (LLAMA_STYLE, ["q_proj", "v_proj"]),
    "gpt2": (GPT2_STYLE, ["c_attn"]),
    "gpt_neox": (NEOX_STYLE, ["query_key_value"]),
}
"""Each family's default targets and the modules of its default budget (LoRA r=8)."""
MODEL_FAMILY: dict[str, str] = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "gemma": "llama",
    "gemma2": "llama",
    "gemma3_text": "llama",
    "olmo": "llama",
    "olmo2": "llama",
    "granite": "llama",
    "smollm3": "llama",
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
}
"""Hugging Face ``model_type`` -> family. A model of another type is of the family all of whose target names it
has (BLOOM is GPT-NeoX's), else it takes the fallback: every linear layer but the output embedding."""
DEFAULTS: dict[str, Any] = {
    "steps": 300,
    "batch_size": 8,
    "lr": 1e-3,
    "fitness": "neg_loss",
    "max_len": 128,
    "validation_size": 100,
    "test_size": 200,
}


def sequence_nll(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(batch, 2)``: each sequence's summed next-token NLL (float32) and its count of predicted tokens. A token
    is predicted when it and the token before it are both real (not padding)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    real = attention_mask.bool()
    predicted = real[:, 1:] & real[:, :-1]
    targets = input_ids[:, 1:].masked_fill(~predicted, -100)
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return torch.stack([nll.sum(1), predicted.sum(1).to(nll.dtype)], dim=1)


class TokenNLL(nn.Module):
    """A causal language model (``.model``) whose forward returns each sequence's ``[summed next-token NLL,
    predicted tokens]``, shape ``(batch, 2)``. It holds no module of its own: the model's layers keep their names
    under ``model.``, so target suffixes, wrapping and merging work as on the model itself."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Right-padded sequences; trailing columns of padding only are cut first. Without gradients (evaluation)
        the sequences run in groups of similar length (sorted, at most :data:`ROWS_PER_FORWARD`, logits within
        :data:`LOGITS_PER_FORWARD`), each cut to its longest, and come back in their order."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(1)
        width = max(1, int(lengths.max())) if len(lengths) else 1
        input_ids, attention_mask = input_ids[:, :width], attention_mask[:, :width]
        if torch.is_grad_enabled() or input_ids.shape[0] <= 1:
            return sequence_nll(self.model, input_ids, attention_mask)
        order = torch.argsort(lengths, stable=True)
        sorted_lengths = lengths[order].tolist()
        vocab = self._vocab_size()
        parts, start = [], 0
        while start < len(order):
            stop = start + 1
            while (
                stop < len(order)
                and stop - start < ROWS_PER_FORWARD
                and (stop + 1 - start) * max(1, sorted_lengths[stop]) * vocab <= LOGITS_PER_FORWARD
            ):
                stop += 1
            rows = order[start:stop]
            cut = max(1, int(sorted_lengths[stop - 1]))
            parts.append(sequence_nll(self.model, input_ids[rows, :cut], attention_mask[rows, :cut]))
            start = stop
        out = torch.empty(len(order), 2, dtype=parts[0].dtype, device=parts[0].device)
        out[order] = torch.cat(parts)
        return out

    def _vocab_size(self) -> int:
        size = getattr(self.model.config, "vocab_size", None)
        return int(size) if isinstance(size, int) and size > 0 else 1 << 16

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """The model's own gradient checkpointing switch."""
        self.model.gradient_checkpointing_enable(**kwargs)


def token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The training loss: the batch's total next-token NLL over its predicted tokens (a :class:`TokenNLL`)."""
    out = logits_of(model, batch)
    return out[:, 0].sum() / out[:, 1].sum().clamp(min=1)


def negative_token_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The fitness ``neg_loss``: minus the mean NLL per predicted token over the outputs of :class:`TokenNLL`."""
    return -(outputs[:, 0].sum() / outputs[:, 1].sum().clamp(min=1))


def _inner(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, TokenNLL) else model


class CausalLM(Task):
    """Next-token prediction with a Hugging Face decoder on plain documents (the module's docstring)."""

    name = "causal-lm"
    fitness = ("neg_loss",)
    report = ("perplexity", "loss")
    headline_higher_is_better = False
    defaults = DEFAULTS
    compiled_search = False  # TokenNLL's evaluation forward groups rows by length: data-dependent, graph breaks

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.tokenizer: Optional[PreTrainedTokenizerBase] = None

    # data
    def read_data(self) -> RawSplits:
        """The documents of ``--train``, and of ``--validation`` and ``--test`` or, for those not given, cut from
        ``--train`` (seeded; ``validation_size`` and ``test_size`` size those cut, ``train_size`` caps the train
        split). A given file is used whole, as for the other tasks."""
        s = self.settings
        if s.train is None:
            raise DataError(
                "causal-lm needs --train FILE: a .txt file (a document per line) or a table with a text column",
                details={"path": None},
            )
        train = self.read_examples(s.train, "train")
        given = {role: getattr(s, role) for role in ("validation", "test") if getattr(s, role)}
        cut = [role for role in ("validation", "test") if role not in given]
        sizes = {"train": s.train_size, "validation": s.validation_size, "test": s.test_size}
        index, record = plan_splits(len(train), None, cut, sizes, s.seed)
        splits = {role: train.subset(idx) for role, idx in index.items()}
        for role, path in given.items():
            splits[role] = self.read_examples(path, role)
        record |= {"files": {"train": s.train, **given}, "sizes": {role: len(d) for role, d in splits.items()}}
        return RawSplits(splits["train"], splits["validation"], splits.get("test"), None, record)

    def read_examples(self, path: str, role: str, labelled: bool = True) -> Documents:
        """The documents of ``path``; they need no label, so ``labelled`` changes nothing."""
        return read_documents(path, self.settings.text_column, role)

    # model
    def load_model(self, raw: RawSplits) -> nn.Module:
        path = self.settings.model
        if path is None:
            raise ConfigError("causal-lm needs --model: a Hugging Face decoder folder", details={"setting": "model"})
        return self._load(path)

    def load_merged(self, folder: str) -> nn.Module:
        return self._load(folder)

    def _load(self, path: str) -> TokenNLL:
        check_model_folder(path)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        quiet_transformers()
        loaded(path, "config.json", lambda p: AutoConfig.from_pretrained(p, local_files_only=True))
        tokenizer = loaded(path, "tokenizer", lambda p: AutoTokenizer.from_pretrained(p, local_files_only=True))
        model = loaded(
            path, "causal language model", lambda p: AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
        )
        if tokenizer.pad_token is None:
            fill = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
            if fill is None:
                raise DataError(
                    f"model folder {path}: its tokenizer has no pad, end-of-sequence or unknown token to pad with",
                    details={"path": path},
                )
            tokenizer.pad_token = fill
        tokenizer.padding_side = "right"
        self.tokenizer = tokenizer
        return TokenNLL(model.float().eval())

    def default_targets(self, model: nn.Module) -> list[str]:
        family = self._family(model)
        if family is not None:
            return [s for s in FAMILIES[family][0] if _matches_layers(model, s)]
        output = _output_embedding(model)
        names = [
            name
            for name, module in model.named_modules()
            if (isinstance(module, nn.Linear) or is_hf_conv1d(module)) and module is not output
        ]
        if not names:
            raise DataError(f"{type(_inner(model)).__name__} has no linear layer for GLoRA to wrap (pass --targets)")
        return names

    def default_budget(self, model: nn.Module) -> str:
        family = self._family(model)
        if family is None:
            return "lora:8"
        modules = [s for s in FAMILIES[family][1] if _matches_layers(model, s)]
        return f"lora:8:{','.join(modules)}" if modules else "lora:8"

    def _family(self, model: nn.Module) -> Optional[str]:
        """The model's family: by its ``model_type`` when known (and its budget modules are there), else the
        family all of whose target names it has; None for the fallback."""
        config = getattr(_inner(model), "config", None)
        family = MODEL_FAMILY.get(str(getattr(config, "model_type", "")))
        if family is not None and all(_matches_layers(model, s) for s in FAMILIES[family][1]):
            return family
        for name, (targets, _) in FAMILIES.items():
            if all(_matches_layers(model, s) for s in targets):
                return name
        return None

    # tensors
    def encode(self, raw: RawSplits) -> EncodedSplits:
        return EncodedSplits(
            self.encode_examples(raw.train),
            self.encode_examples(raw.validation),
            self.encode_examples(raw.test) if raw.test is not None else None,
        )

    def encode_examples(self, examples: Documents) -> Tensors:
        """``input_ids`` and ``attention_mask`` (right-padded to the longest document, at most ``max_len``
        tokens) and ``labels``: each document's count of predicted tokens. Documents that predict nothing (fewer
        than two tokens) are left out."""
        tokenizer = self._tokenizer()
        max_len = self.settings.max_len or DEFAULTS["max_len"]
        tokenizer.padding_side = "right"
        enc = tokenizer(examples.texts, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
        ids, mask = enc["input_ids"].long(), enc["attention_mask"].long()
        counts = (mask[:, 1:].bool() & mask[:, :-1].bool()).sum(1) if ids.shape[1] > 1 else torch.zeros(len(ids))
        keep = counts > 0
        if not bool(keep.any()):
            raise DataError(
                f"{examples.source}: no document has two tokens or more after tokenisation (nothing to predict)",
                details={"path": examples.source},
            )
        if not bool(keep.all()):
            print(
                f"note: {int((~keep).sum())} of {len(keep)} documents of {examples.source} have fewer than two "
                "tokens and are left out"
            )
        ids, mask, counts = ids[keep], mask[keep], counts[keep]
        width = int(mask.sum(1).max())
        return {"input_ids": ids[:, :width], "attention_mask": mask[:, :width], "labels": counts.long()}

    def _tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise RuntimeError("load the model first (load_model or load_merged): the tokenizer comes with it")
        return self.tokenizer

    # training, search, report
    def loss_fn(self) -> Callable[[nn.Module, Batch], torch.Tensor]:
        return token_loss

    def fitness_metric(self, name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if name != "neg_loss":
            raise ConfigError(f"fitness must be neg_loss for causal-lm, got {name!r}", details={"setting": "fitness"})
        return negative_token_loss

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, data: Tensors, device: torch.device) -> dict[str, float]:
        was_training = model.training
        model.eval().to(device)
        total = torch.zeros(2, dtype=torch.float64, device=device)
        inputs = {k: data[k] for k in ("input_ids", "attention_mask")}
        try:
            for batch in sorted_batches(inputs, EVAL_BATCH)[0]:  # totals: the order does not matter
                total += model(**to_device(batch, device)).double().sum(0)
        finally:
            model.train(was_training)
        loss = float(total[0] / total[1].clamp(min=1))
        return {"perplexity": math.exp(loss) if loss < 700 else math.inf, "loss": loss}

    # files
    def save_merged(self, merged: nn.Module, folder: str, raw: RawSplits) -> None:
        """The Hugging Face model (``save_pretrained``) and its tokenizer; ``AutoModelForCausalLM`` loads it."""
        inner = _inner(merged)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inner.save_pretrained(folder)  # type: ignore[operator]
        self._tokenizer().save_pretrained(folder)

    @torch.inference_mode()
    def predict(
        self, model: nn.Module, examples: Documents, device: torch.device, max_new_tokens: int = MAX_NEW_TOKENS
    ) -> list[dict[str, Any]]:
        """``{"prompt", "continuation"}`` per document: greedy decoding of at most ``max_new_tokens`` tokens
        after the document's last ``max_len`` tokens (the continuation stops early at the end-of-sequence token)."""
        from transformers import GenerationConfig

        tokenizer = self._tokenizer()
        inner = _inner(model)
        inner.eval().to(device)
        max_len = self.settings.max_len or DEFAULTS["max_len"]
        eos = getattr(inner.config, "eos_token_id", None)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
        )
        rows: list[dict[str, Any]] = []
        for text in examples.texts:
            ids = tokenizer(text)["input_ids"][-max_len:]
            if not ids and tokenizer.bos_token_id is not None:
                ids = [tokenizer.bos_token_id]
            if not ids:
                rows.append({"prompt": text, "continuation": ""})
                continue
            prompt = torch.tensor([ids], device=device)
            out = inner.generate(  # type: ignore[operator]
                input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config
            )
            continuation = tokenizer.decode(out[0, len(ids) :].tolist(), skip_special_tokens=True)
            rows.append({"prompt": text, "continuation": str(continuation)})
        return rows


def _output_embedding(model: nn.Module) -> Optional[nn.Module]:
    get = getattr(_inner(model), "get_output_embeddings", None)
    return get() if callable(get) else None


def _matches_layers(model: nn.Module, suffix: str) -> bool:
    """Whether ``suffix`` names at least one layer GLoRA wraps (and nothing else) in ``model``."""
    output = _output_embedding(model)
    found = [m for n, m in model.named_modules() if n == suffix or n.endswith("." + suffix)]
    return bool(found) and all((isinstance(m, nn.Linear) or is_hf_conv1d(m)) and m is not output for m in found)
