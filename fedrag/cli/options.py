"""The Typer app and the options every command shares (a leaf: imports no command module).

Options that mirror a setting are derived from the dataclass field that defines it
(:func:`field_option`): its default, its help (``metadata["help"]``) and, for a
``Literal`` type, its choices, so ``--help`` lists them and a bad value exits 2.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, get_args, get_origin

import click
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune Retrieval-Augmented Generation systems, centrally or with Flower.")

RETRIEVER = typer.Option("minilm", "--retriever", help="bundled name (minilm), directory, or Hub id")
GENERATOR = typer.Option("smollm2-135m", "--generator", help="bundled name (smollm2-135m), directory, .gguf, Hub id, or 'none'")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")


def choices(literal) -> list[str]:
    """The values of a ``Literal[...]`` type."""
    return [str(v) for v in get_args(literal)]


def choice_option(default: Any, flag: str, literal, help: str = "") -> Any:
    """A ``--flag`` restricted to a ``Literal``'s values (listed in ``--help``)."""
    return typer.Option(default, flag, help=help, click_type=click.Choice(choices(literal)), show_choices=True)


def field_option(cls, name: str, flag: str | None = None, default: Any = dataclasses.MISSING) -> Any:
    """A Typer option for dataclass field ``cls.name``: same default, help and choices."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    hint = typing.get_type_hints(cls)[name]
    flag = flag or "--" + name.replace("_", "-")
    value = field.default if default is dataclasses.MISSING else default
    help_text = field.metadata.get("help", "")
    if get_origin(hint) is Literal:
        return choice_option(value, flag, hint, help_text)
    if hint is bool:
        return typer.Option(value, f"{flag}/--no-{flag[2:]}", help=help_text)
    return typer.Option(value, flag, help=help_text)


def write_json(path: str, obj) -> None:
    from fedrag._io import atomic_write_json

    atomic_write_json(path, obj)
