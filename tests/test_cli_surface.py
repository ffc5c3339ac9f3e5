"""The CLI is generated from the settings: each option mirrors its dataclass field
(default, help, choices), every option has help, no name is cut at 80 columns, and a
choice list is written once in the package."""

import ast
import dataclasses
import typing
from pathlib import Path
from typing import Literal, get_args, get_origin

import click
import pytest
import typer
from typer.testing import CliRunner

import fedrag
from fedrag.cli.main import app
from fedrag.cli.options import _optional
from fedrag.federation.task import FedTask
from fedrag.generate.decoding import GenerationSettings
from fedrag.strategies.compare import CompareSettings
from fedrag.strategies.settings import PlanSettings, SearchSettings
from fedrag.train import TrainConfig

SETTINGS = (TrainConfig, PlanSettings, SearchSettings, GenerationSettings, CompareSettings, FedTask)
# options that share a field's name but not its meaning, each for a stated reason
OWN_MEANING = {
    ("eval", "decoding"): "'auto' reads the decoding recorded in the generator's directory",
    ("eval", "gamma"): "unset reads the gamma recorded in the generator's directory",
    ("eval", "dtype"): "the weights' dtype of a model to evaluate, not training's autocast precision",
    ("eval", "batch_size"): "questions per evaluation batch, not per training step",
    ("demo-data", "seed"): "the seed of the generated data",
    ("convert", "seed"): "the seed of the split",
}
DEMO = {"quickstart"}  # a guided demo with its own measured defaults (its help says so)


def _commands():
    root = typer.main.get_command(app)
    return {name: cmd for name, cmd in root.commands.items()}


def _fields():
    out = {}
    from fedrag._settings import settings_of

    for cls in SETTINGS:  # a class composed of parts (FedTask) offers its parts' settings
        for name, (f, owner) in settings_of(cls).items():
            if f.metadata.get("cli", True) is not False:
                out.setdefault(name, []).append((cls, f, typing.get_type_hints(owner)[name]))
    return out


def _expected_default(f, hint):
    value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def test_every_option_that_names_a_setting_is_that_setting():
    fields, checked = _fields(), set()
    for name, cmd in _commands().items():
        if name in DEMO:
            continue
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.name not in fields:
                continue
            checked.add(p.name)
            if (name, p.name) in OWN_MEANING:
                continue
            matches = []  # the field it is generated from (two classes may declare one name differently)
            for cls, f, hint in fields[p.name]:
                inner, _ = _optional(hint)
                choices_ok = get_origin(inner) is not Literal or list(p.type.choices) == [str(v) for v in get_args(inner)]
                if p.default == _expected_default(f, hint) and (p.help or "").startswith(f.metadata["help"]) and choices_ok:
                    matches.append(cls.__name__)
            assert matches, (
                f"fedrag {name} --{p.name.replace('_', '-')} matches no field of {[c.__name__ for c, _, _ in fields[p.name]]}"
            )
    unused = sorted(set(fields) - checked)
    assert not unused, f"settings no command offers: {unused}"


def test_every_option_has_help_and_no_name_is_cut_at_80_columns():
    runner = CliRunner()
    bare = [
        f"fedrag {name} --{p.name}"
        for name, cmd in _commands().items()
        for p in cmd.params
        if isinstance(p, click.Option) and not (p.help or "").strip()
    ]
    assert not bare, f"options without help: {bare}"
    for name, cmd in _commands().items():
        res = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}, terminal_width=80)
        assert res.exit_code == 0, res.output
        text = res.output
        assert max(len(line) for line in text.splitlines()) <= 80, name
        assert "…" not in text, f"fedrag {name} --help cuts a name:\n{text}"
        for p in cmd.params:
            for opt in [*p.opts, *getattr(p, "secondary_opts", [])]:
                assert opt in text, f"fedrag {name} --help at 80 columns lacks {opt}"


def test_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"fedrag {fedrag.__version__}"


def test_each_choice_list_is_written_once():
    seen = {}
    for path in Path(fedrag.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Literal":
                elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
                key = tuple(getattr(e, "value", None) for e in elts)
                if len(key) > 1:
                    assert key not in seen, f"{key} is written in {seen[key]} and {path}:{node.lineno}"
                    seen[key] = f"{path}:{node.lineno}"


def test_stage_names_are_the_registry():
    from fedrag.train.choices import StageName
    from fedrag.train.stages import STAGES

    assert set(get_args(StageName)) == set(STAGES)


@pytest.mark.parametrize("cls", SETTINGS)
def test_every_setting_documents_itself(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
    assert not missing, f"{cls.__name__} fields without help: {missing}"


def test_the_quickstart_summary_reads_at_80_columns_and_says_what_each_row_is():
    from fedrag.cli.quickstart import Row, summary_lines, summary_markdown

    m = {"em": 0.125, "f1": 0.2345, "recall@1": 0.5, "recall@5": 0.875}
    rows = [
        Row("untuned", "the models as they come", m, 0.0, 18.2, 0),
        Row("centralized", "independent, 30 optimizer steps per phase on this machine", m, 301.4, 17.9, 0),
        Row(
            "federated",
            "independent, 2 sites (Flower simulation) x 2 rounds x 7 local steps per phase: "
            "14 sequential steps of the global model",
            m,
            250.0,
            99.7,
            123_456_789,
        ),
    ]
    lines = summary_lines(rows, 40)
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    table = [line for line in lines if line.startswith(("untuned", "centralized", "federated")) and "0.125" in line]
    assert len(table) == 3 and "123.5" in table[2] and "301" in table[1]
    text = "\n".join(lines)
    assert "14 sequential steps" in text and "fedrag compare" in text
    md = summary_markdown(rows, 40)
    assert "| federated | 0.125 | 0.234 | 0.500 | 0.875 | 250 | 100 | 123.5 |" in md and "**federated**: independent" in md
