"""Strategies: compositions of training stages (independent, two-phase, joint, RA-DIT, custom)."""

from typing import TYPE_CHECKING

from fedrag._lazy import lazy_exports

if TYPE_CHECKING:  # the names below load on first use
    from fedrag.strategies.base import Phase, Strategy, save_outputs, total_cost
    from fedrag.strategies.library import STRATEGIES, custom, make_strategy, plan_from_names

__all__ = ["STRATEGIES", "Phase", "Strategy", "custom", "make_strategy", "plan_from_names", "save_outputs", "total_cost"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **{n: "fedrag.strategies.base" for n in ("Phase", "Strategy", "save_outputs", "total_cost")},
        **{n: "fedrag.strategies.library" for n in ("STRATEGIES", "custom", "make_strategy", "plan_from_names")},
    },
)
