"""The mutation score's arithmetic (`scripts/mutation.py`, docs/mutation.md): which survivors
a judged-equivalent entry covers, when an entry is reported unused, and the score, worked by hand on
made-up mutmut results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mutation.py"


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("fedrag_mutation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _diff(old: str, new: str) -> str:
    return f"--- m.py\n+++ m.py\n@@ -1,3 +1,3 @@\n def f():\n-    {old}\n+    {new}\n     return y\n"


def test_an_entry_covers_its_line_in_its_function_under_any_number(mutation):
    """mutmut renumbered f's mutants: the entry judged as f's mutant 5 covers f's mutant 7
    (the same added line); g's mutant adding that line is another judgement, a survivor. An
    entry of a mutated function that covers no survivor (its mutant now adds another line, or
    is killed) is reported unused; one of a function this run did not mutate is not."""
    entries = [
        {"mutant": "pkg.m.x_f__mutmut_5", "change": "y = 2", "reason": "r5"},
        {"mutant": "pkg.m.x_f__mutmut_9", "change": "z = 0", "reason": "r9"},
        {"mutant": "pkg.m.x_f__mutmut_1", "change": "y = 5", "reason": "r1"},
    ]
    equivalent = {"pkg.m.x_f": entries, "pkg.m.x_h": [{"mutant": "pkg.m.x_h__mutmut_1", "change": "w", "reason": "-"}]}
    results = {
        "pkg.m.x_f__mutmut_7": ("survived", _diff("y = 1", "y = 2")),
        "pkg.m.x_f__mutmut_9": ("survived", _diff("z = 0", "z = 1")),
        "pkg.m.x_g__mutmut_5": ("no tests", _diff("y = 1", "y = 2")),
        "pkg.m.x_f__mutmut_1": ("killed", _diff("y = 1", "y = 0")),
        "pkg.m.x_f__mutmut_2": ("timeout", _diff("y = 1", "y = None")),
    }
    row = mutation.score("verdicts", results, equivalent)
    assert [e["mutant"] for e in row["equivalents"]] == ["pkg.m.x_f__mutmut_7"]
    assert row["equivalents"][0]["reason"] == "r5"
    assert [s["mutant"] for s in row["survivors"]] == ["pkg.m.x_f__mutmut_9", "pkg.m.x_g__mutmut_5"]
    assert row["unused"] == ["pkg.m.x_f__mutmut_1", "pkg.m.x_f__mutmut_9"]
    assert (row["mutants"], row["killed"], row["survived"], row["equivalent"]) == (5, 2, 3, 1)
    assert row["score"] == 2 / (5 - 1)


def test_an_entry_named_for_a_survivor_wins_over_another_with_the_same_line(mutation):
    entries = [
        {"mutant": "pkg.m.x_f__mutmut_3", "change": "y = 2", "reason": "first"},
        {"mutant": "pkg.m.x_f__mutmut_4", "change": "y = 2", "reason": "its own"},
    ]
    row = mutation.score("verdicts", {"pkg.m.x_f__mutmut_4": ("survived", _diff("y = 1", "y = 2"))}, {"pkg.m.x_f": entries})
    assert row["equivalents"][0]["reason"] == "its own" and row["score"] == 1.0
    assert row["unused"] == ["pkg.m.x_f__mutmut_3"], "an entry judging a line another entry covers is reported"
