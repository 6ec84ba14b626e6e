"""`GLoRAConfig`: what to wrap and how, in the manner of PEFT's config objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

from glora.layers.choices import normalise_kinds, normalise_ranks

TargetSpec = Union[str, list[str], None]


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
    """

    rank: int = 4
    ranks: Optional[list[int]] = None
    target_modules: TargetSpec = None
    exclude_modules: TargetSpec = None
    add_bias: bool = False
    modules_to_save: Optional[list[str]] = None
    init: str = "kaiming"
    choices: Optional[dict[str, list[str]]] = None

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        self.ranks = list(normalise_ranks(self.rank, self.ranks)) if self.ranks is not None else None
        if self.target_modules is None:
            raise ValueError("target_modules is required: module names, suffixes, a regular expression or 'all-linear'")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if not value or not all(isinstance(v, str) and v for v in value):
                    raise ValueError(f"{name} must be a non-empty list of non-empty strings, got {value!r}")
                setattr(self, name, list(value))
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string, a list of strings or None, got {type(value).__name__}")
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)
        kinds = normalise_kinds(self.choices)
        self.choices = None if kinds is None else {g: list(k) for g, k in kinds.items()}
        if self.init not in ("kaiming", "xavier"):
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
    def from_dict(cls, data: dict[str, Any]) -> "GLoRAConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
