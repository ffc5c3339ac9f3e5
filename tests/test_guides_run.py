"""docs/guides.md runs as written.

Every fenced block of the guides is either run or marked. A block preceded by
`<!-- guide: needs several hosts -->` or `<!-- guide: needs a GPU -->` is checked for
syntax only (fast): shell syntax (`bash -n`), every `fedrag` and `flwr` command against
its CLI, a `flwr run --run-config` against fedrag's task settings, and a systemd unit's
sections and the programs it starts. Every other block must be a shell block with an
expected outcome in `OUTCOMES`: the slow test runs it with bash (`-e -o pipefail`), in
order, in one temporary directory, and checks what the guide says comes out.

What the run changes, and nothing else: the commands that would load the bundled models
(`fedrag eval`, `train`, `compare`, `index`) get the tiny test models
(`tests/tiny.py`) as `--retriever`/`--generator` right after the command's name, where a
model the block names later on the line still wins (click keeps an option's last value);
`fedrag` on PATH is `tests/warm_fedrag.py` (`warm_cli`: the real CLI in a fresh process a command,
forked from one that has imported its libraries). The files the guide starts from, a
SQuAD v1.1 file and a Hugging Face dataset saved to disk, are written by `_user_data`
from the demo corpus.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_docs_pages import _cli, _commands, _fedrag_invocations, call_error

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ROOT / "docs" / "guides.md"
MARKS = ("needs several hosts", "needs a GPU")
SHELL = ("bash", "sh", "shell", "console", "")


@dataclass
class Block:
    line: int
    lang: str
    code: str
    mark: str | None


def guide_blocks(text: str) -> list[Block]:
    """The fenced blocks in order, each with the `<!-- guide: ... -->` mark on the last
    non-blank line before it (None when there is none)."""
    blocks, fence, mark = [], None, None
    for n, line in enumerate(text.splitlines(), 1):
        if fence is not None:
            if line.startswith("```"):
                blocks.append(Block(fence[0], fence[1], "\n".join(fence[2]), fence[3]))
                fence = None
            else:
                fence[2].append(line)
        elif line.startswith("```"):
            fence, mark = (n, line[3:].strip(), [], mark), None
        elif line.strip():
            m = re.fullmatch(r"<!--\s*guide:\s*(.*?)\s*-->", line.strip())
            mark = m.group(1) if m else None
    return blocks


def block_errors(block: Block) -> list[str]:
    """Why a block is neither runnable nor marked, or does not parse (empty: fine)."""
    if block.mark is not None and block.mark not in MARKS:
        return [f"unknown mark {block.mark!r} (one of: {', '.join(MARKS)})"]
    if block.lang == "ini" and block.mark is not None:
        return _unit_errors(block.code)
    if block.lang not in SHELL:
        return [f"not run (a {block.lang!r} block): mark it <!-- guide: {MARKS[0]} --> (or a GPU) or make it a bash block"]
    if block.mark is None and not outcome(block):
        return [f"not run: mark it, or give `{block.code.splitlines()[0]}` its expected outcome in OUTCOMES"]
    return _shell_errors(block.code)


def outcome(block: Block):
    """The check of what a runnable block leaves behind (None: there is none)."""
    return next((check for start, check in OUTCOMES.items() if block.code.startswith(start)), None)


def _shell_errors(code: str) -> list[str]:
    res = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
    errors = [f"bash -n: {res.stderr.strip()}"] if res.returncode else []
    group = _cli()
    for command in _commands(code):
        errors += [f"{err}: {command}" for args in _fedrag_invocations(command) if args and (err := call_error(group, args))]
        words = shlex.split(command, comments=True)
        if words[:1] == ["flwr"]:
            errors += [f"{err}: {command}" for err in _flwr_errors(words[1:])]
    return errors


def _flwr_errors(args: list[str]) -> list[str]:
    import click
    import typer.main
    from flwr.cli.app import app
    from flwr.common.config import parse_config_args

    from fedrag.errors import FedragError
    from fedrag.federation.launch.app_pyproject import render_pyproject
    from fedrag.federation.task import FedTask

    cmd = typer.main.get_command(app).commands.get(args[0])
    if cmd is None:
        return [f"no flwr command {args[0]!r}"]
    try:
        ctx = cmd.make_context(f"flwr {args[0]}", args[1:])
    except click.exceptions.ClickException as exc:
        return [exc.format_message()]
    config = tomllib.loads(render_pyproject())["tool"]["flwr"]["app"]["config"]  # what `fedrag app` writes
    try:  # the app's config with the overrides, as fedrag's ServerApp reads it
        FedTask.from_config(config | parse_config_args(list(ctx.params.get("run_config_overrides") or [])))
    except FedragError as exc:
        return [str(exc)]
    return []


def _unit_errors(code: str) -> list[str]:
    """A systemd unit: its sections, and what each Exec line starts (a module that exists,
    a `sh -c` script that parses)."""
    import configparser
    import importlib.util

    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str
    try:
        unit.read_string(code)
    except configparser.Error as exc:
        return [f"not a unit file: {exc}"]
    errors = [f"no [{s}] section" for s in ("Unit", "Service", "Install") if not unit.has_section(s)]
    for key, value in unit.items("Service") if unit.has_section("Service") else []:
        words = shlex.split(value) if key.startswith("Exec") else []
        if "-m" in words and importlib.util.find_spec(words[words.index("-m") + 1]) is None:
            errors.append(f"{key}: no module {words[words.index('-m') + 1]}")
        if words[:1] in (["/bin/sh"], ["/bin/bash"]) and words[1:2] == ["-c"]:
            errors += [f"{key}: {e}" for e in _shell_errors(words[2])]
    return errors


def test_every_guide_block_is_run_or_marked_and_parses():
    blocks = guide_blocks(GUIDES.read_text())
    assert any(b.mark is None for b in blocks) and any(b.mark for b in blocks), "the guides hold runnable and marked blocks"
    bad = [f"guides.md:{b.line}: {e}" for b in blocks for e in block_errors(b)]
    assert not bad, "\n".join(bad)


def test_the_block_check_sees_what_it_is_for():
    page = "\n".join(
        [
            "```bash\nfedrag advise --labels\n```",  # runs
            "<!-- guide: needs several hosts -->\n\n```bash\nfedrag federate --superlink h:9093 --out o\n```",
            "<!-- guide: needs several hosts -->\nText between.\n```ini\n[Unit]\n```",  # the mark is not the last line
            "<!-- guide: needs a TPU -->\n```bash\nfedrag advise --labels\n```",
            "<!-- guide: needs a GPU -->\n```bash\nfedrag train --no-such 1\n```",
            "<!-- guide: needs several hosts -->\n```bash\nflwr run app fedrag --run-config 'roundz=3'\n```",
            "<!-- guide: needs several hosts -->\n```bash\nif true; then fedrag advise --labels\n```",
            "<!-- guide: needs several hosts -->\n```ini\n[Unit]\n[Service]\nExecStart=/x/python -m fedrag.no_such\n```",
            "```bash\nfedrag credentials --out c --host h\n```",  # unmarked, and no outcome to check
        ]
    )
    found = [block_errors(b) for b in guide_blocks(page)]
    assert [bool(e) for e in found] == [False, False, True, True, True, True, True, True, True], found
    assert "not run (a 'ini' block)" in found[2][0] and "unknown mark" in found[3][0] and "--no-such" in found[4][0]
    assert "'roundz' is not a fedrag task setting" in found[5][0] and "bash -n" in found[6][0]
    assert "no [Install] section" in found[7] and "ExecStart: no module fedrag.no_such" in found[7]
    assert "not run: mark it, or give `fedrag credentials --out c --host h` its expected outcome" in found[8][0]


# ---- running the guides ----------------------------------------------------------------


def with_models(code: str, models: dict[str, str]) -> str:
    """`code` with `--retriever R --generator G` (those the command takes) right after
    each `fedrag COMMAND`; a model named later on the line wins."""
    group = _cli()

    def add(m: re.Match) -> str:
        cmd = group.commands.get(m.group(1))
        opts = {o for p in cmd.params for o in p.opts} if cmd else set()
        return m.group(0) + "".join(f" --{k} {shlex.quote(v)}" for k, v in models.items() if f"--{k}" in opts)

    return re.sub(r"(?<![\w/.-])fedrag ([a-z][a-z-]*)\b", add, code)


def _user_data(where: Path) -> None:
    """What the first guide starts from: `dev-v1.1.json` (SQuAD v1.1) and `my_hf_dataset/`
    (`save_to_disk`, a `validation` split with the columns its `--columns` names), both
    holding the demo corpus's five people: one article a person, its questions."""
    import datasets

    from fedrag.data import demo

    passages, train, test = demo.generate(n_people=5, seed=0)
    articles: dict[str, list] = {}
    rows = []
    for p in passages:
        qas = [
            {"id": e.id, "question": e.question, "answers": [{"text": a, "answer_start": p.text.find(a)} for a in e.answers]}
            for e in train + test
            if e.gold_ids[0] == p.id
        ]
        articles.setdefault(p.title, []).append({"context": p.text, "qas": qas})
        answers = [{k: [a[k] for a in q["answers"]] for k in ("text", "answer_start")} for q in qas]
        rows += [{"query": q["question"], "answers": a, "passage": p.text, "heading": p.title} for q, a in zip(qas, answers)]
    squad = {"version": "1.1", "data": [{"title": t, "paragraphs": ps} for t, ps in articles.items()]}
    (where / "dev-v1.1.json").write_text(json.dumps(squad))
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}).save_to_disk(str(where / "my_hf_dataset"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _converted(tmp: Path, out: str) -> None:
    """Corpus and QA pairs; `--test-fraction` splits the questions by title."""
    mine, hf = tmp / "data" / "mine", tmp / "data" / "mine-hf"
    titles = {name: {q["gold_ids"][0].rsplit("#", 1)[0] for q in _lines(mine / f"{name}.jsonl")} for name in ("train", "test")}
    assert titles["train"] and titles["test"] and not titles["train"] & titles["test"], titles
    assert _lines(mine / "corpus.jsonl") and _lines(hf / "corpus.jsonl") and _lines(hf / "qa.jsonl")


def _measured_trained_measured(tmp: Path, out: str) -> None:
    """Both evaluations on the same held-out questions, the second with the trained models."""
    untuned, tuned = (json.loads((tmp / "runs" / f).read_text()) for f in ("untuned.json", "two-phase.json"))
    assert untuned["n"] == tuned["n"] > 0 and {"em", "f1", "recall@5"} <= untuned.keys() & tuned.keys()
    assert (tuned["retriever"], tuned["generator"]) == ("runs/two-phase/retriever", "runs/two-phase/generator")


def _indexed(tmp: Path, out: str) -> None:
    assert (tmp / "runs" / "index" / "manifest.json").is_file() and "indexed" in out


def _advised(tmp: Path, out: str) -> None:
    assert "Lawton et al." in out and "No context labels" in out, out


def _compared(tmp: Path, out: str) -> None:
    """compare.md: each strategy's EM, F1 and cost, a verdict against the best with the
    95% interval of its F1 difference; compare.json: each strategy's intervals."""
    from typing import get_args

    from fedrag.strategies.choices import StrategyName

    md = (tmp / "runs" / "compare" / "compare.md").read_text()
    assert "| strategy | decoding | EM | F1 |" in md and "train FLOPs" in md
    for name in get_args(StrategyName):
        assert f"\n| {name} |" in md and re.search(rf"- {name}\b.*95% CI", md), name
    assert re.search(r"\b(equivalent|different|inconclusive) (within|at)\b", md)
    rows = json.loads((tmp / "runs" / "compare" / "compare.json").read_text())["rows"]
    assert all(r["em_ci"] and r["f1_ci"] for r in rows) and (tmp / "runs" / "compare" / "compare.png").is_file()


# what each runnable block leaves behind, by the start of its first command
OUTCOMES = {
    "fedrag convert --format squad": _converted,
    "fedrag eval --corpus data/mine/corpus.jsonl --test data/mine/test.jsonl --metrics runs/untuned.json": _measured_trained_measured,
    "fedrag index": _indexed,
    "fedrag advise": _advised,
    "fedrag compare": _compared,
}


@pytest.mark.slow
def test_the_guides_run_as_written_on_tiny_data(tiny_models, tmp_path, warm_cli):
    runnable = [b for b in guide_blocks(GUIDES.read_text()) if b.mark is None]
    assert all(outcome(b) for b in runnable), "test_every_guide_block_is_run_or_marked_and_parses fails"
    _user_data(tmp_path)
    for block in runnable:
        code = with_models(block.code, tiny_models)
        res = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", code],
            cwd=tmp_path,
            env=warm_cli,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, f"guides.md:{block.line} exited {res.returncode}:\n{code}\n{res.stderr[-3000:]}"
        outcome(block)(tmp_path, res.stdout)
