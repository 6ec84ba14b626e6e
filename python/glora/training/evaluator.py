"""Batched subnet evaluation, the fitness of the search (``glora.search(model, SubnetEvaluator(...), ...)``).

The validation data moves to the device once, cut into batches of ``batch_size`` examples; token data (a dict with a
2-D ``attention_mask``) goes in order of length, each batch drops the padding columns no example in it attends to
(and with ``batch_tokens`` holds as many examples as keep examples x columns within it, instead of ``batch_size``),
while the metric sees the logits in the data's order (not with labels per token, whose outputs must keep one width,
nor with ``compile=True``, whose graph wants one shape). Each subnet's ``W'``, ``b'`` are folded into the layers
once (not per batch), so the forward is the plain base model's; inside ``search_scope()`` (``glora.search`` enters
it for the whole search) they are kept for later subnets with the same choices at that layer (``FoldCache``, within
``fold_cache_bytes``: a search's children share most choices with their parents) and dropped at the exit, so
training between calls never meets a stale fold; scores are read back only after the whole batch of subnets is
queued, so the host folds the next subnet while the device still runs the last one; ``subnets_per_pass`` > 1 stacks
several subnets' weights and runs them together with batched GEMMs, which keeps a large GPU busy on small models.
With ``compile=True`` nothing is folded: each subnet enters one compiled forward as codes (``coded_forward``).
Inference mode and autocast throughout. Under ``torchrun`` every process runs the same search (same seed) and the
evaluator spreads each batch of subnets over the processes (round robin) and gathers the scores, so every process
sees the same scores; give the search a log on rank 0 only.

``per_example(subnets, examples)`` scores each subnet on each of some examples (the metric per example: correct
or not for accuracy, minus the example's cross-entropy for neg_loss), which a raced search asks for stage by stage
(``glora.search(..., racing=True)``); each set of examples it is given is cut into batches once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from glora.layers.fold_cache import FoldCache
from glora.training.batches import (
    Batch,
    Data,
    data_length,
    labels_of,
    logits_of,
    sorted_batches,
    take,
    to_device,
    token_labels,
)
from glora.training.coded_forward import CodedForward
from glora.training.distributed import process_group
from glora.tuner.subnets import Subnet, validate_subnet
from glora.tuner.wrapping import layers_or_raise

Metric = Callable[[torch.Tensor, torch.Tensor], Union[float, torch.Tensor]]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(-1) == labels).float().mean()


def negative_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits.float(), labels)


METRICS: dict[str, Metric] = {"accuracy": accuracy, "neg_loss": negative_loss}
PER_EXAMPLE: dict[str, Metric] = {
    "accuracy": lambda logits, labels: (logits.argmax(-1) == labels).float(),
    "neg_loss": lambda logits, labels: -F.cross_entropy(logits.float(), labels, reduction="none"),
}
"""The metrics a raced search can use, per example: their mean over the examples is the whole-data metric."""
_KEPT_PARTS = 4
"""Views of parts of the data an evaluator keeps on its device (a raced search's stages are three)."""
_CPU_CACHE_BYTES = 1 << 30
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _metric(metric: object) -> Metric:
    """The metric of ``metric`` (a name of ``METRICS`` or a callable); raise naming the argument otherwise."""
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(
                f"metric must be one of {list(METRICS)} or a callable(logits, labels) -> float, got {metric!r}"
            )
        return METRICS[metric]
    if not callable(metric):
        raise TypeError(f"metric must be a name or a callable, got {type(metric).__name__}")
    return metric


def _name_of(metric: object) -> Optional[str]:
    """A metric's name: the name it was given by, else a callable's ``__name__`` (None for a lambda)."""
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", None)
    return name if isinstance(name, str) and name and not name.startswith("<") else None


def _check_options(
    batch_size: Optional[int],
    precision: Optional[str],
    subnets_per_pass: int,
    distributed: Optional[bool],
    compile: bool,
    fold_cache_bytes: Optional[int],
    batch_tokens: Optional[int],
) -> None:
    """Raise ValueError naming the argument, its value and what is allowed for a wrong one."""
    if batch_tokens is not None and (
        isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1
    ):
        raise ValueError(f"batch_tokens must be a positive integer or None (batches by examples), got {batch_tokens!r}")
    if fold_cache_bytes is not None and (
        isinstance(fold_cache_bytes, bool) or not isinstance(fold_cache_bytes, int) or fold_cache_bytes < 0
    ):
        raise ValueError(
            f"fold_cache_bytes must be a non-negative integer (0 keeps no folded weights) or None, "
            f"got {fold_cache_bytes!r}"
        )
    if isinstance(subnets_per_pass, bool) or not isinstance(subnets_per_pass, int) or subnets_per_pass < 1:
        raise ValueError(f"subnets_per_pass must be a positive integer, got {subnets_per_pass!r}")
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    if compile and subnets_per_pass > 1:
        raise ValueError("compile=True evaluates one subnet per pass; leave subnets_per_pass at 1")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None (the whole data), got {batch_size!r}")
    if precision is not None and (not isinstance(precision, str) or precision not in PRECISIONS):
        raise ValueError(f"precision must be one of {list(PRECISIONS)} or None, got {precision!r}")
    if distributed is not None and not isinstance(distributed, bool):
        raise ValueError(f"distributed must be True, False or None, got {distributed!r}")


def _default_cache_bytes(device: torch.device) -> int:
    """Folded weights an evaluator keeps by default: a quarter of the GPU's free memory, 1 GiB on a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 4
    return _CPU_CACHE_BYTES


def _device(device: object) -> torch.device:
    """``device`` as a torch.device; raise ValueError naming the argument for what torch does not parse."""
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a str, a torch.device or None, got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not a device torch knows: {err}") from None
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return parsed


def _repeat(batch: Batch, k: int) -> Batch:
    if k == 1:
        return batch
    if isinstance(batch, dict):
        return {key: v.repeat(k, *[1] * (v.dim() - 1)) for key, v in batch.items()}
    return tuple(v.repeat(k, *[1] * (v.dim() - 1)) for v in batch)


@dataclass
class _View:
    """Some of the data on the device, cut into batches, with the labels and the index that puts the batches'
    concatenated outputs back in the data's order (None when kept)."""

    batches: list[Batch]
    restore: Optional[torch.Tensor]
    labels: torch.Tensor

    def in_order(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.restore is None else logits[self.restore]


class SubnetEvaluator:
    """Scores subnets of a wrapped model on fixed data; callable on a batch of subnets (one score each)."""

    def __init__(
        self,
        model: nn.Module,
        data: Data,
        metric: Union[str, Metric] = "accuracy",
        device: Optional[Union[str, torch.device]] = None,
        batch_size: Optional[int] = None,
        precision: Optional[str] = None,
        subnets_per_pass: int = 1,
        distributed: Optional[bool] = None,
        compile: bool = False,
        fold_cache_bytes: Optional[int] = None,
        batch_tokens: Optional[int] = None,
    ) -> None:
        self.layers = layers_or_raise(model)
        n = data_length(data)
        if n == 0:
            raise ValueError("the evaluation data is empty")
        self._metric_name = _name_of(metric)
        metric = _metric(metric)
        _check_options(batch_size, precision, subnets_per_pass, distributed, compile, fold_cache_bytes, batch_tokens)
        if subnets_per_pass > 1 and not all(layer.stacks_plans for _, layer in self.layers):
            raise ValueError(
                "subnets_per_pass > 1 needs a model whose GLoRA layers are all linear (with nn.Linear's forward)"
            )
        self.rank, self.world = process_group() if distributed in (None, True) else (0, 1)
        if distributed and self.world == 1:
            raise ValueError("distributed=True needs an initialised torch.distributed process group (torchrun)")
        self.device = _device(device) if device is not None else next(model.parameters()).device
        self.model = model
        self.metric = metric
        model.to(self.device)
        self.dtype = PRECISIONS[precision or ("bf16" if self.device.type == "cuda" else "fp32")]
        self.k = subnets_per_pass
        self._size = batch_size or n
        self._tokens = batch_tokens
        self._data = data  # as given: the source of the examples per_example asks for
        whole = to_device(take(data, torch.arange(n)), self.device)
        # token data goes in order of length, each batch trimmed to its widest example, and the logits are put back
        # in order; not for outputs per token (their widths must agree) nor compiled (one shape, one graph)
        self._per_token = token_labels(whole)
        self._trim = not compile and not self._per_token
        self._whole = self._view(whole)
        self.labels = self._whole.labels
        self._parts: dict[tuple[int, ...], _View] = {}
        # a built-in metric's per-example form; not for a callable that only shares a built-in metric's name
        name = self._metric_name or ""
        self._per_example = PER_EXAMPLE[name] if name in METRICS and metric is METRICS[name] else None
        self.subnets_evaluated = 0
        self._coded: Optional[CodedForward] = CodedForward(self.layers, self.device) if compile else None
        self.fold_cache = FoldCache(_default_cache_bytes(self.device) if fold_cache_bytes is None else fold_cache_bytes)
        self._keeping = 0

    @contextmanager
    def search_scope(self) -> Iterator[SubnetEvaluator]:
        """The span of one search (``glora.search`` enters its fitness's ``search_scope()``): folded weights are kept
        between calls inside it and dropped when it ends, also on an error. Meanwhile the model's weights must change
        only in ways autograd's version counter sees, if at all: a fused optimizer's step or a write through ``.data``
        would leave kept folds stale. Scopes nest; the outermost one's end drops the folds."""
        self._keeping += 1
        try:
            yield self
        finally:
            self._keeping -= 1
            if self._keeping == 0:
                self.fold_cache.clear()

    def _view(self, data: Batch) -> _View:
        """``data`` (on the device) cut into batches."""
        batches, restore = sorted_batches(data, self._size, self._trim, self._tokens)
        return _View(batches, None if restore is None else restore.to(self.device), labels_of(data))

    @property
    def batches(self) -> list[Batch]:
        """The whole data's batches on the device, in the order they run."""
        return self._whole.batches

    @property
    def examples(self) -> int:
        """How many examples each subnet is scored on (a raced search's ``racing=True`` takes it)."""
        return len(self.labels)

    @property
    def metric_name(self) -> Optional[str]:
        """What the scores are: the metric's name (``"accuracy"``, ``"neg_loss"``), a callable metric's
        ``__name__``, or None for an anonymous one; ``glora.search`` records it in the run log."""
        return self._metric_name

    @torch.inference_mode()
    def _logits(self, k: int, view: _View) -> list[torch.Tensor]:
        """Logits of the k folded subnets over the view's data."""
        outs: list[list[torch.Tensor]] = [[] for _ in range(k)]
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype if autocast else torch.float32, enabled=autocast):
            for batch in view.batches:
                logits = logits_of(self.model, _repeat(batch, k))
                for i, part in enumerate(logits.chunk(k)):
                    outs[i].append(part.float())
        return [view.in_order(torch.cat(o)) for o in outs]

    def _plans(self, subnets: Sequence[Subnet]) -> list[dict[str, tuple]]:
        plans = []
        for i, subnet in enumerate(subnets):
            try:
                plans.append(validate_subnet(self.model, subnet, self.layers))
            except (KeyError, ValueError, TypeError) as err:
                raise type(err)(f"subnet {i} of the batch: {err}") from None
        return plans

    def _spread(self, plans: list[dict[str, tuple]], score: Callable[[list[dict[str, tuple]]], list]) -> list:
        """``score`` of every plan, in order: this process's share of them under torchrun, gathered."""
        if self.world == 1:
            return score(plans)
        import torch.distributed as dist

        gathered: list[list] = [[] for _ in range(self.world)]
        dist.all_gather_object(gathered, score(plans[self.rank :: self.world]))
        return [gathered[i % self.world][i // self.world] for i in range(len(plans))]

    def __call__(self, subnets: Sequence[Subnet]) -> list[float]:
        plans = self._plans(subnets)
        scores = self._spread(plans, lambda mine: [float(s) for s in self._scores(mine, self._whole, self.metric)])
        for j, score in enumerate(scores):
            if not math.isfinite(score):
                raise ValueError(f"the metric returned {score} for subnet {j} of the batch")
        self.subnets_evaluated += len(subnets)
        return scores

    def per_example(self, subnets: Sequence[Subnet], examples: Sequence[int]) -> list[list[float]]:
        """Each subnet's score on each of ``examples`` (indices into the data), the metric per example: one row per
        subnet. For the metrics "accuracy" and "neg_loss", neither compiled nor with labels per token."""
        metric = self._per_example
        if metric is None or self._coded is not None or self._per_token:
            why = (
                "compile=True"
                if self._coded is not None
                else "labels per token"
                if self._per_token
                else f"metric {self._metric_name or self.metric!r}"
            )
            raise ValueError(
                f"scores per example (a raced search) need the metric 'accuracy' or 'neg_loss' of an evaluator "
                f"without compile=True or labels per token; this one has {why}"
            )
        key = tuple(int(i) for i in examples)
        if key and (min(key) < 0 or max(key) >= self.examples):
            raise ValueError(f"examples must be indices below {self.examples}, got {min(key)}..{max(key)}")
        index = torch.tensor(key, dtype=torch.long)
        plans = self._plans(subnets)
        if not key:
            return [[] for _ in plans]
        # every example in some order: the whole data's batches, their scores reordered
        view, pick = (self._whole, index) if len(set(key)) == self.examples else (self._part(key, index), None)

        def rows_of(mine: list[dict[str, tuple]]) -> list[list[float]]:
            scores = [torch.as_tensor(s) for s in self._scores(mine, view, metric)]
            return [(s if pick is None else s[pick]).tolist() for s in scores]

        rows = self._spread(plans, rows_of)
        self.subnets_evaluated += len(subnets)
        return rows

    def _part(self, key: tuple[int, ...], index: torch.Tensor) -> _View:
        """The view of the examples ``key``, cut into batches once; the few most recent are kept (a raced search
        asks for the same stages every generation)."""
        view = self._parts.pop(key, None) or self._view(to_device(take(self._data, index), self.device))
        self._parts[key] = view
        while len(self._parts) > _KEPT_PARTS:
            del self._parts[next(iter(self._parts))]
        return view

    def _scores(self, plans: list[dict[str, tuple]], view: _View, metric: Metric) -> list[Union[float, torch.Tensor]]:
        """This process's scores under ``metric`` on the view, in order (on the host); folding the next subnet
        overlaps the device work of the last."""
        was_training = self.model.training
        self.model.eval()
        pending: list[Union[float, torch.Tensor]] = []
        cache = self.fold_cache if self._keeping > 0 else None
        try:
            if self._coded is not None:
                pending.extend(self._coded.scores(plans, lambda: self.metric(self._compiled_logits(), self.labels)))
            else:
                for start in range(0, len(plans), self.k):
                    group = plans[start : start + self.k]
                    for name, layer in self.layers:
                        layer.fold([p[name] for p in group], self.dtype, cache)
                    for logits in self._logits(len(group), view):
                        pending.append(metric(logits, view.labels))
            return [s.cpu() if isinstance(s, torch.Tensor) else s for s in pending]
        finally:
            for _, layer in self.layers:
                layer.unfold()
            self.model.train(was_training)

    @torch.inference_mode()
    def _compiled_logits(self) -> torch.Tensor:
        """Logits of the subnet whose codes are set, over the whole data, through the compiled forward (copied out
        of the forward's outputs, which its next call reuses)."""
        assert self._coded is not None
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype if autocast else torch.float32, enabled=autocast):
            return self._whole.in_order(
                torch.cat(
                    [
                        self._coded.forward(self.model, batch).to(torch.float32, copy=True)
                        for batch in self._whole.batches
                    ]
                )
            )

    def evaluate(self, subnet: Subnet) -> float:
        return self([subnet])[0]
