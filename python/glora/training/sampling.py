"""Budget-aware subnet sampling for supernet training: every draw within a parameter budget, and the extremes
used by the sandwich rule (docs/method.md, section 3). The engine does the work."""

from __future__ import annotations

from glora.engine.space import SearchSpace, Subnet


class BudgetSampler:
    """Draws subnets whose parameter count lies in ``[min, max]``; draw ``i`` is a fixed function of ``(seed, i)``."""

    def __init__(self, space: SearchSpace, budget: tuple[int, int], seed: int) -> None:
        self.space = space
        self.budget = space.check_budget(budget)  # refuses impossible budgets now, not at the first draw
        self.seed = seed

    def draw(self, index: int, n: int = 1) -> list[Subnet]:
        """The ``n`` subnets of draw ``index``."""
        return self.space.sample(self.budget, n, self.seed, index * n)

    def largest(self) -> Subnet:
        """The dearest subnet within budget: every gene at its dearest choice, cheapened only as the budget needs."""
        return self.space.largest_within(self.budget)

    def smallest(self) -> Subnet:
        """The cheapest subnet within budget: every gene at its cheapest choice, made dearer only as the budget needs."""
        return self.space.smallest_within(self.budget)
