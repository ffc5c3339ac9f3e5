"""Package exports that load on first use (PEP 562), so importing a package does not
import its heavy modules: a site's ClientApp process reads `fedrag.federation`'s task
and policy without torch."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """`(__getattr__, __dir__)` for `package`, resolving each name of `exports`
    (`{name: module}`) from its module on first access."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(exports[name]), name)
        sys.modules[package].__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[package].__dict__) | set(exports))

    return __getattr__, __dir__
