"""Each setting is declared once, with its roles on its field (`fedrag._settings.setting`):
what a resume must match, what a site trains with, what is a path and where `--help`
lists it are read from the fields, every registry is held to its `Literal`, and each
shared default (top_k, the retrieval temperature, the validation limits) is written once."""

import ast
import dataclasses
import re
from pathlib import Path
from typing import Literal, get_args

import typer
from typer.testing import CliRunner

import fedrag

ROOT = Path(fedrag.__file__).parent


def _with_a_new_setting(monkeypatch):
    """TrainConfig and FedTask as they would be with two new training settings: `smoothing`
    (every role at its default) and `note` (declared `identity=False, to_sites=False`)."""
    from fedrag._settings import part, same, setting
    from fedrag.federation.task import TRAINING, FedTask, SiteTraining
    from fedrag.train import config

    @dataclasses.dataclass
    class Config(config.TrainConfig):
        smoothing: float = setting(0.0, "a new training setting, declared once")
        note: str = setting("", "how the run is labelled", identity=False, to_sites=False)

    @dataclasses.dataclass(frozen=True)
    class Training(SiteTraining):  # the sites' part carries them as it carries every training setting: `same`, no list
        smoothing: float = same(Config, "smoothing", panel=TRAINING)
        note: str = same(Config, "note", panel=TRAINING)

    @dataclasses.dataclass(frozen=True, init=False)
    class Task(FedTask):  # as if SiteTraining had declared them: the task is its parts
        training: Training = part(Training)

    monkeypatch.setattr(config, "TrainConfig", Config)  # the site's training settings, as if declared there
    return Config, Task


def test_a_new_training_setting_reaches_help_the_run_identity_and_the_sites_from_one_field(monkeypatch):
    from fedrag.cli.options import settings, with_settings
    from fedrag.federation.server.round_checkpoint import run_identity
    from fedrag.strategies.base import Phase
    from fedrag.train.stages import RALTStage

    Config, Task = _with_a_new_setting(monkeypatch)
    app = typer.Typer()

    @app.command()
    @with_settings(settings(Task))
    def federate(**kw):
        """A command with every task setting."""

    @app.command()
    def other():  # two commands: `federate --help` names its command
        """Another command."""

    # read from the command click builds (rich's --help layout depends on the terminal)
    cmd = typer.main.get_command(app).commands["federate"]
    option = next(p for p in cmd.params if "--smoothing" in p.opts)
    assert option.help.startswith("a new training setting, declared once")
    assert option.rich_help_panel == "Training on the sites", "listed in its panel"
    res = CliRunner().invoke(app, ["federate", "--smoothing", "0.5", "--help"])
    assert res.exit_code == 0, res.output

    task = Task(strategy="ra-dit", smoothing=0.25, note="mine")
    mine = run_identity(task)
    assert mine["smoothing"] == 0.25, "a resume must match it"
    assert "note" not in mine, "identity=False: a resume need not match it"
    assert run_identity(Task(strategy="ra-dit", smoothing=0.5)) != mine
    assert run_identity(Task(strategy="ra-dit", smoothing=0.25, note="other")) == mine
    assert Config(smoothing=0.25).tracked()["smoothing"] == 0.25 and "note" not in Config(note="x").tracked()

    site = task.train_config(rnd=2)
    assert type(site) is Config and site.smoothing == 0.25, "a site trains with it"
    assert site.note == "", "to_sites=False: the task does not send it to the sites' training"
    assert Phase(RALTStage()).config(site, federated=True).smoothing == 0.25
    assert Task.from_config(task.to_config()).training.smoothing == 0.25, "it travels in the run config"


