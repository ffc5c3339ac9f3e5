"""The Typer app and its options, generated from the settings' dataclass fields (a leaf:
imports no command module).

A setting is a dataclass field ([`fedrag._settings`][fedrag._settings]); [`settings`][settings] turns a
class's fields into a command's options: the same default, help (`metadata["help"]`)
and, for a `Literal` type, choices, so `--help` lists them and a bad value exits 2.
A command takes them as `**kw` ([`with_settings`][with_settings]) and rebuilds the dataclass
with [`collect`][collect], whose `__post_init__` validates every value with one line.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Literal, Optional, Union, get_args, get_origin

import click
import typer
import typer.core

from fedrag._settings import hint as setting_type
from fedrag._settings import settings_of

# Old option names a command still takes, hidden from --help, for one release (CHANGELOG.md,
# "Deprecated"): each concept has one name across commands (tests/test_vocabulary.py).
RENAMED: dict[str, dict[str, str]] = {
    "train": {"--eval-every": "--evaluate-every", "--limit": "--train-limit"},
    "search-lr": {"--eval-every": "--evaluate-every", "--limit": "--train-limit"},
    "compare": {"--eval-every": "--evaluate-every", "--limit": "--train-limit"},
    "eval": {"--qa": "--test", "--limit": "--test-limit", "--out": "--metrics"},
    "federate": {"--eval-qa": "--val", "--eval-limit": "--val-limit"},
}


def renamed(command: str, args: list[str], warn: bool = True) -> list[str]:
    """`args` of `command` with each old option name (`RENAMED`) replaced by its new one,
    `--old=value` included; a line on stderr says so (`warn`)."""
    old, out = RENAMED.get(command, {}), list(args)
    for i, arg in enumerate(out):
        if arg == "--":  # what follows is values
            break
        name, eq, value = arg.partition("=")
        if name in old:
            if warn:
                typer.echo(f"fedrag: {command} {name} is deprecated; use {old[name]}", err=True)
            out[i] = old[name] + eq + value
    return out


class Group(typer.core.TyperGroup):
    """fedrag's commands: a command's old option names (`RENAMED`) still parse, unlisted."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        return name, cmd, renamed(name or "", rest)


app = typer.Typer(
    cls=Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune Retrieval-Augmented Generation systems, centrally or with Flower.",
)

DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")


def _version(value: bool) -> None:
    if value:
        from fedrag import __version__

        typer.echo(f"fedrag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print fedrag's version and exit"),
) -> None:
    """Fine-tune Retrieval-Augmented Generation systems, centrally or with Flower."""


def choices(literal) -> list[str]:
    """The values of a `Literal[...]` type."""
    return [str(v) for v in get_args(literal)]


def choice_option(default: Any, flag: str, literal, help: str = "", panel: str | None = None, import_paths: bool = False) -> Any:
    """A `--flag` restricted to a `Literal`'s values: `--help` lists them in the help
    text (which wraps between words at 80 columns, where a metavar would break mid-word).
    `import_paths`: a `module:attribute` is taken too (a user's own object, imported later)."""
    listed = f"one of: {', '.join(choices(literal))}" + (", or module:attribute" if import_paths else "")
    return typer.Option(
        default,
        flag,
        help=f"{help} ({listed})" if help else listed,
        metavar="NAME",
        click_type=NameOrImportPath(choices(literal)) if import_paths else click.Choice(choices(literal)),
        show_choices=False,
        rich_help_panel=panel,
    )


def _optional(hint) -> tuple[Any, bool]:
    """`(inner type, True)` for `X | None`; `(hint, False)` otherwise."""
    if get_origin(hint) in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1 and len(get_args(hint)) == 2:
            return inner[0], True
    return hint, False


class NameOrImportPath(click.Choice):
    """One of the listed names, or `module:attribute` as Flower names its apps."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and ":" in value:
            module, _, attribute = value.partition(":")
            if module and attribute.isidentifier():
                return value
        return super().convert(value, param, ctx)


class IntOrName(click.ParamType):
    """A whole number (at least 1) or one of a `Literal`'s names (`--batch-size 16` or `--batch-size auto`)."""

    def __init__(self, names: list[str]):
        self.names = names
        self.name = "|".join(["N", *names])

    def convert(self, value, param, ctx):
        if value in self.names:
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"'{value}' is neither a whole number nor one of: {', '.join(self.names)}", param, ctx)
        if number < 1:
            self.fail(f"{number} is not a whole number >= 1", param, ctx)
        return number


