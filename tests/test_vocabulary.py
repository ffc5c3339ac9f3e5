"""One vocabulary across the CLI (issue #41): every option of every command is listed, and
a setting that goes by two names (across commands, or a name and its synonym) fails;
old names still parse, hidden from `--help`, for one release."""

import re

import click
import pytest
import typer
from typer.testing import CliRunner

from fedrag.cli.main import app
from fedrag.cli.options import RENAMED, renamed

# Each concept's one name, and the names it went by (or could drift to). A visible option
# named after a synonym fails anywhere: the concept has its name.
CONCEPTS = {
    "--evaluate-every": {"--eval-every", "--validate-every", "--val-every"},  # validation (train) / evaluation (federate) period
    "--val": {"--eval-qa", "--val-qa", "--validation", "--dev", "--heldout", "--held-out"},  # checked during training
    "--val-limit": {"--eval-limit", "--validation-limit", "--dev-limit"},
    "--test": {"--qa", "--test-qa", "--eval-qa-file"},  # the questions a run is scored on
    "--test-limit": {"--eval-questions", "--questions"},
    "--train-limit": {"--limit", "--max-train", "--train-questions"},
    "--metrics": {"--metrics-file", "--report", "--out-json"},  # a metrics JSON file (every --out is a directory)
}
# words that name one thing: two options whose names differ only by them are one setting twice
SYNONYM_WORDS = {"eval": "evaluate", "evaluation": "evaluate", "qa": "test", "validation": "val", "validate": "val"}
ROLES = ("train", "val", "test")  # a data file's role: `--limit` next to `--test-limit` would be one setting twice
COUNTED = ("limit",)  # what a role qualifies: how many of a file's questions


def _commands() -> dict[str, click.Command]:
    return dict(typer.main.get_command(app).commands)


def _options() -> dict[str, dict[str, click.Option]]:
    """Every visible option name of every command: `{command: {name: option}}`."""
    return {
        name: {o: p for p in cmd.params if isinstance(p, click.Option) and not p.hidden for o in (*p.opts, *p.secondary_opts)}
        for name, cmd in _commands().items()
    }


def _canonical(name: str) -> str:
    return "--" + "-".join(SYNONYM_WORDS.get(w, w) for w in name[2:].split("-"))


def _vocabulary_problems(options: dict[str, dict[str, click.Option]]) -> list[str]:
    everywhere = {o: cmd for cmd, opts in options.items() for o in opts}
    problems = []
    for canonical, synonyms in CONCEPTS.items():
        for o in sorted(synonyms & set(everywhere)):
            problems.append(f"fedrag {everywhere[o]} {o}: this setting is {canonical}")
    by_canonical: dict[str, set[str]] = {}
    for o in everywhere:
        by_canonical.setdefault(_canonical(o), set()).add(o)
    for names in by_canonical.values():
        if len(names) > 1:
            problems.append(" and ".join(f"fedrag {everywhere[o]} {o}" for o in sorted(names)) + ": one setting, two names")
    for o in [o for o in everywhere if o[2:] in COUNTED]:
        for role in ROLES:
            if f"--{role}-{o[2:]}" in everywhere:
                problems.append(f"fedrag {everywhere[o]} {o} next to fedrag {everywhere[f'--{role}-{o[2:]}']} --{role}-{o[2:]}")
    return problems


def test_every_option_of_every_command_has_one_name_per_setting():
    options = _options()
    assert sum(len(o) for o in options.values()) > 150, "every command's options are listed"
    problems = _vocabulary_problems(options)
    assert not problems, "\n".join(problems)


def test_the_check_fails_on_a_setting_with_two_names():
    """The issue's cases, each planted into the real CLI's option list."""
    real = _options()
    for cmd, planted in [
        ("train", "--eval-every"),  # federate says --evaluate-every
        ("federate", "--eval-qa"),  # train says --val
        ("eval", "--qa"),  # compare says --test
        ("eval", "--limit"),  # the test questions here, the training questions in train
        ("compare", "--evaluation-every"),  # a synonym word, not in the list
    ]:
        options = {c: dict(o) for c, o in real.items()}
        options[cmd][planted] = click.Option([planted])
        assert _vocabulary_problems(options), f"fedrag {cmd} {planted} passed"