def test_the_lists_of_roles_are_read_from_the_fields():
    from fedrag._settings import names
    from fedrag.federation.server.round_checkpoint import RUN_KEYS_IGNORED
    from fedrag.federation.task import FedTask
    from fedrag.strategies.base import LENGTH, NOT_ON_SITES
    from fedrag.strategies.compare import REPORTED, CompareSettings
    from fedrag.strategies.compare_store import PATHS, CompareInputs
    from fedrag.train.config import UNTRACKED, TrainConfig

    # the values the hand-written lists held: the roles on the fields reproduce them
    assert set(UNTRACKED) == {"progress", "report_to", "run_name", "tracking_dir", "explicit"}
    assert set(RUN_KEYS_IGNORED) == {"out", "round_timeout", "device", "evaluate_every", "eval_limit", "report_to"}
    assert set(REPORTED) == {"margin", "strategies"} and REPORTED == names(CompareSettings, identity=False)
    assert set(PATHS) == {"corpus", "train", "test", "val"} and PATHS == names(CompareInputs, path=True)
    assert set(LENGTH) == {"steps", "epochs", "min_steps"}
    assert NOT_ON_SITES == ("keep_best",)
    assert UNTRACKED == names(TrainConfig, identity=False)
    assert "report_to" in RUN_KEYS_IGNORED and "report_to" not in names(FedTask, to_sites=True), "same() keeps the roles"
    site = FedTask(strategy="ra-dit", batch_size=3, lr_generator=1e-3, warmup_ratio=0.0, score_batch_size=2).train_config()
    assert (site.batch_size, site.lr_generator, site.warmup_ratio, site.score_batch_size) == (3, 1e-3, 0.0, 2)


def _literal(module: str, name: str):
    import importlib

    return get_args(getattr(importlib.import_module(module), name))


def test_every_registry_is_its_literal():
    from fedrag.data.converters import FORMATS
    from fedrag.federation.server.aggregator import FLOWER_CLASSES
    from fedrag.federation.task import AGGREGATORS
    from fedrag.generate.decoding import DECODINGS
    from fedrag.retrieve.search import MODES
    from fedrag.strategies.library import STRATEGIES
    from fedrag.train.stages import STAGES

    assert tuple(STRATEGIES) == _literal("fedrag.strategies.choices", "StrategyName")
    assert all(STRATEGIES[n]().name == n for n in STRATEGIES), "each factory builds the strategy of its name"
    assert set(STAGES) == set(_literal("fedrag.train.choices", "StageName"))
    assert tuple(FLOWER_CLASSES) == AGGREGATORS == _literal("fedrag.federation.task", "Aggregator")
    assert MODES == _literal("fedrag.retrieve.search", "Retrieval")
    assert DECODINGS == _literal("fedrag.generate.decoding", "Decoding")
    assert _literal("fedrag.cli.data_cmds", "EvalDecoding") == ("auto", *DECODINGS)
    assert set(_literal("fedrag.cli.data_cmds", "ConvertFormat")) == {*FORMATS, "hf"}


def _sources():
    return {p: p.read_text() for p in sorted(ROOT.rglob("*.py"))}


def test_no_choice_list_is_written_again_outside_its_literal():
    """A tuple, list or set of the same names as a `Literal` is a second copy of its choices."""
    literals, copies, inside = {}, [], set()
    for path, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Literal":
                inside.add((path, node.slice.lineno, node.slice.col_offset))
                elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
                values = frozenset(e.value for e in elts if isinstance(e, ast.Constant))
                if len(values) > 1:
                    literals[values] = f"{path.relative_to(ROOT)}:{node.lineno}"
    for path, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, (ast.Tuple, ast.List, ast.Set))
                and node.elts
                and (path, node.lineno, node.col_offset) not in inside
            ):
                if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                    values = frozenset(e.value for e in node.elts)
                    if values in literals:
                        copies.append(f"{path.relative_to(ROOT)}:{node.lineno} repeats {literals[values]}")
    assert not copies, copies


