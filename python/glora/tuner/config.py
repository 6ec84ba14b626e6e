"""`GLoRAConfig`: what to wrap and how, in the manner of PEFT's config objects."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

from glora.layers.choices import normalise_kinds, normalise_ranks

TargetSpec = Union[str, list[str], None]

BATCHED_WEIGHTS_MODES = ("auto", "always")
"""The values of ``GLoRAConfig.batched_weights``."""


def check_batched_weights(mode: object) -> str:
    """``mode`` if it is one of ``BATCHED_WEIGHTS_MODES``; raise ValueError naming them otherwise."""
    if not isinstance(mode, str) or mode not in BATCHED_WEIGHTS_MODES:
        raise ValueError(
            f"batched_weights: batched weights mode must be one of {list(BATCHED_WEIGHTS_MODES)}, got {mode!r}"
        )
    return mode


def check_target_spec(name: str, value: object) -> TargetSpec:
    """``value`` as ``target_modules``/``exclude_modules`` keep it (a list, a regular expression, None); raise
    ValueError naming ``name`` for any other type, an empty list or name, and a pattern that does not compile."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{name} must be a non-empty list of non-empty strings, got {value!r}")
        return list(value)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, a list of strings or None, got {type(value).__name__}")
    if value != "all-linear":
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"{name}={value!r} is not a valid regular expression: {err}") from None
    return value


@dataclass
class GLoRAConfig:
    """Configuration of a GLoRA wrap.

    Args:
        rank: the LoRA rank offered by the search when ``ranks`` is not given.
        ranks: several ranks offered together (nested slices of one factor of size ``max(ranks)``).
        target_modules: which layers to wrap. A string is a regular expression that must match the whole module
            name; a list holds names or suffixes (``"qkv"`` matches ``"blocks.0.attn.qkv"``); ``"all-linear"``
            wraps every ``nn.Linear`` and Hugging Face ``Conv1D`` outside ``modules_to_save``.
        exclude_modules: layers never wrapped, in the same forms as ``target_modules``.
        add_bias: on layers without a bias (an LLM's projections), False keeps the base architecture, as PEFT's
            GloraConfig does: C and E, which would create a bias, are not offered there, so a merged model still
            loads into its original class. True follows the paper (C and E may create one; a merge then gives the
            layer a bias and warns with ``BiasAddedWarning``). Layers with a bias are offered all terms either way.
        modules_to_save: extra modules that stay trainable and are saved with the adapter (a new head).
        init: initialisation of the up factors: ``"kaiming"`` (default) or ``"xavier"``.
        choices: the kinds each support tensor offers, a subset of the paper's (genes not named offer all of
            theirs; ``"lora"`` stands for every rank), e.g. ``{"B": ["lora", "none"]}``. B's vector and scalar add
            ``b_i * sum(x)`` to every output, so one optimizer step moves the output of a wide layer (an MLP's down
            projection, where ``sum(x)`` is in the tens) hundreds of times more than a row scale or a bias does;
            leaving them out steadied supernet training in ``benches/supernet_stability.py``.
        batched_weights: how a training forward forms the weights of linear layers with a frozen base; all are
            built by one autograd node when the forward starts (``glora.layers.batched_weights``), which took the
            supernet step from 1.25x to 0.96x PEFT LoRA's time on ViT-B/16 (``benches/results/train_step_gpu.json``
            against ``train_step_node_gpu.json``). ``"auto"`` (default) keeps each ``W'`` for the backward only
            where the plain layer keeps a cast copy of ``W0`` anyway (a float32 base under bf16 autocast) and
            rebuilds it in the backward elsewhere (an LLM's bf16 weights), so peak memory stays the plain layer's.
            ``"always"`` keeps every ``W'``: a shorter host-bound step (the LLaMA-style proxy at 0.80x PEFT LoRA's
            time against 0.97x, ``benches/results/host_overhead_always_cpu.json`` against
            ``host_overhead_cpu.json``) at one more copy of the adapted weights in peak memory (1.02x PEFT LoRA's
            on the 1 B decoder, ``train_step_always_gpu.json``, against 0.88x in ``train_step_llama_gpu.json``).
            Change it on a wrapped model with ``glora.set_batched_weights(model, mode)``.
            Under gradient checkpointing and on convolutions layers run their own path in either mode.
    """

    rank: int = 4
    ranks: Optional[list[int]] = None
    target_modules: TargetSpec = None
    exclude_modules: TargetSpec = None
    add_bias: bool = False
    modules_to_save: Optional[list[str]] = None
    init: str = "kaiming"
    choices: Optional[dict[str, list[str]]] = None
    batched_weights: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        self.ranks = list(normalise_ranks(self.rank, self.ranks)) if self.ranks is not None else None
        if self.target_modules is None:
            raise ValueError("target_modules is required: module names, suffixes, a regular expression or 'all-linear'")
        self.target_modules = check_target_spec("target_modules", self.target_modules)
        self.exclude_modules = check_target_spec("exclude_modules", self.exclude_modules)
        if not isinstance(self.add_bias, bool):
            raise ValueError(f"add_bias must be True or False, got {self.add_bias!r}")
        if self.modules_to_save is not None:
            if not isinstance(self.modules_to_save, (list, tuple)) or not all(
                isinstance(n, str) and n for n in self.modules_to_save
            ):
                raise ValueError(
                    f"modules_to_save must be a list of module names or suffixes, or None, got {self.modules_to_save!r}"
                )
            self.modules_to_save = list(self.modules_to_save)
        kinds = normalise_kinds(self.choices)
        self.choices = None if kinds is None else {g: list(k) for g, k in kinds.items()}
        check_batched_weights(self.batched_weights)
        if not isinstance(self.init, str) or self.init not in ("kaiming", "xavier"):
            raise ValueError(f"init must be 'kaiming' or 'xavier', got {self.init!r}")

    @property
    def offered_ranks(self) -> tuple[int, ...]:
        return normalise_ranks(self.rank, self.ranks)

    @property
    def max_rank(self) -> int:
        return max(self.offered_ranks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GLoRAConfig:
        """The config of ``data`` (``to_dict``'s form); keys it does not know are ignored."""
        if not isinstance(data, dict):
            raise TypeError(f"a GLoRAConfig dict must be a dict, got {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
