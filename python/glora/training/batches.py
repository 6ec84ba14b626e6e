"""Data handling shared by training and evaluation: batch indexing, device moves, and reading logits.

Data is a tuple of tensors ``(inputs..., labels)``, a dict of tensors with a ``"labels"`` entry (Hugging Face
style), or any map-style ``torch.utils.data.Dataset`` whose items are such tuples or dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch.utils.data import Dataset, default_collate

Batch = Union[tuple, dict]
Data = Union[Sequence[torch.Tensor], Mapping[str, torch.Tensor], Dataset]


def data_length(data: Data) -> int:
    if isinstance(data, Mapping):
        lengths = {len(v) for v in data.values()}
    elif isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        lengths = {len(t) for t in data}
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return len(data)
    else:
        raise TypeError(
            f"data must be a tuple of tensors, a dict of tensors or a map-style Dataset, got {type(data).__name__}"
        )
    if len(lengths) != 1:
        raise ValueError(f"the tensors of the data differ in length: {sorted(lengths)}")
    return lengths.pop()


def take(data: Data, index: torch.Tensor) -> Batch:
    """The examples at ``index`` as one batch."""
    if isinstance(data, Mapping):
        return {k: v[index] for k, v in data.items()}
    if isinstance(data, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in data):
        return tuple(t[index] for t in data)
    return default_collate([data[i] for i in index.tolist()])


def _token_mask(batch: object) -> Optional[torch.Tensor]:
    """A dict batch's 2-D ``attention_mask``, or None."""
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    return mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[1] > 0 else None


def token_labels(data: Data) -> bool:
    """Whether ``data`` carries a label per token (``labels`` of the attention mask's shape): outputs per token,
    whose width follows the inputs' (token classification, a language model's logits)."""
    mask = _token_mask(data)
    labels = data.get("labels") if isinstance(data, Mapping) else None
    return mask is not None and isinstance(labels, torch.Tensor) and labels.shape[:2] == mask.shape


def token_widths(data: Data) -> Optional[torch.Tensor]:
    """Each example's width without its trailing padding (its last attended column + 1; at least 1), on the CPU,
    for data with a 2-D ``attention_mask``; else None."""
    mask = _token_mask(data)
    if mask is None:
        return None
    columns = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask.ne(0) * columns).amax(1).clamp(min=1).cpu()


def trim_padding(batch: Batch, width: Optional[int] = None) -> Batch:
    """``batch`` without the trailing token columns that are padding in every example: for a dict batch with a 2-D
    ``attention_mask``, every entry whose first two dimensions are the mask's (token ids, the mask, token types,
    per-token features or labels) is cut after the last column any example attends to (``width``, where the
    caller knows it: reading it from a mask on a GPU would wait for the device). A model that masks its padding
    gives the same outputs at the real tokens either way (up to float rounding), for less work."""
    mask = _token_mask(batch)
    if mask is None:
        return batch
    if width is None:
        widths = token_widths(batch)
        width = int(widths.max()) if widths is not None and len(widths) else mask.shape[1]
    if width >= mask.shape[1]:
        return batch
    shape = mask.shape

    def cut(v: Any) -> Any:
        return v[:, :width] if isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[:2] == shape else v

    return {k: cut(v) for k, v in batch.items()}  # type: ignore[union-attr]


_GPU_BATCH_TOKENS = 65_536


def evaluation_batch_size(device: torch.device) -> int:
    """Examples per evaluation batch of the classification tasks and the search's fitness: 256 on a GPU (few
    launches); 64 on a CPU, where batches sorted by length and trimmed of padding take half the time of the padded
    batches of 256 on MiniLM and the movie sentences (docs/benchmarks.md, "Token padding"). On a GPU token data is
    cut by :func:`evaluation_batch_tokens` instead."""
    return 256 if device.type == "cuda" else 64