# files another change is splitting now: each keeps one literal default (search_lr's top_k=3, search-lr's
# --val-limit 50) until that change lands and they use TOP_K and VAL_LIMIT; then this list goes
PENDING: dict[str, int] = {}
OWN_DEFAULTS = {"cli/quickstart.py"}  # a guided demo with its own measured defaults (its --help says so)
# a setting's name (or flag) and the one constant its default is written as
CONSTANTS = {"top_k": "TOP_K", "gamma": "RETRIEVAL_GAMMA", "val_limit": "VAL_LIMIT", "eval_limit": "VAL_LIMIT"}
VALUES = {"TOP_K": 3, "RETRIEVAL_GAMMA": 0.1, "VAL_LIMIT": 50}


def _number(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _literal_defaults(tree) -> list[tuple[int, str]]:
    """Where a named setting's default is a number written in place: a parameter's default,
    a field (`top_k: int = 3`, `setting(3, ...)`), a keyword (`top_k=4`) or an option (`Option(50, "--val-limit")`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            pos = node.posonlyargs + node.args
            pairs = list(zip(pos[len(pos) - len(node.defaults) :], node.defaults)) + list(zip(node.kwonlyargs, node.kw_defaults))
            found += [(d.lineno, a.arg) for a, d in pairs if a.arg in CONSTANTS and _number(d)]
        elif isinstance(node, (ast.AnnAssign, ast.Assign)) and node.value is not None:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            value = node.value.args[0] if isinstance(node.value, ast.Call) and node.value.args else node.value
            found += [(node.lineno, t.id) for t in targets if getattr(t, "id", "") in CONSTANTS and _number(value)]
        elif isinstance(node, ast.keyword) and node.arg in CONSTANTS and _number(node.value):
            found.append((node.value.lineno, node.arg))
        elif isinstance(node, ast.Call) and len(node.args) > 1 and _number(node.args[0]):
            flag = node.args[1].value if isinstance(node.args[1], ast.Constant) else None
            if isinstance(flag, str) and flag.lstrip("-").replace("-", "_") in CONSTANTS:
                found.append((node.lineno, flag))
    return found


def test_each_named_default_is_written_once():
    repeated, defined = [], []
    for path, text in _sources().items():
        rel, tree = path.relative_to(ROOT).as_posix(), ast.parse(text)
        found = _literal_defaults(tree)
        if rel in OWN_DEFAULTS:
            continue
        if rel in PENDING:
            assert len(found) <= PENDING[rel], f"{rel}, which another change owns, gained a literal default: {found}"
            continue
        repeated += [f"{rel}:{line} {name}" for line, name in found]
        defined += [
            (t.id, node.value.value, rel)
            for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and _number(node.value)
            for t in ([node.target] if isinstance(node, ast.AnnAssign) else node.targets)
            if getattr(t, "id", "") in VALUES
        ]
    assert not repeated, f"a default written as a number again, not as {', '.join(VALUES)}: {repeated}"
    assert sorted((name, value) for name, value, _ in defined) == sorted(VALUES.items()), f"each defined once: {defined}"


def test_a_choice_is_refused_by_one_function_with_one_line():
    import pytest

    from fedrag._settings import check_choice
    from fedrag.errors import FedragError
    from fedrag.strategies.library import make_strategy, two_phase
    from fedrag.train.stages import RALTStage, make_stage

    Color = Literal["red", "blue"]
    check_choice("red", Color, "--color")
    with pytest.raises(FedragError, match=r"^--color must be one of red, blue, got 'green'$"):
        check_choice("green", Color, "--color")
    for call, text in [
        (lambda: make_strategy("magic"), "strategy must be one of independent, two-phase"),
        (lambda: make_stage("magic"), "stage must be one of contrastive"),
        (lambda: two_phase(retriever_loss="magic"), "two-phase retriever loss must be one of rag-sequence"),
        (lambda: two_phase(order="magic"), "two-phase order must be one of generator-first"),
        (lambda: RALTStage(mode="magic"), "RALT mode must be one of all-in-one, per-passage"),
    ]:
        with pytest.raises(FedragError, match=re.escape(text)):
            call()
