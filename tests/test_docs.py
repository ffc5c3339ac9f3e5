"""The documentation site builds with `mkdocs build --strict` (every page, link and API
reference entry resolves), and the results page shows the plots drawn from benchmark JSON."""

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_docs_pages import matching_lines

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~20 s: the fast loop checks the pages' text (test_docs_pages.py)
def test_the_docs_site_builds_strictly(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    api = "".join(p.read_text() for p in sorted((tmp_path / "site" / "api").rglob("index.html")))  # one page per layer
    for name in ("load_hf", "KnowledgeStore", "QdrantIndex", "train_stage", "FedTask", "as_query_engine"):
        assert name in api, f"the API reference documents {name}"
    # no raw reST left: roles, directives and double-backtick literals render as Markdown
    for raw in (":class:`", ":func:`", ":meth:`", ":mod:`", ":data:`", ":math:`", ".. math::", "``"):
        assert raw not in api, f"raw reST {raw!r} in the API reference"
    assert api.count('class="arithmatex') >= 5, "the losses' maths is rendered (arithmatex)"
    assert api.count('class="arithmatex arithmatex-svg"><svg') >= 5, "the maths is rendered to inline SVG at build time"
    assert "_JointStage" not in api, "private classes stay out of the reference"
    # each settings field is listed with its default and its help (fedrag._settings.setting)
    from dataclasses import fields

    from fedrag.federation.task import FedTask
    from fedrag.train.config import TrainConfig

    text = html.unescape(re.sub(r"<[^>]+>", " ", api))
    text = re.sub(r"\s+", " ", text)
    from fedrag._settings import settings_of

    for cls in (TrainConfig, FedTask):  # FedTask's parts too: each part's settings, with their help
        found = [*fields(cls), *(f for f, _ in settings_of(cls).values())]
        for f in found:
            help_text = re.sub(r"\s+", " ", f.metadata.get("help", ""))
            assert help_text, f"{cls.__name__}.{f.name} has help"
            assert f"{f.name} : " in text and help_text in text, f"the reference lists {cls.__name__}.{f.name} with its help"
    concepts = (tmp_path / "site" / "concepts" / "index.html").read_text()
    for svg in ("layers.svg", "question-flow.svg", "federated-round.svg"):
        assert svg in concepts and (tmp_path / "site" / "img" / svg).is_file(), f"the concepts diagram {svg} is a committed SVG"
    results = (tmp_path / "site" / "results" / "index.html").read_text()
    for img in ("quality_vs_cost_hotpotqa.png", "quality_vs_cost_squad150.png", "fed_vs_central_by_round.png"):
        assert img in results and (tmp_path / "site" / "img" / img).is_file(), img
    # offline: no page loads a script, stylesheet, font, image or frame from the network
    remote = re.compile(
        r"<(?:script|img|iframe|source|embed|link)\b[^>]*\b(?:src|href|srcset)=[\"']?(?:https?:)?//"
        r"|url\(\s*[\"']?(?:https?:)?//|@import\s+[\"']?(?:url\()?[\"']?(?:https?:)?//"
    )
    loads = [
        f"{f.relative_to(tmp_path / 'site')}: {m.group(0)}"
        for f in sorted((tmp_path / "site").rglob("*"))
        if f.suffix in (".html", ".css", ".svg")
        for m in remote.finditer(f.read_text(errors="replace"))
    ]
    assert not loads, "\n".join(loads[:20])
    # Material's "source" component asks the GitHub API for the repository's facts from its script
    site = tmp_path / "site"
    asks = [str(f.relative_to(site)) for f in site.rglob("*.html") if 'data-md-component="source"' in f.read_text()]
    assert not asks, f"pages whose repository link fetches from api.github.com: {asks[:5]}"
    assert remote.search('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js">')
    assert remote.search('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">')


NARRATION = [
    r"(?<![\w/`-])I(?![\w/`])",
    r"\b[Mm]y\b",
    r"\b[Ww]e\b",
    r"\b[Oo]ur\b",
    r"Notes from this machine",
    r"\.\./shared",
    r"no longer",
    r"was a bug",
    r"since fixed",
    r"\bsession\b",
    r"did not find out",
    r"\bused to\b",
    r"written before",
    r"work period",
]


def test_the_docs_state_the_current_truth_without_narrating_how_the_work_went():
    """docs/ and the README say what fedrag is and measured, not the story of the work:
    no first person, no paths outside the project, no "no longer" / "was a bug" history
    (that goes to CHANGELOG.md, which exists and follows Keep a Changelog)."""
    pages = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "changelog.md"] + [ROOT / "README.md"]
    found = matching_lines(pages, NARRATION)
    assert not found, "\n".join(found)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and "keepachangelog.com" in changelog
