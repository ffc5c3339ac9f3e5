"""Griffe extension for the API reference: a settings field's help is its documentation.

fedrag's settings are dataclass fields made with ``fedrag._settings.setting(default, help)``
(or ``same(...)``): the help text lives in the field's metadata, where static analysis does
not see it. After the package is loaded, each dataclass is imported and every field with a
help text and no docstring gets that text as its docstring, and its default value in place of the ``setting(...)``
call, so mkdocstrings lists each field as a user reads it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import griffe


class SettingsHelp(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "fedrag":
            return
        for cls in _classes(pkg):
            try:
                real = getattr(importlib.import_module(cls.module.path), cls.name)
            except (ImportError, AttributeError):
                continue
            if not dataclasses.is_dataclass(real):
                continue
            for f in dataclasses.fields(real):
                text = f.metadata.get("help")
                member = cls.members.get(f.name)
                if member is None or member.is_alias:
                    continue
                if text and not member.docstring:
                    member.docstring = griffe.Docstring(text, parent=member)
                if f.default is not dataclasses.MISSING:  # the default itself, not the setting(...) call
                    member.value = repr(f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    member.value = repr(f.default_factory())


def _classes(obj: griffe.Object):
    for member in obj.members.values():
        if member.is_alias:
            continue
        if member.is_class:
            yield member
        if member.is_module or member.is_class:
            yield from _classes(member)
