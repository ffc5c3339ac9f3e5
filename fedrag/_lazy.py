"""Package exports that load on first use (PEP 562), so importing a package does not
import its heavy modules: a site's ClientApp process reads `fedrag.federation`'s task
and policy without torch. And modules that moved, answering at their old path with a
DeprecationWarning ([`moved_module`][moved_module])."""

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


def moved_module(old: str, new: str):
    """Make module `old` (the caller, at a path that moved) the module `new`, with a
    DeprecationWarning for the importer: `import old` and `from old import name` get
    `new`'s objects, the same ones (a monkeypatch on either is seen by both)."""
    import warnings

    module = importlib.import_module(new)
    warnings.warn(f"{old} moved to {new}; the old path will be removed", DeprecationWarning, stacklevel=3)
    sys.modules[old] = module
    return module
