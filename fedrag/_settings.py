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
import functools
import types
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


def part(cls: type, help: str = "") -> Any:
    """A field holding a group of settings (a frozen dataclass, built with its defaults when
    not given): the group's settings are its owner's too, for the CLI, the roles
    ([`names`][names]) and the flat form ([`flatten`][flatten], [`compose`][compose])."""
    return dataclasses.field(default_factory=cls, metadata={"part": cls, "help": help})


def settings_of(cls: type) -> dict[str, tuple[dataclasses.Field, type]]:
    """Every setting of dataclass `cls`, its parts opened, in declaration order:
    `{name: (field, the class that declares it)}`."""
    out: dict[str, tuple[dataclasses.Field, type]] = {}
    for f in dataclasses.fields(cls):
        sub = f.metadata.get("part")
        found = settings_of(sub) if sub else {f.name: (f, cls)}
        twice = sorted(set(found) & set(out))
        if twice:  # the flat form names each setting once: a name in two parts would go to the first
            raise TypeError(f"{cls.__name__}: setting '{twice[0]}' is declared in two parts")
        out.update(found)
    return out


@functools.lru_cache(maxsize=256)
def type_hints(cls: type) -> types.MappingProxyType:
    """`typing.get_type_hints(cls)`, read-only and resolved once per class: the hints of a
    dataclass are fixed once it is defined, and resolving them evaluates every annotation's
    text again (a CLI call reads them for each setting it checks)."""
    import typing

    return types.MappingProxyType(typing.get_type_hints(cls))


def hint(cls: type, name: str) -> Any:
    """The type of setting `name` of `cls` (in whichever of its parts declares it)."""
    return type_hints(settings_of(cls)[name][1])[name]


def flatten(obj: Any) -> dict[str, Any]:
    """`{setting: value}` of dataclass `obj`, its parts opened (the inverse of [`compose`][compose])."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out.update(flatten(value) if f.metadata.get("part") else {f.name: value})
    return out


def compose(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """The field values of dataclass `cls` from `given`: a part by its name, or its settings
    flat (both: the flat settings replace the part's), a plain setting by its name.

    Raises:
        TypeError: a name that is no setting or part of `cls`.
    """
    rest, out = dict(given), {}
    for f in dataclasses.fields(cls):
        sub = f.metadata.get("part")
        if not sub:
            if f.name in rest:
                out[f.name] = rest.pop(f.name)
            continue
        own = {n: rest.pop(n) for n in settings_of(sub) if n in rest}
        whole = rest.pop(f.name, None)
        if whole is None:
            out[f.name] = sub(**compose(sub, own))
        else:
            out[f.name] = dataclasses.replace(whole, **own) if own else whole
    if rest:
        raise TypeError(f"{cls.__name__}() got an unexpected setting '{next(iter(rest))}'")
    return out


def same(cls: type, name: str, **changes: Any) -> Any:
    """A field carrying `cls.name`'s setting: the same default, help, flag and roles.

    `changes` may set `cli` (whether this class offers it as a CLI option), `panel`
    (where its `--help` lists it) or another role."""
    unknown = sorted(set(changes) - set(ROLES))
    if unknown:
        raise TypeError(f"same(): '{unknown[0]}' is no role of a setting ({', '.join(ROLES)})")
    src = settings_of(cls)[name][0]
    meta = {**src.metadata, **changes}
    if src.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=src.default_factory, metadata=meta)
    return dataclasses.field(default=src.default, metadata=meta)


def role(field: dataclasses.Field, name: str) -> Any:
    """Field `field`'s role `name` (its `ROLES` default for a field declared without `setting`)."""
    return field.metadata.get(name, ROLES[name])


def names(cls: type, **roles: Any) -> tuple[str, ...]:
    """The settings of dataclass `cls` (its parts opened) whose roles have these values, in declaration order:
    `names(TrainConfig, identity=False)` is what a resumed run need not match."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise TypeError(f"names(): '{unknown[0]}' is no role of a setting ({', '.join(ROLES)})")
    found = (f for f, _ in settings_of(cls).values())
    return tuple(f.name for f in found if all(role(f, r) == v for r, v in roles.items()))


def field_help(cls: type, name: str) -> str:
    """The help text of setting `cls.name`."""
    return settings_of(cls)[name][0].metadata.get("help", "")


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

    for name, hint in type_hints(type(obj)).items():
        if typing.get_origin(hint) is typing.Literal:
            check_choice(getattr(obj, name), hint, f"--{name.replace('_', '-')}")
