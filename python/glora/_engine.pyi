"""Type stubs of the native search engine (Rust, pyo3)."""

from typing import Any, Callable, Optional

__version__: str

class SearchError(ValueError):
    kind: str
    details: dict[str, Any]

class ImpossibleBudgetError(SearchError): ...
class ScoreError(SearchError): ...
class LogError(SearchError): ...
class DivergenceError(LogError): ...

def run_search(
    space_json: str,
    budget_min: int,
    budget_max: int,
    params_json: str,
    seed: int,
    evaluate: Callable[[list[list[int]]], list[float]],
    log_path: Optional[str] = None,
    resume: bool = False,
    threads: Optional[int] = None,
    glora_version: str = "",
    on_generation: Optional[Callable[[str], None]] = None,
) -> str: ...
def replay_log(path: str) -> str: ...
def sample_genomes(space_json: str, budget_min: int, budget_max: int, n: int, seed: int, index0: int = 0) -> list[list[int]]: ...
def default_params() -> str: ...
def engine_throughput(space_json: str, budget_min: int, budget_max: int, n: int, seed: int, threads: int = 1) -> str: ...
