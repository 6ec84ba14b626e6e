"""The GLoRA layer family: a frozen base layer plus the five weight-shared support tensors A..E
(``docs/method.md``, "One layer"), in the manner of PEFT's ``lora/layer.py``.

:class:`GLoRALayer` is the shared core: the stored factors, the offered choices, validation, the plan of each
forward, folding for evaluation and the merged tensors. Every base layer is viewed as a matrix ``W0`` of shape
``out x in``, so A, B, C act on that matrix; one subclass per base kind says how:

- :class:`Linear` (``nn.Linear``): ``W0`` is the weight; training runs through one autograd node
  (``linear_function.GLoRALinearFunction``), or through weights prepared for the whole forward
  (``batched_weights``) when the wrapped model's forward built them.
- :class:`HFConv1D` (Hugging Face ``Conv1D``, GPT-2): a linear layer whose stored weight is ``W0`` transposed.
- :class:`ConvNd` (``nn.Conv1d/2d/3d``): ``W0`` is the kernel flattened to ``out x (in/groups * prod(kernel))``;
  ``W'`` is formed with plain ops and the base convolution runs with it.

A base whose class overrides the forward of its torch class (timm's ``Conv2dSame``, which pads "same" before
convolving; a subclass of ``nn.Linear`` with its own forward) runs that forward with ``W'`` and ``b'`` substituted
for its parameters (``torch.func.functional_call``), so the wrapped layer computes what the base computes.

The forward does no work for absent terms. Build a layer with :func:`wrap_layer`, which picks the class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Callable, ClassVar, Optional, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.compiler import is_compiling
from torch.func import functional_call

from glora.layers.choices import (
    GENES,
    NONE,
    ChoiceError,
    Plan,
    has_bias_terms,
    has_weight_terms,
    offered_choices,
    parse_choice,
)
from glora.layers.dtypes import compute_dtype
from glora.layers.fold_cache import FoldCache, stamp_of
from glora.layers.functional import effective_bias, effective_weight
from glora.layers.linear_function import glora_linear
from glora.layers.plan_tensors import coded_weights

Tensor = torch.Tensor
Sampler = Callable[["GLoRALayer"], Plan]
"""Returns one plan for the layer on each forward that has no fixed plan (``supernet_mode`` installs one)."""

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def has_own_forward(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` whose class overrides that torch class's
    forward (timm's ``Conv2dSame``)."""
    for base in (nn.Linear, *_CONV_TYPES):
        if isinstance(module, base):
            return type(module).forward is not base.forward
    return False


if TYPE_CHECKING:
    from typing import TypedDict

    class _BaseLayer(nn.Module):
        """What a GLoRA layer reads of its base (``nn.Linear``, ``nn.Conv1d/2d/3d``, transformers' ``Conv1D``)."""

        weight: Tensor
        bias: Optional[Tensor]

    class _ConvBase(_BaseLayer):
        def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor: ...

    class _Factory(TypedDict):
        """The keyword arguments that place a new factor (``torch.zeros(..., **factory)``)."""

        device: torch.device
        dtype: torch.dtype


class PreparedWeights(Protocol):
    """``W'`` and ``b'`` of one layer, prepared before its forward by a model-level builder (``batched_weights``).

    The layer only asks whether they still serve it and hands them its input; it knows nothing of the builder.
    """

    def serves(self, layer: GLoRALayer, x: Tensor) -> bool:
        """Whether they are still ``layer``'s for input ``x`` (same plan, unmodified factors, same dtype)."""

    def linear(self, x: Tensor, w0: Tensor, b0: Optional[Tensor]) -> Tensor:
        """The layer's output on them (``W0`` and ``b0`` stand in for absent terms)."""


