"""The GLoRA layer: a frozen base layer plus the five weight-shared support tensors A..E (METHOD.md section 1).

One class serves ``nn.Linear``, ``nn.Conv1d/2d/3d`` and Hugging Face ``Conv1D``: each is viewed as a matrix
``W0`` of shape ``out x in`` (a conv as ``out x (in/groups * prod(kernel))``, ``Conv1D`` transposed), so A, B, C
act on that matrix and the merged weight is reshaped back.

The forward does no work for absent terms. Linear layers (and ``Conv1D``) run as one autograd node
(``linear_function.GLoRALinear``) that forms ``W'``, ``b'`` and the product with as few kernels as the plan
needs, or, when the wrapped model's forward has built their weights already (``batched_weights``), as a plain
``F.linear`` on them; convolutions form ``W'`` with plain ops and run the base convolution with it.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glora.layers.batched_weights import Built, versions, linear as batched_linear
from glora.layers.choices import GENES, NONE, Choice, choice_cost, offered_choices, parse_choice
from glora.layers.dtypes import compute_dtype
from glora.layers.functional import effective_bias, effective_weight, fused_weight, uses_fused_weight
from glora.layers.linear_function import glora_linear

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
        add_bias: bool = False,
        init: str = "kaiming",
        kinds: Optional[dict[str, Sequence[str]]] = None,
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
        self.choices: dict[str, tuple[str, ...]] = {g: offered_choices(g, ranks, enabled[g], (kinds or {}).get(g)) for g in GENES}
        self._disabled = frozenset(g for g in GENES if not enabled[g])

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

        self._offered = tuple(tuple(parse_choice(g, name, max_rank) for name in self.choices[g]) for g in GENES)
        self._fixed: Optional[tuple[Choice, ...]] = None
        self._folded: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]] = None
        self._sampler: Optional[Callable[["GLoRALayer"], tuple[Choice, ...]]] = None
        self._built: Optional[Built] = None

    def __getstate__(self) -> dict:
        """Pickling and deep copies leave out the weights built for the last forward (tensors in a graph)."""
        state = dict(super().__getstate__())
        state["_built"] = None
        return state

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
    def validate(self, config: dict[str, str]) -> tuple[Choice, ...]:
        """Check a ``{gene: choice}`` dict for this layer; return its plan (one parsed choice per gene, in ``GENES``
        order), the form every other method of the layer takes."""
        if not isinstance(config, dict):
            raise TypeError(f"a layer configuration must be a dict of genes to choices, got {type(config).__name__}")
        unknown = sorted(set(config) - set(GENES))
        if unknown:
            raise ValueError(f"unknown gene(s) {unknown}; genes are {', '.join(GENES)}")
        missing = [g for g in GENES if g not in config]
        if missing:
            raise ValueError(f"configuration lacks gene(s) {missing}")
        plan = []
        for g, offered in zip(GENES, self._offered):
            choice = parse_choice(g, config[g], self.max_rank)
            if all(choice.kind != o.kind for o in offered):
                if g in self._disabled:
                    raise ValueError(
                        f"gene {g} is disabled on this layer (it has no bias and add_bias=False, or D on a bias-free "
                        f"layer); only 'none' is allowed, got {config[g]!r}"
                    )
                raise ValueError(f"gene {g} offers only {', '.join(self.choices[g])} on this model (GLoRAConfig.choices); got {config[g]!r}")
            plan.append(choice)
        return tuple(plan)

    def set_config(self, config: Optional[dict[str, str]]) -> None:
        """Fix the configuration (``None`` returns to sampling by the installed sampler)."""
        self.set_plan(None if config is None else self.validate(config))

    def set_plan(self, plan: Optional[tuple[Choice, ...]]) -> None:
        """Fix an already validated plan (``None`` returns to sampling)."""
        self._fixed = plan

    def set_sampler(self, sampler: Optional[Callable[["GLoRALayer"], tuple[Choice, ...]]]) -> None:
        """Install a sampler returning one choice per gene (in ``GENES`` order) for every forward."""
        self._sampler = sampler
        self._fixed = None

    @property
    def fixed_config(self) -> Optional[dict[str, str]]:
        return None if self._fixed is None else {g: c.name for g, c in zip(GENES, self._fixed)}

    def cost(self, plan: tuple[Choice, ...]) -> int:
        return sum(choice_cost(g, c, self.out_features, self.in_features) for g, c in zip(GENES, plan))

    def choice_costs(self) -> dict[str, dict[str, int]]:
        return {
            g: {name: choice_cost(g, parse_choice(g, name, self.max_rank), self.out_features, self.in_features) for name in names}
            for g, names in self.choices.items()
        }

    def draw(self, generator: torch.Generator) -> tuple[Choice, ...]:
        """One configuration drawn uniformly and independently per gene from the offered choices."""
        return self.plan_of(torch.randint(0, 1 << 30, (len(GENES),), generator=generator).tolist())

    def plan_of(self, draws: list[int]) -> tuple[Choice, ...]:
        """The configuration that ``draw`` makes of one random integer per gene."""
        return tuple(options[d % len(options)] for options, d in zip(self._offered, draws))

    def _current(self) -> tuple[Choice, ...]:
        if self._fixed is not None:
            return self._fixed
        if self._sampler is None:
            raise RuntimeError(
                "this GLoRA layer has neither a fixed subnet nor a sampler: call glora.set_subnet(model, subnet) "
                "or glora.supernet_mode(model, generator)"
            )
        return self._sampler(self)

    # ------------------------------------------------------------------------------------------------ forward
    def _weight_matrix(self) -> torch.Tensor:
        w = self.base_layer.weight
        if self.kind == "linear":
            return w
        return w.t() if self.kind == "hf_conv1d" else w.reshape(self.out_features, self.in_features)

    def _factors(self) -> tuple[Optional[torch.Tensor], ...]:
        p = self._parameters  # straight from the dict: this runs on every training forward
        return (p["Ad"], p["Au"], p["Bd"], p["Bu"], p.get("Cd"), p.get("Cu"), p.get("D"), p.get("E"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._folded is not None:
            return self._run_folded(x)
        w0, b0 = self._weight_matrix(), self.base_layer.bias
        built = self._built
        if built is not None and self._current_build(built, x):
            return batched_linear(self, built, x, w0, b0)
        plan = self._current()
        if all(c.kind == NONE for c in plan):
            return self._run_base(x, w0, b0)
        if self.trains_through_node(w0, b0):
            return glora_linear(x, w0, b0, plan, compute_dtype(x), self._factors())
        # convolutions, and a base the user unfroze (the node gives W0 and b0 no gradient), use plain autograd
        p = self._parameters
        bias = effective_bias(plan, w0, b0, p.get("Cd"), p.get("Cu"), p.get("D"), p.get("E"))
        if uses_fused_weight(plan, w0):
            weight = fused_weight(plan, w0, p["Ad"], p["Au"], p["Bd"], p["Bu"], compute_dtype(x))
        else:
            weight = effective_weight(plan, w0, p["Ad"], p["Au"], p["Bd"], p["Bu"])
        return self._run_base(x, weight, bias)

    def trains_through_node(self, w0: torch.Tensor, b0: Optional[torch.Tensor]) -> bool:
        """Whether training runs through a GLoRA autograd node (``GLoRALinear`` or the batched weights): a linear
        or ``Conv1D`` layer whose base is frozen (the nodes give ``W0`` and ``b0`` no gradient)."""
        return self.kind != "conv" and not (w0.requires_grad or (b0 is not None and b0.requires_grad))

    def _current_build(self, built: Built, x: torch.Tensor) -> bool:
        """Whether the weights built when the model's forward began are still this layer's (see batched_weights)."""
        return (
            (self._fixed is None or self._fixed == built.plan)
            and torch.is_grad_enabled()
            and compute_dtype(x) == built.dtype
            and versions(self._factors()) == built.versions
        )

    def _run_base(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The base operation with ``weight`` (out x in) and ``bias``, cast to the input's dtype when it differs
        (under autocast a float32 input is left to autocast, which casts once)."""
        if weight.dtype != x.dtype:
            weight = weight.to(x.dtype)
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        if self.kind == "conv":
            return self.base_layer._conv_forward(x, weight.reshape(self.base_layer.weight.shape), bias)
        return F.linear(x, weight, bias)

    # ---------------------------------------------------------------------------------------- folded (eval)
    @torch.no_grad()
    def fold(self, plans: list[tuple[Choice, ...]], dtype: torch.dtype) -> None:
        """Fix ``W'``, ``b'`` of one plan (or of k stacked ones) for inference; see ``unfold``.

        With k configurations the layer expects inputs whose leading dimension is k blocks of one batch and
        applies configuration i to block i (a batched GEMM), so k subnets are evaluated in one pass.
        """
        merged = [self.merged_matrix(p, dtype) for p in plans]
        matrices = [w for w, _ in merged]
        biases = [b for _, b in merged]
        if len(plans) == 1:
            self._folded = (matrices[0], biases[0])
            return
        if self.kind == "conv":
            raise ValueError("several subnets per pass need linear layers; this layer is a convolution")
        if any(b is None for b in biases) and any(b is not None for b in biases):
            zero = torch.zeros(self.out_features, dtype=dtype, device=matrices[0].device)
            biases = [zero if b is None else b for b in biases]
        self._folded = (torch.stack(matrices), None if biases[0] is None else torch.stack(biases))

    def unfold(self) -> None:
        self._folded = None

    def _run_folded(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._folded
        if weight.dim() == 2:
            if self.kind == "conv":
                return self.base_layer._conv_forward(x, weight.reshape(self.base_layer.weight.shape), bias)
            return F.linear(x, weight, bias)
        k = weight.shape[0]
        xs = x.reshape(k, -1, self.in_features)
        if bias is None:
            y = torch.bmm(xs, weight.transpose(1, 2))
        else:
            y = torch.baddbmm(bias.unsqueeze(1), xs, weight.transpose(1, 2))
        return y.reshape(*x.shape[:-1], self.out_features)

    # ------------------------------------------------------------------------------------------------ merge
    @torch.no_grad()
    def merged_matrix(self, plan: tuple[Choice, ...], dtype: torch.dtype) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """W' (as an out x in matrix) and b', computed from W0 in float32 (or wider) and stored in ``dtype``."""
        compute = torch.promote_types(self.base_layer.weight.dtype, torch.float32)
        w0c = self._weight_matrix().to(compute)
        ad, au, bd, bu, cd, cu, d, e = (None if t is None else t.to(compute) for t in self._factors())
        weight = effective_weight(plan, w0c, ad, au, bd, bu, dtype)
        b0 = self.base_layer.bias
        return weight, effective_bias(plan, w0c, None if b0 is None else b0.to(compute), cd, cu, d, e, dtype)

    def merged_tensors(self, plan: tuple[Choice, ...]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """W', b' in the base layer's parameter layout and dtype."""
        base_w = self.base_layer.weight
        bias_dtype = self.base_layer.bias.dtype if self.base_layer.bias is not None else base_w.dtype
        weight, bias = self.merged_matrix(plan, base_w.dtype)
        weight = weight.t() if self.kind == "hf_conv1d" else weight.reshape(base_w.shape)
        return weight.contiguous(), None if bias is None else bias.to(bias_dtype).contiguous()

    def extra_repr(self) -> str:
        return f"kind={self.kind}, out={self.out_features}, in={self.in_features}, max_rank={self.max_rank}"
