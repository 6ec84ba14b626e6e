"""The GLoRA layer: a frozen base layer plus the five weight-shared support tensors A..E (METHOD.md section 1).

One class serves ``nn.Linear``, ``nn.Conv1d/2d/3d`` and Hugging Face ``Conv1D``: each is viewed as a matrix
``W0`` of shape ``out x in`` (a conv as ``out x (in/groups * prod(kernel))``, ``Conv1D`` transposed), so A, B, C
act on that matrix and the merged weight is reshaped back.

Forward paths for a fixed configuration do no work for absent terms:

- A or B is ``lora_r`` (or the layer is a conv with A or B active): ``W' = W0 + W0 * A + B`` is formed once and
  the base operation runs with it (the same weight-sized gradient product as full fine-tuning).
- otherwise (A, B in vector / scalar / none on a linear layer): ``x W0^T`` is scaled per output by ``1 + A``
  and B adds ``sum(x) * B``; nothing weight-sized is allocated.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .choices import GENES, NONE, SCALAR, VECTOR, Choice, choice_cost, offered_choices, parse_choice

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face ``Conv1D`` (GPT-2), recognised without importing transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def is_supported(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, *_CONV_TYPES)) or is_hf_conv1d(module)


def base_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _CONV_TYPES):
        return "conv"
    if is_hf_conv1d(module):
        return "hf_conv1d"
    raise TypeError(
        f"GLoRA supports nn.Linear, nn.Conv1d/2d/3d and transformers' Conv1D, not {type(module).__name__}"
    )


class GLoRALayer(nn.Module):
    """A frozen base layer with GLoRA support tensors stored at maximum rank ``max_rank``.

    Stored factors (METHOD.md): ``Ad, Bd`` (out x R), ``Au, Bu`` (R x in), ``Cd`` (in x R), ``Cu`` (R x 1) and the
    vectors ``D``, ``E`` (out). Down factors and D, E start at zero, so a fresh layer computes the base layer for
    every configuration.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        max_rank: int,
        ranks: tuple[int, ...],
        add_bias: bool = True,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        self.kind = base_kind(base_layer)
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        weight = base_layer.weight
        if self.kind == "hf_conv1d":
            self.in_features, self.out_features = weight.shape
        else:
            self.out_features = weight.shape[0]
            self.in_features = weight[0].numel()
        self.max_rank = max_rank
        self.has_bias = base_layer.bias is not None
        enabled = {"A": True, "B": True, "C": self.has_bias or add_bias, "D": self.has_bias, "E": self.has_bias or add_bias}
        self.choices: dict[str, tuple[str, ...]] = {g: offered_choices(g, ranks, enabled[g]) for g in GENES}

        factory = {"device": weight.device, "dtype": torch.float32 if not weight.is_floating_point() or weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype}
        out, inn, r = self.out_features, self.in_features, max_rank
        self.Ad = nn.Parameter(torch.zeros(out, r, **factory))
        self.Au = nn.Parameter(torch.empty(r, inn, **factory))
        self.Bd = nn.Parameter(torch.zeros(out, r, **factory))
        self.Bu = nn.Parameter(torch.empty(r, inn, **factory))
        if enabled["C"]:
            self.Cd = nn.Parameter(torch.zeros(inn, r, **factory))
            self.Cu = nn.Parameter(torch.empty(r, 1, **factory))
        if enabled["D"]:
            self.D = nn.Parameter(torch.zeros(out, **factory))
        if enabled["E"]:
            self.E = nn.Parameter(torch.zeros(out, **factory))
        self._init_up_factors(init)

        self._fixed: Optional[dict[str, Choice]] = None
        self._sampler: Optional[Callable[["GLoRALayer"], dict[str, str]]] = None

    def _init_up_factors(self, init: str) -> None:
        for name in ("Au", "Bu", "Cu"):
            p = getattr(self, name, None)
            if p is None:
                continue
            if init == "xavier":
                nn.init.xavier_uniform_(p)
            else:
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))

    # ----------------------------------------------------------------------------------------- configuration
    def validate(self, config: dict[str, str]) -> dict[str, Choice]:
        """Check a ``{gene: choice}`` dict for this layer and return it parsed."""
        if not isinstance(config, dict):
            raise TypeError(f"a layer configuration must be a dict of genes to choices, got {type(config).__name__}")
        unknown = sorted(set(config) - set(GENES))
        if unknown:
            raise ValueError(f"unknown gene(s) {unknown}; genes are {', '.join(GENES)}")
        missing = [g for g in GENES if g not in config]
        if missing:
            raise ValueError(f"configuration lacks gene(s) {missing}")
        parsed = {}
        for g in GENES:
            choice = parse_choice(g, config[g], self.max_rank)
            if choice.kind != NONE and self.choices[g] == (NONE,):
                raise ValueError(
                    f"gene {g} is disabled on this layer (it has no bias and add_bias=False, or D on a bias-free "
                    f"layer); only 'none' is allowed, got {config[g]!r}"
                )
            parsed[g] = choice
        return parsed

    def set_config(self, config: Optional[dict[str, str]]) -> None:
        """Fix the configuration (``None`` returns to sampling by the installed sampler)."""
        self._fixed = None if config is None else self.validate(config)

    def set_sampler(self, sampler: Optional[Callable[["GLoRALayer"], dict[str, str]]]) -> None:
        self._sampler = sampler
        self._fixed = None

    @property
    def fixed_config(self) -> Optional[dict[str, str]]:
        return None if self._fixed is None else {g: c.name for g, c in self._fixed.items()}

    def cost(self, config: dict[str, str]) -> int:
        parsed = self.validate(config)
        return sum(choice_cost(g, parsed[g], self.out_features, self.in_features) for g in GENES)

    def choice_costs(self) -> dict[str, dict[str, int]]:
        return {
            g: {name: choice_cost(g, parse_choice(g, name, self.max_rank), self.out_features, self.in_features) for name in names}
            for g, names in self.choices.items()
        }

    def _current(self) -> dict[str, Choice]:
        if self._fixed is not None:
            return self._fixed
        if self._sampler is None:
            raise RuntimeError(
                "this GLoRA layer has neither a fixed subnet nor a sampler: call glora.set_subnet(model, subnet) "
                "or glora.supernet_mode(model, generator)"
            )
        return {g: parse_choice(g, name, self.max_rank) for g, name in self._sampler(self).items()}

    # ------------------------------------------------------------------------------------- support tensors
    def _weight_matrix(self) -> torch.Tensor:
        w = self.base_layer.weight
        return w.t() if self.kind == "hf_conv1d" else w.reshape(self.out_features, self.in_features)

    def _factor(self, down: torch.Tensor, up: torch.Tensor, choice: Choice) -> Optional[torch.Tensor]:
        """A or B as a tensor broadcastable to out x in (or None)."""
        if choice.kind == NONE:
            return None
        if choice.kind == SCALAR:
            return down[0, 0]
        if choice.kind == VECTOR:
            return down[:, :1]
        return down[:, : choice.rank] @ up[: choice.rank, :]

    def _vector(self, vec: torch.Tensor, choice: Choice) -> Optional[torch.Tensor]:
        if choice.kind == NONE:
            return None
        return vec[:1] if choice.kind == SCALAR else vec

    def _c_vector(self, choice: Choice) -> Optional[torch.Tensor]:
        if choice.kind == NONE:
            return None
        if choice.kind == VECTOR:
            return self.Cd[:, 0]
        return (self.Cd[:, : choice.rank] @ self.Cu[: choice.rank, :]).squeeze(1)

    def effective_bias(self, cfg: dict[str, Choice], w0: torch.Tensor) -> Optional[torch.Tensor]:
        """``b' = b0 + b0 * D + E + W0 @ C``, or the base bias when C, D, E are all absent."""
        b0 = self.base_layer.bias
        terms = []
        d = self._vector(self.D, cfg["D"]) if cfg["D"].kind != NONE else None
        if d is not None:
            terms.append(b0 * d)
        e = self._vector(self.E, cfg["E"]) if cfg["E"].kind != NONE else None
        if e is not None:
            terms.append(e.expand(self.out_features))
        c = self._c_vector(cfg["C"])
        if c is not None:
            terms.append(torch.mv(w0.to(c.dtype), c))
        if not terms:
            return b0
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total if b0 is None else b0 + total

    def effective_weight(self, cfg: dict[str, Choice], w0: torch.Tensor) -> torch.Tensor:
        """``W' = W0 + W0 * A + B`` as an out x in matrix (W0 itself when A and B are absent)."""
        a = self._factor(self.Ad, self.Au, cfg["A"])
        b = self._factor(self.Bd, self.Bu, cfg["B"])
        if a is None and b is None:
            return w0
        base = w0 if b is None else w0 + b
        return base if a is None else torch.addcmul(base, w0, a)

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self._current()
        w0 = self._weight_matrix()
        bias = self.effective_bias(cfg, w0)
        a_kind, b_kind = cfg["A"].kind, cfg["B"].kind
        if self.kind != "conv" and a_kind != "lora" and b_kind != "lora":
            return self._factorised_linear(x, cfg, w0, bias)
        weight = self.effective_weight(cfg, w0)
        return self._run_base(x, weight, bias)

    def _run_base(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        weight = weight.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
        if self.kind == "conv":
            return self.base_layer._conv_forward(x, weight.reshape(self.base_layer.weight.shape), bias)
        return F.linear(x, weight, bias)

    def _factorised_linear(
        self, x: torch.Tensor, cfg: dict[str, Choice], w0: torch.Tensor, bias: Optional[torch.Tensor]
    ) -> torch.Tensor:
        y = self._run_base(x, w0, bias)
        a = self._factor(self.Ad, self.Au, cfg["A"])
        if a is not None:
            # x (W0 * a)^T = (x W0^T) * a; recovering x W0^T as y - b' keeps the bias fused in the base product,
            # so a zero A leaves the output bit-identical to the base layer's in every precision.
            plain = y if bias is None else y - bias.to(y.dtype)
            y = torch.addcmul(y, plain, a.squeeze(-1).to(y.dtype))
        b = self._factor(self.Bd, self.Bu, cfg["B"])
        if b is not None:
            y = y + x.sum(dim=-1, keepdim=True) * b.squeeze(-1).to(y.dtype)
        return y

    # ------------------------------------------------------------------------------------------------ merge
    @torch.no_grad()
    def merged_tensors(self, config: dict[str, str]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """W', b' in the base layer's parameter layout and dtype, computed in float32 (or wider) from W0."""
        cfg = self.validate(config)
        w0 = self._weight_matrix()
        compute = torch.promote_types(w0.dtype, torch.float32)
        w0c = w0.to(compute)
        weight = self.effective_weight(cfg, w0c).to(compute)
        bias = self.effective_bias(cfg, w0c)
        base_w = self.base_layer.weight
        if self.kind == "hf_conv1d":
            weight = weight.t()
        else:
            weight = weight.reshape(base_w.shape)
        weight = weight.to(base_w.dtype).contiguous()
        if bias is not None:
            ref = self.base_layer.bias if self.base_layer.bias is not None else base_w
            bias = bias.to(compute).to(ref.dtype).contiguous()
        return weight, bias

    def extra_repr(self) -> str:
        return f"kind={self.kind}, out={self.out_features}, in={self.in_features}, max_rank={self.max_rank}"