def evaluation_batch_tokens(device: torch.device) -> Optional[int]:
    """Tokens (examples x the widest one's columns) per evaluation batch of token data on a GPU, where a forward of a
    small model costs the host about as much for 500 short sentences as for 250 (a MiniLM search's fitness took
    0.66x the time with its 500 validation sentences in one batch instead of two: docs/benchmarks.md, "Search and
    merge"), while long inputs get fewer examples per batch; None on a CPU (examples per batch only)."""
    return _GPU_BATCH_TOKENS if device.type == "cuda" else None


def sorted_batches(
    data: Data, size: Optional[int], trim: bool = True, tokens: Optional[int] = None
) -> tuple[list[Batch], Optional[torch.Tensor]]:
    """``data`` cut into batches of at most ``size`` examples (None: no limit) for evaluation. With ``trim``, data
    with a 2-D ``attention_mask`` goes in order of its examples' last attended column and each batch is trimmed to
    its own widest example (:func:`trim_padding`); with ``tokens`` as well, such data is cut by tokens instead of
    by ``size``: a batch ends before its examples times its widest example's columns would pass ``tokens`` (one
    example at least). The second value is then the index that puts the batches' concatenated outputs back in the
    data's order (None when the order is kept). Without ``trim`` (outputs per token, whose widths must agree; a
    compiled forward, which wants one shape) the data is cut as it is, by ``size``."""
    n = data_length(data)
    most = max(1, n) if size is None else size
    widths = token_widths(data) if trim else None
    if widths is None:
        return [take(data, torch.arange(i, min(i + most, n))) for i in range(0, n, most)], None
    order = torch.argsort(widths, stable=True)
    w = widths[order].tolist()
    batches, i = [], 0
    while i < n:
        j = i + 1  # widths ascend, so a batch's widest example is its last
        while j < n and (j - i < most if tokens is None else (j + 1 - i) * w[j] <= tokens):
            j += 1
        batches.append(trim_padding(take(data, order[i:j]), int(w[j - 1])))
        i = j
    return batches, torch.argsort(order)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def labels_of(batch: Batch) -> torch.Tensor:
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise KeyError("a dict batch needs a 'labels' entry for the built-in loss and metrics")
        return batch["labels"]
    return batch[-1]


def logits_of(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Run the model on a batch's inputs and return its logits (``.logits``, the first of a tuple, or the tensor)."""
    if isinstance(batch, Mapping):
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
    else:
        out = model(*batch[:-1])
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


class ShuffledBatches:
    """The training batches in a fixed, seeded order: epoch ``e`` is a permutation of the examples seeded by
    ``(seed, e)``, cut into whole batches (the remainder of an epoch is left out). With ``trim`` each batch drops
    the padding no example in it attends to (:func:`trim_padding`). With several processes, process ``rank`` takes
    the ``rank``-th of each group of ``world`` consecutive batches, so together they see the same examples as one
    process with ``world`` times the batch."""

    def __init__(
        self,
        data: Data,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
        trim: bool = True,
    ) -> None:
        self.data = data
        self.n_examples = data_length(data)
        if self.n_examples < batch_size:
            raise ValueError(f"the data holds {self.n_examples} examples, fewer than one batch of {batch_size}")
        if self.n_examples < batch_size * world:
            raise ValueError(
                f"the data holds {self.n_examples} examples, fewer than one global batch of {batch_size} x {world} processes"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.rank = rank
        self.world = world
        self.trim = trim
        # the examples' widths read once: per batch, from a mask on a GPU, each step would wait for the device
        self.widths = token_widths(data) if trim else None

    def __getitem__(self, position: int) -> Batch:
        """This process's batch number ``position``, on the device."""
        position = position * self.world + self.rank
        epoch, k = divmod(position, self.n_examples // self.batch_size)
        order = torch.randperm(self.n_examples, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        index = order[k * self.batch_size : (k + 1) * self.batch_size]
        batch = take(self.data, index)
        if self.trim:
            batch = trim_padding(batch, None if self.widths is None else int(self.widths[index].max()))
        return to_device(batch, self.device)