class GLoRALayer(nn.Module):
    """The shared core of a frozen base layer with GLoRA support tensors stored at maximum rank ``max_rank``.

    Stored factors (``docs/method.md``): ``Ad, Bd`` (out x R), ``Au, Bu`` (R x in), ``Cd`` (in x R), ``Cu``
    (R x 1) and the vectors ``D``, ``E`` (out). Down factors and D, E start at zero, so a fresh layer computes the
    base layer for every configuration.

    A model-level builder of weights (``batched_weights``) uses only this public protocol: :meth:`weight_matrix`,
    :meth:`factors`, :attr:`fixed_plan`, :attr:`sampler`, :meth:`current_plan`, :attr:`is_folded`,
    :meth:`trains_through_node`, :meth:`offers_bias_terms`, :meth:`prepare` and :meth:`give_weights`.
    """

    kind: ClassVar[str]
    """The base kind recorded in adapter files: ``"linear"``, ``"conv"`` or ``"hf_conv1d"``."""

    base_layer: _BaseLayer

    def __init__(
        self,
        base_layer: nn.Module,
        max_rank: int,
        ranks: tuple[int, ...],
        add_bias: bool = False,
        init: str = "kaiming",
        kinds: Optional[Mapping[str, Sequence[str]]] = None,
    ) -> None:
        if type(self) is GLoRALayer:
            raise TypeError(
                "GLoRALayer is the core of the layer family; build a layer with wrap_layer(base_layer, ...)"
            )
        super().__init__()
        self.base_layer = cast("_BaseLayer", base_layer)  # a kind layer_class accepts
        for p in base_layer.parameters():
            p.requires_grad_(False)
        weight = self.base_layer.weight
        self.out_features, self.in_features = self.weight_matrix().shape
        self.max_rank = max_rank
        self.has_bias = self.base_layer.bias is not None
        self.own_forward = has_own_forward(base_layer)
        """The base's class overrides its torch class's forward (timm's ``Conv2dSame``): the base runs that forward
        with ``W'`` and ``b'`` substituted (no training node, batched weights or stacked plans for a linear one)."""
        enabled = {
            "A": True,
            "B": True,
            "C": self.has_bias or add_bias,
            "D": self.has_bias,
            "E": self.has_bias or add_bias,
        }
        self.choices: dict[str, tuple[str, ...]] = {
            g: offered_choices(g, ranks, enabled[g], (kinds or {}).get(g)) for g in GENES
        }
        self._disabled = frozenset(g for g in GENES if not enabled[g])

        low_precision = not weight.is_floating_point() or weight.dtype in (torch.float16, torch.bfloat16)
        factory: _Factory = {"device": weight.device, "dtype": torch.float32 if low_precision else weight.dtype}
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
        # the plans of the choice names (one per gene) this layer has accepted, by those names
        self._validated: dict[tuple[Optional[str], ...], Plan] = {}
        self._fixed: Optional[Plan] = None
        self._coded: Optional[Tensor] = None
        self._folded: Optional[tuple[Tensor, Optional[Tensor]]] = None
        self._sampler: Optional[Sampler] = None
        self._prepared: Optional[PreparedWeights] = None
        self._given: Optional[tuple[Tensor, Optional[Tensor]]] = None

    def __getstate__(self) -> dict:
        """Pickling and deep copies leave out the weights prepared for the last forward (tensors in a graph) and the
        codes a trainer shares between the layers."""
        state = dict(super().__getstate__())
        state["_prepared"] = None
        state["_coded"] = None
        state["_given"] = None
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
    def validate(self, config: dict[str, str]) -> Plan:
        """Check a ``{gene: choice}`` dict for this layer; return its plan (one parsed choice per gene, in ``GENES``
        order), the form every other method of the layer takes. A choice must be spelled as the search space spells
        it and be of a kind the layer offers; a lora rank may be any from 1 to ``max_rank`` (the model-level calls,
        ``glora.set_subnet`` and the rest, take only the offered ranks). Anything else raises :class:`ChoiceError`."""
        if not isinstance(config, dict):
            raise TypeError(f"a layer configuration must be a dict of genes to choices, got {type(config).__name__}")
        names = tuple(config.get(g) for g in GENES)
        known = len(config) == len(GENES) and all(type(n) is str for n in names)
        if known and names in self._validated:  # a search checks every subnet it scores: the same few names
            return self._validated[names]
        unknown = sorted(map(repr, set(config) - set(GENES)))
        if unknown:
            raise ChoiceError(f"unknown gene(s) [{', '.join(unknown)}]; genes are {', '.join(GENES)}", kind="gene")
        missing = [g for g in GENES if g not in config]
        if missing:
            raise ChoiceError(f"configuration lacks gene(s) {missing}", kind="gene")
        plan = []
        for g, offered in zip(GENES, self._offered):
            choice = parse_choice(g, config[g], self.max_rank, self.choices[g])
            if all(choice.kind != o.kind for o in offered):
                details = {"gene": g, "choice": config[g], "offered": list(self.choices[g])}
                if g in self._disabled:
                    raise ChoiceError(
                        f"gene {g} is disabled on this layer (it has no bias and add_bias=False, or D on a bias-free "
                        f"layer); only 'none' is allowed, got {config[g]!r}",
                        kind="choice",
                        details=details,
                    )
                raise ChoiceError(
                    f"gene {g} offers only {', '.join(self.choices[g])} on this model (GLoRAConfig rank, ranks and "
                    f"choices); got {config[g]!r}",
                    kind="choice",
                    details=details,
                )
            plan.append(choice)
        if known:
            self._validated[names] = tuple(plan)
        return tuple(plan)

    def set_config(self, config: Optional[dict[str, str]]) -> None:
        """Fix the configuration (``None`` returns to sampling by the installed sampler)."""
        self.set_plan(None if config is None else self.validate(config))

    def set_plan(self, plan: Optional[Plan], coded: Optional[Tensor] = None) -> None:
        """Fix an already validated plan (``None`` returns to sampling). With ``coded`` (this layer's code, a view of
        ``PlanTensors.codes`` holding ``plan``) a compiled forward reads the plan from that tensor instead of
        specialising on it (``plan_tensors``); eager forwards run ``plan`` either way."""
        self._fixed = plan
        self.__dict__["_coded"] = coded  # set directly: the trainer sets it on every layer at every path

    def set_sampler(self, sampler: Optional[Sampler]) -> None:
        """Install a sampler returning one plan for every forward (and return to sampling)."""
        self._sampler = sampler
        self._fixed = None
        self._coded = None

    @property
    def fixed_plan(self) -> Optional[Plan]:
        """The fixed plan, or None while the layer samples (or has neither)."""
        return self._fixed

    @property
    def fixed_config(self) -> Optional[dict[str, str]]:
        return None if self._fixed is None else {g: c.name for g, c in zip(GENES, self._fixed)}

    @property
    def sampler(self) -> Optional[Sampler]:
        return self._sampler

    def current_plan(self) -> Plan:
        """The plan of this forward: the fixed one, else one drawn by the sampler."""
        if self._fixed is not None:
            return self._fixed
        if self._sampler is None:
            raise RuntimeError(
                "this GLoRA layer has neither a fixed subnet nor a sampler: call glora.set_subnet(model, subnet) "
                "or glora.supernet_mode(model, generator)"
            )
        return self._sampler(self)

    def plan_of(self, draws: list[int]) -> Plan:
        """The configuration drawn by one random integer per gene (``glora.tuner.subnets.draw_plans``)."""
        return tuple(options[d % len(options)] for options, d in zip(self._offered, draws))

    # ------------------------------------------------------------------------------ what the kinds provide
    def weight_matrix(self) -> Tensor:
        """``W0``, the base weight viewed as an ``out x in`` matrix."""
        raise NotImplementedError

    def _base_op(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        """The base layer's operation with ``weight`` given as an ``out x in`` matrix."""
        raise NotImplementedError

    def _to_base_layout(self, weight: Tensor) -> Tensor:
        """An ``out x in`` matrix in the layout of the base layer's weight parameter."""
        return weight.reshape(self.base_layer.weight.shape)

    def _own_forward_op(self, x: Tensor, weight: Tensor, bias: Optional[Tensor], channel_dim: int) -> Tensor:
        """The base's own forward (a class that overrides its torch class's) with ``weight`` (out x in) and
        ``bias`` in place of its parameters; a bias the base lacks is added to the output along ``channel_dim``."""
        base = self.base_layer
        params = {"weight": self._to_base_layout(weight)}
        if base.bias is not None:
            assert bias is not None, "b' starts from the base's bias"
            params["bias"] = bias
        y = functional_call(base, params, (x,))
        if base.bias is None and bias is not None:
            shape = [1] * y.dim()
            shape[channel_dim] = -1
            y = y + bias.reshape(shape)
        return y

    @property
    def stacks_plans(self) -> bool:
        """Whether :meth:`fold` takes several plans at once (several subnets per evaluation pass)."""
        return False

    def trains_through_node(self, w0: Tensor, b0: Optional[Tensor]) -> bool:
        """Whether training runs through a GLoRA autograd node (the per-layer node or the batched weights)."""
        return False

    # ------------------------------------------------------------------------------------------------ forward
    def factors(self) -> tuple[Optional[Tensor], ...]:
        """``Ad, Au, Bd, Bu, Cd, Cu, D, E`` (None where the layer lacks them)."""
        p = self._parameters  # straight from the dict: this runs on every training forward
        return (p["Ad"], p["Au"], p["Bd"], p["Bu"], p.get("Cd"), p.get("Cu"), p.get("D"), p.get("E"))

    def prepare(self, weights: Optional[PreparedWeights]) -> None:
        """Hand the layer weights prepared for the coming forward (None forgets them)."""
        self.__dict__["_prepared"] = weights  # set directly: nn.Module.__setattr__ costs every layer on every forward

    @property
    def prepared_weights(self) -> Optional[PreparedWeights]:
        return self._prepared

    def give_weights(self, weights: Optional[tuple[Tensor, Optional[Tensor]]]) -> None:
        """Hand the layer ``(W', b')`` (out x in, and ``b'`` or None for ``b0``) built outside a compiled graph for
        its next compiled forward, which takes them as graph inputs; None forgets them."""
        self.__dict__["_given"] = weights  # set directly, as prepare()

    def offers_bias_terms(self) -> bool:
        """Whether any plan of the layer can have a bias term (C, D or E offered as other than ``none``)."""
        return any(choice.kind != NONE for offered in self._offered[2:] for choice in offered)

    def forward(self, x: Tensor) -> Tensor:
        folded = self._folded
        if folded is not None:
            return self._forward_folded(x, *folded)
        w0, b0 = self.weight_matrix(), self.base_layer.bias
        if is_compiling():
            return self._forward_compiled(x, w0, b0)
        prepared = self._prepared
        if prepared is not None and prepared.serves(self, x):
            return prepared.linear(x, w0, b0)
        plan = self.current_plan()
        if not (has_weight_terms(plan) or has_bias_terms(plan)):
            return self._forward_base(x, w0, b0)
        return self._forward_plan(x, plan, w0, b0)

    def _forward_compiled(self, x: Tensor, w0: Tensor, b0: Optional[Tensor]) -> Tensor:
        """The forward traced by ``torch.compile``: plain autograd operations, which the compiler fuses, and no
        host-side state (the prepared weights, the autograd nodes and their caches are for eager execution). In
        compiled supernet training (but on one GPU with one backward per step, where every layer reads codes) a
        frozen linear layer runs a plain linear on the weights the trainer built for the path outside the graph
        (``BatchedWeights.give``: graph inputs, so one graph serves every path); other layers form every offered term masked by the path's codes; without either the graph is
        specialised on the fixed plan (one graph per subnet)."""
        given = self._given
        if given is not None:
            weight, bias = given
            bias = b0 if bias is None else bias
            dtype = compute_dtype(x)
            if weight.dtype != dtype:  # an input in another dtype, without autocast (as the eager fallback does)
                weight = weight.to(dtype)
                bias = None if bias is None else bias.to(dtype)
            return F.linear(x, weight, bias)
        code = self._coded
        if code is None:
            plan = self.current_plan()
            if not (has_weight_terms(plan) or has_bias_terms(plan)):
                return self._forward_base(x, w0, b0)
            return GLoRALayer._forward_plan(self, x, plan, w0, b0)
        if code.device != w0.device:
            code = code.to(w0.device)
        weight, bias = coded_weights([self.choices[g] for g in GENES], code, w0, b0, self.factors())
        return self._forward_base(x, weight, bias)

    def _forward_plan(self, x: Tensor, plan: Plan, w0: Tensor, b0: Optional[Tensor]) -> Tensor:
        """``plan``'s output with ``W'`` and ``b'`` formed under plain autograd."""
        p = self._parameters
        bias = effective_bias(plan, w0, b0, p.get("Cd"), p.get("Cu"), p.get("D"), p.get("E"))
        ad, au, bd, bu = p["Ad"], p["Au"], p["Bd"], p["Bu"]
        assert ad is not None and au is not None and bd is not None and bu is not None  # registered by __init__
        weight = effective_weight(plan, w0, ad, au, bd, bu)
        return self._forward_base(x, weight, bias)

    def _forward_base(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        """The base operation with ``weight`` (out x in) and ``bias``, cast to the input's dtype when it differs
        (under autocast a float32 input is left to autocast, which casts once)."""
        if weight.dtype != x.dtype:
            weight = weight.to(x.dtype)
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        return self._base_op(x, weight, bias)

    # ---------------------------------------------------------------------------------------- folded (eval)
    @property
    def is_folded(self) -> bool:
        return self._folded is not None

    @torch.no_grad()
    def fold(self, plans: list[Plan], dtype: torch.dtype, cache: Optional[FoldCache] = None) -> None:
        """Fix ``W'``, ``b'`` of one plan (or of k stacked ones) for inference; see ``unfold``. With a ``cache``,
        ``W'`` and ``b'`` formed for earlier plans with the same A, B (or C, D, E) choices are reused while the
        base weights and factors are unchanged.

        With k configurations the layer expects inputs whose leading dimension is k blocks of one batch and
        applies configuration i to block i (a batched GEMM), so k subnets are evaluated in one pass.
        """
        if cache is None:
            merged = [self.merged_matrix(p, dtype) for p in plans]
        else:
            stamp = stamp_of((self.base_layer.weight, self.base_layer.bias, *self.factors()))
            merged = [
                (
                    cast(Tensor, cache.get((self, "W", p[:2], dtype), stamp, partial(self.merged_weight, p, dtype))),
                    cache.get((self, "b", p[2:], dtype), stamp, partial(self.merged_bias, p, dtype)),
                )
                for p in plans
            ]
        if len(plans) == 1:
            self._folded = merged[0]
            return
        biases = [b for _, b in merged]
        if any(b is None for b in biases) and any(b is not None for b in biases):
            zero = torch.zeros(self.out_features, dtype=dtype, device=merged[0][0].device)
            biases = [zero if b is None else b for b in biases]
        self._folded = self._stacked([w for w, _ in merged], biases)

    def _stacked(self, matrices: list[Tensor], biases: list[Optional[Tensor]]) -> tuple[Tensor, Optional[Tensor]]:
        """Several folded plans as one stacked weight (and bias) that ``_forward_folded`` applies block-wise."""
        raise ValueError(
            f"several subnets per pass need linear layers; this layer is a {type(self.base_layer).__name__}"
        )

    def unfold(self) -> None:
        self._folded = None

    def _forward_folded(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return self._base_op(x, weight, bias)

    # ------------------------------------------------------------------------------------------------ merge
    def merged_matrix(self, plan: Plan, dtype: torch.dtype) -> tuple[Tensor, Optional[Tensor]]:
        """W' (as an out x in matrix) and b', computed from W0 in float32 (or wider) and stored in ``dtype``."""
        return self.merged_weight(plan, dtype), self.merged_bias(plan, dtype)

    @torch.no_grad()
    def merged_weight(self, plan: Plan, dtype: torch.dtype) -> Tensor:
        """W' as an out x in matrix (from the plan's A and B), computed in float32 (or wider), stored in ``dtype``."""
        compute = self._compute_dtype()
        ad, au, bd, bu = (cast(Tensor, t).to(compute) for t in self.factors()[:4])  # registered by __init__
        w0c = self.weight_matrix().to(compute)
        return effective_weight(plan, w0c, ad, au, bd, bu, dtype)

    @torch.no_grad()
    def merged_bias(self, plan: Plan, dtype: torch.dtype) -> Optional[Tensor]:
        """b' (from the plan's C, D and E; None for a bias-free layer without them), computed as ``W'`` (W0 enters
        C's term in the factors' precision there, so it is not converted here)."""
        compute = self._compute_dtype()
        cd, cu, d, e = (None if t is None else t.to(compute) for t in self.factors()[4:])
        b0 = self.base_layer.bias
        return effective_bias(plan, self.weight_matrix(), None if b0 is None else b0.to(compute), cd, cu, d, e, dtype)

    def _compute_dtype(self) -> torch.dtype:
        """float32, or the base weight's dtype where it is wider."""
        return torch.promote_types(self.base_layer.weight.dtype, torch.float32)

    def merged_tensors(self, plan: Plan) -> tuple[Tensor, Optional[Tensor]]:
        """W', b' in the base layer's parameter layout and dtype."""
        base_w = self.base_layer.weight
        bias_dtype = self.base_layer.bias.dtype if self.base_layer.bias is not None else base_w.dtype
        weight, bias = self.merged_matrix(plan, base_w.dtype)
        return self._to_base_layout(weight).contiguous(), None if bias is None else bias.to(bias_dtype).contiguous()

    def extra_repr(self) -> str:
        return f"kind={self.kind}, out={self.out_features}, in={self.in_features}, max_rank={self.max_rank}"


class Linear(GLoRALayer):
    """GLoRA over ``nn.Linear``. With a frozen base, training runs through one autograd node per layer, or on the
    weights the wrapped model's forward prepared (``batched_weights``); evaluation may stack several plans."""

    kind = "linear"

    def weight_matrix(self) -> Tensor:
        return self.base_layer.weight

    def _base_op(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.own_forward:
            return self._own_forward_op(x, weight, bias, -1)
        return F.linear(x, weight, bias)

    def trains_through_node(self, w0: Tensor, b0: Optional[Tensor]) -> bool:
        """True while the base is frozen (the nodes give ``W0`` and ``b0`` no gradient, so a base the user
        unfroze trains under plain autograd) and runs ``nn.Linear``'s forward."""
        return not (self.own_forward or w0.requires_grad or (b0 is not None and b0.requires_grad))

    @property
    def stacks_plans(self) -> bool:
        return not self.own_forward

    def _forward_plan(self, x: Tensor, plan: Plan, w0: Tensor, b0: Optional[Tensor]) -> Tensor:
        if self.trains_through_node(w0, b0):
            return glora_linear(x, w0, b0, plan, compute_dtype(x), self.factors())
        return super()._forward_plan(x, plan, w0, b0)

    def _stacked(self, matrices: list[Tensor], biases: list[Optional[Tensor]]) -> tuple[Tensor, Optional[Tensor]]:
        if self.own_forward:
            return super()._stacked(matrices, biases)
        # fold() hands biases that are all None or all tensors
        return torch.stack(matrices), None if biases[0] is None else torch.stack(cast(list[Tensor], biases))

    def _forward_folded(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if weight.dim() == 2:
            return self._base_op(x, weight, bias)
        k = weight.shape[0]
        xs = x.reshape(k, -1, self.in_features)
        if bias is None:
            y = torch.bmm(xs, weight.transpose(1, 2))
        else:
            y = torch.baddbmm(bias.unsqueeze(1), xs, weight.transpose(1, 2))
        return y.reshape(*x.shape[:-1], self.out_features)


class HFConv1D(Linear):
    """GLoRA over Hugging Face ``Conv1D`` (GPT-2): a linear layer whose stored weight is ``in x out``."""

    kind = "hf_conv1d"

    def weight_matrix(self) -> Tensor:
        return self.base_layer.weight.t()

    def _to_base_layout(self, weight: Tensor) -> Tensor:
        return weight.t()


class ConvNd(GLoRALayer):
    """GLoRA over ``nn.Conv1d/2d/3d``: ``W'`` is formed under plain autograd as an ``out x (in/groups *
    prod(kernel))`` matrix and the base convolution runs with it reshaped to the kernel's shape."""

    kind = "conv"

    base_layer: _ConvBase

    def weight_matrix(self) -> Tensor:
        return self.base_layer.weight.flatten(1)

    def _base_op(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.own_forward:
            return self._own_forward_op(x, weight, bias, 1)
        return self.base_layer._conv_forward(x, weight.reshape(self.base_layer.weight.shape), bias)


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face ``Conv1D`` (GPT-2), recognised without importing transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def is_supported(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, *_CONV_TYPES)) or is_hf_conv1d(module)


def layer_class(module: nn.Module) -> type[GLoRALayer]:
    """The GLoRA layer class for ``module``'s kind."""
    if isinstance(module, nn.Linear):
        return Linear
    if isinstance(module, _CONV_TYPES):
        return ConvNd
    if is_hf_conv1d(module):
        return HFConv1D
    raise TypeError(f"GLoRA supports nn.Linear, nn.Conv1d/2d/3d and transformers' Conv1D, not {type(module).__name__}")


def wrap_layer(
    base_layer: nn.Module,
    max_rank: int,
    ranks: tuple[int, ...],
    add_bias: bool = False,
    init: str = "kaiming",
    kinds: Optional[Mapping[str, Sequence[str]]] = None,
) -> GLoRALayer:
    """``base_layer`` (frozen) under a GLoRA layer of its kind, with factors at ``max_rank`` offering ``ranks``."""
    return layer_class(base_layer)(base_layer, max_rank, ranks, add_bias, init, kinds)
