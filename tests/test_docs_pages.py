"""Checks of the documentation's text that need no site build (tests/test_docs.py builds
it): no placeholder or work-log phrasing, every link anchor resolves, every `fedrag`
command in a fenced block parses against the CLI, and a figure quoted on several pages
reads the same on each."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]


def _text(page: Path) -> str:
    if page.name == "changelog.md":  # the site's changelog page includes CHANGELOG.md
        return (ROOT / "CHANGELOG.md").read_text()
    return page.read_text()


def matching_lines(pages: list[Path], patterns: list[str], name=lambda p: p.name) -> list[str]:
    """`PAGE:LINE: PATTERN` for every line of `pages` that one of `patterns` matches."""
    return [
        f"{name(p)}:{n}: {pat}"
        for p in pages
        for n, line in enumerate(p.read_text().splitlines(), 1)
        for pat in patterns
        if re.search(pat, line)
    ]


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


# What a results page or a guide must not hold: open work, internal targets, clock times
# and commit hashes (history goes to CHANGELOG.md, test-suite notes to CONTRIBUTING.md).
PLACEHOLDERS = [
    r"(?i)\bto be (re-?)?measured\b",
    r"(?i)\bre-?measure\b",
    r"\bTBD\b",
    r"\bTODO\b",
    r"\bFIXME\b",
    r"\bXXX\b",
    r"(?i)\bplaceholder\b",
    r"(?i)\bbefore the fix\b",
    r"(?i)\bafter the fix\b",
    r"(?i)\bis not met\b|\bnot met:",
    r"(?i)\bwithin the k× goal\b|\btarget of issue\b",
    r"\b\d{1,2}:\d{2} → \d{1,2}:\d{2}\b",  # a clock time
    r"\((?:[0-9a-f]{7}|[0-9a-f]{40})[;)]",  # a commit hash
]


def test_no_page_holds_a_placeholder_or_work_notes():
    pages = [p for p in PAGES if p.name not in ("changelog.md", "CONTRIBUTING.md")]
    found = matching_lines(pages, PLACEHOLDERS, _rel)
    assert not found, "\n".join(found)


def test_the_placeholder_check_sees_what_it_is_for():
    for line in ("The comparison is to be re-measured.", "≤ 1.15× is not met: 1.24×", "ran 16:22 → 17:16", "idle box (a7311f8)"):
        assert any(re.search(p, line) for p in PLACEHOLDERS), line
    for line in ("not measured at 0.1.0", "recorded 2026-12-04, fedrag 0.1.0", "| 3 | 563 | 2,660 |"):
        assert not any(re.search(p, line) for p in PLACEHOLDERS), line


# ---- anchors -------------------------------------------------------------------------


def _anchors(text: str) -> set[str]:
    """The ids Python-Markdown's toc extension gives the headings of a page."""
    from markdown.extensions.toc import slugify, unique

    ids: set[str] = set()
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            title = re.sub(r"`([^`]*)`", r"\1", m.group(1))
            title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
            ids.add(unique(slugify(title, "-"), ids))
    return ids


LINK = re.compile(r"\]\(([^)\s]*?)#([^)\s]+)\)")


def test_every_link_anchor_resolves():
    missing = []
    for page in PAGES + [ROOT / "CHANGELOG.md"]:
        text = _text(page)
        for target, anchor in LINK.findall(text):
            if target.startswith(("http://", "https://")) or "." in anchor:
                continue  # other sites; API reference ids (mkdocstrings, checked by the build)
            dest = page if not target else (page.parent / target)
            if not dest.is_file():
                missing.append(f"{_rel(page)}: {target} does not exist")
                continue
            if anchor not in _anchors(_text(dest.resolve())):
                missing.append(f"{_rel(page)}: {target}#{anchor}")
    assert not missing, "\n".join(missing)


# ---- commands in fenced blocks -------------------------------------------------------


def _fenced_commands(text: str):
    """Each shell command of a bash/sh/console block (or one without a language), with
    its continuation lines joined."""
    block, lang = None, ""
    for line in text.splitlines():
        if line.startswith("```"):
            if block is None:
                block, lang = [], line[3:].strip()
                continue
            if lang in ("", "bash", "sh", "shell", "console"):
                yield from _commands("\n".join(block))
            block = None
        elif block is not None:
            block.append(line)


def _commands(block: str):
    joined = re.sub(r"\\\n\s*", " ", block)
    heredoc = None
    for line in joined.splitlines():
        if heredoc:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        m = re.search(r"<<-?\s*'?(\w+)'?", line)
        if m:
            heredoc = m.group(1)
        line = line.strip().removeprefix("$ ")
        if line:
            yield line