def test_every_out_is_a_directory():
    files = [f"fedrag {c} --out: {o['--out'].help}" for c, o in _options().items() if "--out" in o]
    assert len(files) >= 8
    wrong = [f for f in files if not re.search(r"director|folder", f.split(": ", 1)[1])]
    assert not wrong, "\n".join(wrong)


def test_defaults_are_shown_as_they_apply_and_lists_as_typed():
    options = _options()
    min_sites = options["federate"]["--min-sites"]
    assert isinstance(min_sites.show_default, str) and "every site" in min_sites.show_default, "not [default: 2]"
    for cmd, opts in options.items():
        for name, o in opts.items():
            if isinstance(o.default, str) and "," in o.default:  # a list, typed comma-separated
                shown = o.show_default
                assert shown is True or "," not in str(shown), f"fedrag {cmd} {name} shows its list as {shown!r}"
    text = CliRunner().invoke(app, ["search-lr", "--help"], terminal_width=200).output
    assert "[default: 0.0001,0.0003,0.001]" in text


@pytest.mark.parametrize("command", sorted(RENAMED))
def test_old_names_still_parse_and_are_hidden(command):
    """Each old name is the new option (a line on stderr says so) and `--help` does not list it."""
    group = typer.main.get_command(app)
    cmd = group.commands[command]
    visible = _options()[command]
    required = [
        a
        for p in cmd.params
        if isinstance(p, click.Option) and p.required
        for a in (p.opts[0], p.type.choices[0] if isinstance(p.type, click.Choice) else "x")
    ]
    for old, new in RENAMED[command].items():
        assert new in visible and old not in visible, (command, old, new)
        with group.make_context("fedrag", [command]) as ctx:
            name, sub, rest = group.resolve_command(ctx, [command, *required, old, "3"])
            assert name == command and rest[-2] == new
            parsed = sub.make_context(name, rest, parent=ctx).params
        param = next(p for p in cmd.params if new in p.opts)
        assert str(parsed[param.name]) == "3", (command, old)
        assert renamed(command, [f"{old}=3"], warn=False) == [f"{new}=3"]
    text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
    for old in RENAMED[command]:
        if old not in visible:
            assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", text), f"fedrag {command} --help lists {old}"


def test_an_old_name_says_its_new_one(capsys):
    assert renamed("eval", ["--qa", "q.jsonl", "--", "--limit"]) == ["--test", "q.jsonl", "--", "--limit"]
    assert "fedrag: eval --qa is deprecated; use --test" in capsys.readouterr().err
    assert renamed("index", ["--limit", "3"]) == ["--limit", "3"], "a command without that old name is left as it is"


def test_an_old_eval_command_still_runs(monkeypatch, capsys, tmp_path, demo_dir, tiny_models):
    """`eval --qa --limit --out FILE` (0.1.0's names) writes the same metrics, with one line per old name."""
    import json
    import sys

    from fedrag.cli.main import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["fedrag", *map(str, args)])
        main()
        return capsys.readouterr()

    common = ["--corpus", demo_dir / "corpus.jsonl", "--retriever", tiny_models["retriever"], "--generator", "none"]
    old = run("eval", "--qa", demo_dir / "test.jsonl", "--limit", "4", "--out", tmp_path / "old.json", *common)
    new = run("eval", "--test", demo_dir / "test.jsonl", "--test-limit", "4", "--metrics", tmp_path / "new.json", *common)
    scores = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("old", "new")]
    quality = [{k: m[k] for k in ("n", "recall@5", "mrr@10")} for m in scores]
    assert quality[0] == quality[1] and quality[0]["n"] == 4
    assert [line for line in old.err.splitlines() if "deprecated" in line] == [
        "fedrag: eval --qa is deprecated; use --test",
        "fedrag: eval --limit is deprecated; use --test-limit",
        "fedrag: eval --out is deprecated; use --metrics",
    ]
    assert "deprecated" not in new.err
