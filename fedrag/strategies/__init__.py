"""Strategies: compositions of training stages (independent, two-phase, joint, RA-DIT, custom)."""

from fedrag.strategies.base import Phase, Strategy, save_outputs, total_cost
from fedrag.strategies.library import STRATEGIES, custom, make_strategy, plan_from_names

__all__ = ["STRATEGIES", "Phase", "Strategy", "custom", "make_strategy", "plan_from_names", "save_outputs", "total_cost"]
