"""Names and validation of the support-tensor choices (``docs/method.md``, "Choices and their shapes"); their
parameter costs are the engine's (``glora.engine.SearchSpace``).

A layer's five support tensors are called genes ``A``..``E``. Each takes one choice:
``lora_<r>``, ``vector``, ``scalar`` or ``none`` (C has no ``scalar``; D and E have no ``lora_<r>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from glora.errors import GLoRAError

GENES: tuple[str, ...] = ("A", "B", "C", "D", "E")
NONE = "none"
LORA = "lora"
VECTOR = "vector"
SCALAR = "scalar"

_LORA = re.compile(r"lora_(0|[1-9][0-9]*)")
"""The only spelling of a lora choice: ASCII digits, no sign, no leading zero, no space (as the search space)."""
_KINDS_BY_GENE = {
    "A": ("lora", VECTOR, SCALAR, NONE),
    "B": ("lora", VECTOR, SCALAR, NONE),
    "C": ("lora", VECTOR, NONE),
    "D": (VECTOR, SCALAR, NONE),
    "E": (VECTOR, SCALAR, NONE),
}


class ChoiceError(GLoRAError, ValueError):
    """A choice name that is malformed, unknown for its gene, above the layer's maximum rank, or not offered by the
    layer; ``details`` holds ``gene``, ``choice`` and ``offered`` (and ``layer`` when raised for a model's layer)."""


@dataclass(frozen=True)
class Choice:
    """A parsed choice: ``kind`` is one of ``lora``, ``vector``, ``scalar``, ``none``; ``rank`` is set for lora."""

    kind: str
    rank: int = 0

    @property
    def name(self) -> str:
        return f"lora_{self.rank}" if self.kind == LORA else self.kind


Plan = tuple[Choice, ...]
"""One layer's configuration: a parsed choice per gene, in ``GENES`` order."""


def parse_choice(gene: str, name: str, max_rank: int, offered: Optional[Sequence[str]] = None) -> Choice:
    """Parse ``name`` for ``gene``; raise :class:`ChoiceError` naming the problem and ``offered`` (a layer's
    choices for the gene; every kind of the gene when not given)."""
    if gene not in _KINDS_BY_GENE:
        raise ChoiceError(f"unknown gene {gene!r}; genes are {', '.join(GENES)}", kind="gene", details={"gene": gene})
    shown = list(offered) if offered is not None else _allowed(gene)
    label = "offered" if offered is not None else "allowed"

    def refuse(problem: str) -> ChoiceError:
        return ChoiceError(
            f"{problem} ({label}: {', '.join(shown)})",
            kind="choice",
            details={"gene": gene, "choice": name, "offered": shown},
        )

    if not isinstance(name, str):
        raise refuse(f"choice for gene {gene} must be a string, got {type(name).__name__}")
    match = _LORA.fullmatch(name)
    if match:
        if "lora" not in _KINDS_BY_GENE[gene]:
            raise refuse(f"gene {gene} has no lora choice, got {name!r}")
        rank = int(match.group(1))
        if not 1 <= rank <= max_rank:
            raise refuse(
                f"choice {name!r} for gene {gene}: rank must be between 1 and the layer's maximum rank {max_rank}"
            )
        return Choice(LORA, rank)
    if name not in _KINDS_BY_GENE[gene]:
        raise refuse(f"unknown choice {name!r} for gene {gene}")
    return Choice(name)


def has_weight_terms(plan: Plan) -> bool:
    """Whether A or B is present (the plan changes the weight)."""
    return plan[0].kind != NONE or plan[1].kind != NONE


def has_bias_terms(plan: Plan) -> bool:
    """Whether C, D or E is present (the plan changes the bias)."""
    return plan[2].kind != NONE or plan[3].kind != NONE or plan[4].kind != NONE


def _allowed(gene: str) -> list[str]:
    return ["lora_<r>" if k == "lora" else k for k in _KINDS_BY_GENE[gene]]


def offered_choices(
    gene: str, ranks: Sequence[int], enabled: bool = True, kinds: Optional[Sequence[str]] = None
) -> tuple[str, ...]:
    """The choices the search offers for ``gene``: lora at every rank, then vector, scalar, none (only those of
    ``kinds`` when given).

    A disabled gene (C, D or E on a layer where it would change the architecture) offers only ``none``.
    """
    if not enabled:
        return (NONE,)
    names: list[str] = []
    for kind in _KINDS_BY_GENE[gene]:
        if kinds is not None and kind not in kinds:
            continue
        if kind == "lora":
            names.extend(f"lora_{r}" for r in sorted(ranks))
        else:
            names.append(kind)
    return tuple(names)


def normalise_kinds(choices: Optional[Mapping[str, Sequence[str]]]) -> Optional[dict[str, tuple[str, ...]]]:
    """Validate ``GLoRAConfig.choices`` (genes to the kinds they offer, ``"lora"`` standing for every rank); return
    it with the kinds in canonical order, or None."""
    if choices is None:
        return None
    if not isinstance(choices, Mapping):
        raise ValueError(f"choices must map genes ({', '.join(GENES)}) to lists of kinds, got {type(choices).__name__}")
    result = {}
    for gene, kinds in choices.items():
        if gene not in _KINDS_BY_GENE:
            raise ValueError(f"choices names unknown gene {gene!r}; genes are {', '.join(GENES)}")
        if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)) or not kinds:
            raise ValueError(f"choices[{gene!r}] must be a non-empty list of kinds, got {kinds!r}")
        unknown = [k for k in kinds if k not in _KINDS_BY_GENE[gene]]
        if unknown:
            raise ValueError(
                f"choices[{gene!r}] has unknown kind(s) {unknown}; {gene} offers {', '.join(_KINDS_BY_GENE[gene])}"
            )
        result[gene] = tuple(k for k in _KINDS_BY_GENE[gene] if k in kinds)
    return result


def normalise_ranks(rank: int, ranks: Iterable[int] | None) -> tuple[int, ...]:
    """Validate the rank settings; return the sorted ranks offered to the search."""
    if ranks is None:
        return (rank,)
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Iterable):
        raise ValueError(f"ranks must be a list of positive integers or None, got {ranks!r}")
    listed = list(ranks)
    if not listed:
        raise ValueError("ranks must not be empty (a list of positive integers, or None to offer rank alone)")
    for r in listed:
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"ranks must be positive integers, got {r!r} in {listed!r}")
    return tuple(sorted(set(listed)))
