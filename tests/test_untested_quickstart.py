"""A successful `fedrag quickstart` (issue #39), on the tiny test models (`--retriever`/`--generator`)
at its smallest: 2 steps, 1 round, 2 test questions. The bundled pair loads in test_bundled.py."""

import json
from pathlib import Path

import pytest
from in_process import ONE_ACTOR

from test_cli import run

pytestmark = pytest.mark.slow  # a Flower simulation (~25 s)


def test_quickstart_runs_the_whole_story_and_writes_its_table(monkeypatch, capsys, tmp_path, tiny_models):
    """Demo data, the untuned baseline, a centralized run and a 2-site simulation, each
    evaluated: three rows in summary.json/summary.md and the printed table, the models of
    both fine-tuned rows saved where `fedrag eval` reads them."""
    out = tmp_path / "qs"
    args = ("quickstart", "--out", out, "--steps", "2", "--rounds", "1", "--test-limit", "2", "--strategy", "independent")
    args += ("--retriever", tiny_models["retriever"], "--generator", tiny_models["generator"], "--cpus-per-site", ONE_ACTOR)
    code, stdout, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    rows = json.loads((out / "summary.json").read_text())
    assert [r["system"] for r in rows] == ["untuned", "centralized", "federated"]
    for r in rows:
        assert all(0.0 <= r[k] <= 1.0 for k in ("em", "f1", "recall@1", "recall@5")), r
        assert r["eval_s"] > 0
    untuned, central, fed = rows
    assert untuned["train_s"] == 0 and untuned["bytes"] == 0
    assert central["train_s"] > 0 and central["bytes"] == 0 and "2 optimizer steps per phase" in central["what"]
    assert fed["train_s"] > 0 and fed["bytes"] > 0 and "2 sites (Flower simulation) x 1 rounds x 1 local steps" in fed["what"]
    for system in ("central", "federated"):
        assert (out / system / "retriever").is_dir() and (out / system / "generator").is_dir(), system
    assert all(f"| {r['system']} |" in (out / "summary.md").read_text() for r in rows)
    names = " + ".join(Path(tiny_models[k]).name for k in ("retriever", "generator"))
    assert f"fedrag quickstart: demo data, 2 test questions, {names}" in stdout and f"outputs -> {out}" in stdout
    assert untuned["what"] == f"{names} as they come, no fine-tuning"
    task = json.loads((out / "federated" / "cost.json").read_text())["task"]
    assert (task["retriever"], task["generator"]) == (tiny_models["retriever"], tiny_models["generator"])
    systems = ("untuned", "centralized", "federated")
    assert [line.split()[0] for line in stdout.splitlines() if line.split() and line.split()[0] in systems] == list(systems)
    assert json.loads((out / "fedrag_output.json").read_text())["kind"] == "quickstart"
