"""Settings are dataclass fields: one definition each, read by every layer and the CLI.

A setting's default, help text and, through its `Literal` type, its choices are
written once, in the dataclass that owns it (`TrainConfig`, `PlanSettings`,
`GenerationSettings`, `FedTask` ...). A class that carries another's setting (the
federated task carries the training settings) declares it with [`same`][same], so the
default and help cannot drift apart; the CLI builds its options from these fields
(`fedrag.cli.options.settings`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

_NO_DEFAULT: Any = dataclasses.MISSING


def setting(
    default: Any = _NO_DEFAULT,
    help: str = "",
    *,
    factory: Any = _NO_DEFAULT,
    flag: str | None = None,
    cli: bool = True,
    panel: str | None = None,
) -> Any:
    """A dataclass field that documents itself.

    Args:
        default: The default value (or use `factory` for a mutable one).
        help: One line: what the setting does; the CLI's `--help` and the API reference show it.
        factory: A zero-argument callable building the default (lists, dicts).
        flag: The CLI flag when it is not `--` + the name with dashes (`"--lora/--full"`).
        cli: False for settings the library fills in itself (they get no CLI option).
        panel: The `--help` panel the option is listed in (a command may group otherwise).
    """
    meta = {"help": help, "flag": flag, "cli": cli, "panel": panel}
    if factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def same(cls: type, name: str, **changes: Any) -> Any:
    """A field carrying `cls.name`'s setting: the same default, help and flag.

    `changes` may set `cli` (whether this class offers it as a CLI option) and `panel`
    (where its `--help` lists it)."""
    src = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = {**src.metadata, **changes}
    if src.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=src.default_factory, metadata=meta)
    return dataclasses.field(default=src.default, metadata=meta)


def field_help(cls: type, name: str) -> str:
    """The help text of setting `cls.name`."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata.get("help", "")


def check_choices(obj: Any) -> None:
    """Refuse, with one line, a `Literal`-typed field of dataclass `obj` holding no
    listed value (the choices come from the type: nothing repeats them)."""
    import typing

    from fedrag.errors import FedragError

    for name, hint in typing.get_type_hints(type(obj)).items():
        if typing.get_origin(hint) is typing.Literal and getattr(obj, name) not in typing.get_args(hint):
            raise FedragError(
                f"--{name.replace('_', '-')} must be one of {', '.join(typing.get_args(hint))}, got '{getattr(obj, name)}'"
            )
