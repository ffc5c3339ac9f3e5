"""A strategy named by import path (`"package.module:attribute"`), as Flower names its apps."""

from __future__ import annotations

from fedrag.errors import FedragError
from fedrag.retrieve.choices import TOP_K


def import_strategy(path: str, top_k: int = TOP_K):
    """`"package.module:attribute"` → a Strategy (Flower names its apps the same way)."""
    import importlib

    from fedrag.strategies.base import Strategy

    module, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise FedragError(f"cannot import strategy '{path}' ({type(exc).__name__}: {exc})") from None
    plan = obj
    if not isinstance(obj, Strategy) and callable(obj):
        try:
            plan = obj(top_k=top_k)
        except Exception as exc:  # noqa: BLE001 - a user's factory (or something that is none) fails in its own way
            raise FedragError(
                f"'{path}' is not a strategy factory: calling it with top_k={top_k} failed ({type(exc).__name__}: {exc})"
            ) from None
    if not isinstance(plan, Strategy):
        raise FedragError(f"'{path}' is neither a Strategy nor a function returning one")
    return plan