def _fedrag_invocations(command: str):
    """The argument lists of the `fedrag` invocations in one shell line: `fedrag` (or a
    path ending in it) in command position, after `VAR=value` words, or after `-m`."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split("#", 1)[0].split()
    current, start, prev = None, True, ""
    for w in words + [";"]:
        if w in (";", "&&", "||", "|", "&") or w.startswith(("(", ")")):
            if current is not None:
                yield current
            current, start = None, True
        elif current is not None:
            current.append(w)
        elif (start or prev == "-m") and (w == "fedrag" or w.endswith("/fedrag")):
            current = []
        elif not re.match(r"^\w+=", w):
            start = False
        prev = w


def _fenced_fedrag_calls():
    for page in PAGES:
        for command in _fenced_commands(page.read_text()):
            for args in _fedrag_invocations(command):
                if args:
                    yield _rel(page), command, args


PLACEHOLDER_ARG = re.compile(r"\.\.\.|…|^\[|\]$|\|")


def _cli():
    import typer.main

    from fedrag.cli.main import app

    return typer.main.get_command(app)


def call_error(group, args: list[str]) -> str | None:
    """Why `fedrag ARGS` does not parse against the CLI `group`; None when it does. A
    command written with placeholders (`...`, `[--opt X]`, `a|b`) has its option names
    checked; a complete one is parsed in full (values, choices, required options)."""
    import click

    name, rest = args[0], args[1:]
    if name.startswith("-"):
        return None  # `fedrag --version`
    cmd = group.commands.get(name)
    if cmd is None:
        return f"no command {name!r}"
    options = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    named = [part for w in rest for part in w.strip("[]").split("|") if part.startswith("--")]
    unknown = [o for o in named if o.split("=", 1)[0] not in options]
    if unknown:
        return f"fedrag {name} has no option {unknown}"
    if any(PLACEHOLDER_ARG.search(w) for w in rest) or "--help" in rest:
        return None
    try:
        cmd.make_context(f"fedrag {name}", list(rest))
    except click.exceptions.ClickException as exc:
        return exc.format_message()
    return None


def test_every_fenced_fedrag_command_parses_against_the_cli():
    """Commands run nothing: click parses each against its command's parameters."""
    group = _cli()
    calls = list(_fenced_fedrag_calls())
    assert len(calls) > 20, "the docs show commands"
    bad = [f"{where}: {err}: {command}" for where, command, args in calls if (err := call_error(group, args))]
    assert not bad, "\n".join(bad)


def test_the_command_check_catches_a_wrong_option():
    import click

    cmd = _cli().commands["convert"]
    with pytest.raises(click.exceptions.ClickException):
        cmd.make_context("fedrag convert", ["--format", "squad", "--input", "x.json", "--out", "d", "--no-such"])
    with pytest.raises(click.exceptions.ClickException):
        cmd.make_context("fedrag convert", ["--format", "csv", "--input", "x.json", "--out", "d"])
    cmd.make_context("fedrag convert", ["--format", "squad", "--input", "x.json", "--out", "d"])
    assert list(_fedrag_invocations("X=1 .venv/bin/fedrag eval --metrics m.json && fedrag train --steps 2  # c")) == [
        ["eval", "--metrics", "m.json"],
        ["train", "--steps", "2"],
    ]
    assert list(_fedrag_invocations("torchrun --nproc-per-node 2 -m fedrag train --steps 2")) == [["train", "--steps", "2"]]
    assert list(_fedrag_invocations("ruff check fedrag tests")) == []


# ---- figures quoted on several pages -------------------------------------------------

# A figure that more than one page quotes: its value, measured where `home` says, and
# the patterns that find it on any page (group 1 is the figure). Change a figure here and
# on every page at once.
SHARED_FIGURES = {
    "the fast test loop, seconds on 2 cores": {
        "value": "58",
        "home": "CONTRIBUTING.md",
        "patterns": [r"fast loop: (\d+) s", r"\| the fast loop, [^|]*\| [^|]*\| ([\d.,]+) \|"],
    },
    "the quickstart on a fresh clone, wall time": {
        "value": "5 min 18 s",
        "home": "docs/quickstart.md",
        "patterns": [r"(\d+ min \d+ s)(?=[;, ]* ?set-up| \(`time`)"],
    },
    "Llama-3-8B-shaped bfloat16 LoRA RAG-Token training, peak GiB": {
        "value": "24.4",
        "home": "docs/results.md",
        "patterns": [
            r"([\d.]+) GiB \(the measured bfloat16",
            r"([\d.]+) GiB \(RAG-Token\)",
            r"\| 7\.0B \| bfloat16 \| RAG-Token \| [^|]+\| [^|]+\| [^|]+\| ([\d.]+) \|",
        ],
    },
    "MiniLM's whole query encoder, MB a site each way": {
        "value": "90.9",
        "home": "docs/results.md",
        "patterns": [r"(?:whole |full )?query encoder(?: is| ships)?,? (\d+\.\d+) MB", r"\bencoder[^.\n]{0,30}?(\d+\.\d+) MB"],
    },
    "MiniLM's retriever LoRA adapter, MB a site each way": {
        "value": "0.44",
        "home": "docs/results.md",
        "patterns": [r"\badapter[^.\n]{0,40}?(0\.\d+) MB", r"(0\.\d+) MB of\s+tensors"],
    },
    "deployment overhead a round from round 2, seconds": {
        "value": "5.6–6.7",
        "home": "docs/results.md",
        "patterns": [r"way back \(~2 s\): ([\d.]+–[\d.]+) s a round", r"round adds ([\d.]+–[\d.]+) s"],
    },
}


@pytest.mark.parametrize("name", sorted(SHARED_FIGURES))
def test_a_figure_quoted_on_several_pages_reads_the_same_on_each(name):
    fig = SHARED_FIGURES[name]
    seen: dict[str, set[str]] = {}
    for page in PAGES:
        if page.name == "changelog.md":
            continue  # history keeps the figures of its day
        text = re.sub(r"\s+", " ", _text(page))
        for pat in fig["patterns"]:
            for m in re.finditer(pat, text):
                seen.setdefault(m.group(1), set()).add(_rel(page))
    assert fig["home"] in seen.get(fig["value"], set()), f"{name}: {fig['value']} is not quoted in {fig['home']} ({seen})"
    wrong = {v: pages for v, pages in seen.items() if v != fig["value"]}
    assert not wrong, f"{name} is {fig['value']}; other values: {wrong}"