def _int_or_names(hint) -> list[str]:
    """The names of an `int | Literal[...]` type (empty for any other type)."""
    if get_origin(hint) not in (Union, types.UnionType):
        return []
    args = get_args(hint)
    lits = [a for a in args if get_origin(a) is Literal]
    return choices(lits[0]) if int in args and len(lits) == 1 and len(args) == 2 else []


def _is_grid(hint) -> bool:
    """A list or tuple of numbers or names: typed on the command line as `a,b,c`."""
    return get_origin(hint) in (list, tuple) and get_args(hint)[:1] in ((float,), (str,))


def field_option(cls, name: str, panel: str | None = None) -> tuple[Any, Any]:
    """`(annotation, typer.Option)` for dataclass field `cls.name`: same default, help, choices."""
    field = settings_of(cls)[name][0]
    hint, optional = _optional(setting_type(cls, name))
    flag = field.metadata.get("flag") or "--" + name.replace("_", "-")
    default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
    help_text = field.metadata.get("help", "")
    shown = field.metadata.get("shown") or True  # the default as the CLI applies it, where that is not `default`
    if get_origin(hint) is Literal:
        return (Optional[str] if optional else str), choice_option(default, flag, hint, help_text, panel)
    if _int_or_names(hint):
        kind = IntOrName(_int_or_names(hint))
        return str, typer.Option(
            default, flag, help=help_text, rich_help_panel=panel, click_type=kind, metavar=kind.name, show_default=shown
        )
    if _is_grid(hint):
        text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        return str, typer.Option(text, flag, help=help_text, rich_help_panel=panel, show_default=shown)
    if hint is bool and "/" not in flag and default:  # an off-by-default switch needs no --no- form
        flag = f"{flag}/--no-{flag[2:]}"
    return (Optional[hint] if optional else hint), typer.Option(
        default, flag, help=help_text, rich_help_panel=panel, show_default=shown
    )


def settings(cls, *, only: tuple[str, ...] = (), exclude: tuple[str, ...] = (), panel: str | None = None) -> list:
    """Options for the CLI-facing settings of dataclass `cls` (`metadata["cli"]` not False; a
    part's settings too), each in `panel`, else in the panel its field names (`setting(panel=...)`)."""
    found = [f for f, _ in settings_of(cls).values()]
    own = {f.name: f.metadata.get("panel") for f in found}
    names = [f.name for f in found if f.metadata.get("cli", True) is not False]
    names = [n for n in (only or names) if n not in exclude]
    params = []
    for name in names:
        annotation, option = field_option(cls, name, panel or own[name])
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=annotation))
    return params


def with_settings(*groups: list) -> Callable:
    """Give a command (`def cmd(..., **kw)`) the options of `groups` (from [`settings`][settings])."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [p for g in groups for p in g if p.name not in sig.parameters]
        hints = typing.get_type_hints(fn)
        fn.__signature__ = sig.replace(parameters=own + extra)
        fn.__annotations__ = {**hints, **{p.name: p.annotation for p in extra}}
        return fn

    return wrap


def collect(cls, kw: dict, **overrides: Any) -> Any:
    """`cls` built from a command's generated options (and `overrides`), by setting name
    (a class composed of parts takes its parts' settings by name too)."""
    values = {}
    for name in settings_of(cls):
        if name in overrides:
            values[name] = overrides[name]
        elif name in kw:
            value, kind = kw[name], setting_type(cls, name)
            if _is_grid(kind) and isinstance(value, str):
                value = grid(value) if get_args(kind)[0] is float else [v.strip() for v in value.split(",") if v.strip()]
            values[name] = value
    return cls(**values)


def grid(text: str) -> tuple[float, ...]:
    """`"1e-4,3e-4"` → `(1e-4, 3e-4)`; a value that is no number is one line."""
    from fedrag.errors import FedragError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise FedragError(f"expected comma-separated numbers, got '{text}'") from None


def write_json(path: str, obj) -> None:
    from fedrag._io import atomic_write_json

    atomic_write_json(path, obj)
