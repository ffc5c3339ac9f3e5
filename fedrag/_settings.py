"""Settings are dataclass fields: one definition each, read by every layer and the CLI.

A setting's default, help text, roles and, through its `Literal` type, its choices are
written once, in the dataclass that owns it (`TrainConfig`, `PlanSettings`,
`GenerationSettings`, `FedTask` ...). A class that carries another's setting (the
federated task carries the training settings) declares it with [`same`][same], so the
default, help and roles cannot drift apart; the CLI builds its options from these fields
(`fedrag.cli.options.settings`), and the lists each layer needs (what a resume must match,
what a site takes) are read from the roles with [`names`][names].
"""

from __future__ import annotations

import dataclasses
from typing import Any

_NO_DEFAULT: Any = dataclasses.MISSING

# a setting's roles and their values when not given (`setting(...)`'s keywords)
ROLES: dict[str, Any] = {
    "cli": True,
    "panel": None,
    "identity": True,
    "path": False,
    "to_sites": True,
    "round_set": False,
    "stage_default_on_sites": True,
}


def setting(
    default: Any = _NO_DEFAULT,
    help: str = "",
    *,
    factory: Any = _NO_DEFAULT,
    flag: str | None = None,
    shown: str | None = None,
    cli: bool = True,
    panel: str | None = None,
    identity: bool = True,
    path: bool = False,
    to_sites: bool = True,
    round_set: bool = False,
    stage_default_on_sites: bool = True,
) -> Any:
    """A dataclass field that documents itself and declares its roles.

    Args:
        default: The default value (or use `factory` for a mutable one).
        help: One line: what the setting does; the CLI's `--help` and the API reference show it.
        factory: A zero-argument callable building the default (lists, dicts).
        flag: The CLI flag when it is not `--` + the name with dashes (`"--lora/--full"`).
        shown: The default as `--help` shows it, where the CLI applies another than `default`
            (`fedrag federate --min-sites`: every site it starts).
        cli: False for settings the library fills in itself (they get no CLI option).
        panel: The `--help` panel the option is listed in (a command may group otherwise).
        identity: Part of what a resumed run or comparison must match (False: it changes how a
            run is shown, tracked or read, not what it computes).
        path: Where an input is read from: a resume matches the input's content, not its name.
        to_sites: A training setting a federated task carries to its sites' training.
        round_set: On a federated site the rounds set it (a run's length): a stage's default
            and a phase's override apply centrally only.
        stage_default_on_sites: False: a stage's preferred value applies centrally only (a
            site's round ends with the weights it trained).
    """
    meta = {"help": help, "flag": flag, "shown": shown, "cli": cli, "panel": panel, "identity": identity, "path": path}
    meta.update(to_sites=to_sites, round_set=round_set, stage_default_on_sites=stage_default_on_sites)
    if factory is not _NO_DEFAULT:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def same(cls: type, name: str, **changes: Any) -> Any:
    """A field carrying `cls.name`'s setting: the same default, help, flag and roles.

    `changes` may set `cli` (whether this class offers it as a CLI option), `panel`
    (where its `--help` lists it) or another role."""
    unknown = sorted(set(changes) - set(ROLES))
    if unknown:
        raise TypeError(f"same(): '{unknown[0]}' is no role of a setting ({', '.join(ROLES)})")
    src = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = {**src.metadata, **changes}
    if src.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=src.default_factory, metadata=meta)
    return dataclasses.field(default=src.default, metadata=meta)


def role(field: dataclasses.Field, name: str) -> Any:
    """Field `field`'s role `name` (its `ROLES` default for a field declared without `setting`)."""
    return field.metadata.get(name, ROLES[name])


def names(cls: type, **roles: Any) -> tuple[str, ...]:
    """The fields of dataclass `cls` whose roles have these values, in declaration order:
    `names(TrainConfig, identity=False)` is what a resumed run need not match."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise TypeError(f"names(): '{unknown[0]}' is no role of a setting ({', '.join(ROLES)})")
    return tuple(f.name for f in dataclasses.fields(cls) if all(role(f, r) == v for r, v in roles.items()))


def field_help(cls: type, name: str) -> str:
    """The help text of setting `cls.name`."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata.get("help", "")


def check_choice(value: Any, literal: Any, what: str, error: type | None = None) -> None:
    """Refuse, with one line naming `what`, a `value` that is none of `Literal` type
    `literal`'s values: every choice list is checked here, from its type."""
    import typing

    allowed = typing.get_args(literal)
    if value not in allowed:
        if error is None:
            from fedrag.errors import FedragError as error
        raise error(f"{what} must be one of {', '.join(map(str, allowed))}, got '{value}'")


def check_choices(obj: Any) -> None:
    """Refuse, with one line, a `Literal`-typed field of dataclass `obj` holding no
    listed value (the choices come from the type: nothing repeats them)."""
    import typing

    for name, hint in typing.get_type_hints(type(obj)).items():
        if typing.get_origin(hint) is typing.Literal:
            check_choice(getattr(obj, name), hint, f"--{name.replace('_', '-')}")
