"""A comparison pairs strategies question by question by question id, never by the order of
their saved rows: rows in another order, or holding other questions (one skipped, one added),
pair only the questions both strategies answered, and the result says how many were paired and
how many left out. Every count and difference below is worked out by hand."""

from __future__ import annotations

import json
import math
from statistics import NormalDist, stdev

import pytest

from fedrag.errors import FedragError
from test_mut_evaluate import _bootstrap_ref

# Per-question F1 by id. `other` holds q1..q3 of the four questions (q0 skipped), saved in
# reverse order, and a question q9 none of the others holds.
UNTUNED = {"q0": 0.0, "q1": 0.5, "q2": 0.5, "q3": 0.0}
BEST = {"q0": 1.0, "q1": 0.0, "q2": 0.5, "q3": 0.5}  # mean 0.5
OTHER = {"q3": 0.25, "q2": 0.5, "q1": 1.0, "q9": 0.0}  # mean 0.4375: not the best


def _rows(f1: dict[str, float]) -> list[dict]:
    return [{"id": q, "em": float(v == 1.0), "f1": v, "recall@5": 1.0} for q, v in f1.items()]


def _write(out, per_strategy: dict[str, dict[str, float]]):
    (out / "strategies").mkdir(parents=True)
    for name, f1 in per_strategy.items():
        (out / "strategies" / f"{name}.rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(f1)))


def test_paired_counts_match_questions_by_id_and_say_how_many_were_left_out(tmp_path):
    from fedrag.strategies.compare_store import paired
    from fedrag.strategies.report import paired_table

    _write(tmp_path, {"untuned": UNTUNED, "best": BEST, "other": OTHER})
    rows = [{"strategy": "untuned", "f1": 0.25}, {"strategy": "best", "f1": 0.5}, {"strategy": "other", "f1": 0.4375}]
    got = paired(tmp_path, rows)
    # other against best on q1, q2, q3 (both hold them): F1 0 -> 1 gained, 0.5 = 0.5 tie,
    # 0.5 -> 0.25 lost: (1, 1), p = min(1, 2 * P(Bin(2, 1/2) <= 1)) = 1. EM: q1 gained only,
    # p = 2 * (1/2)^1 = 1. q0 (best's alone) and q9 (other's alone) are left out. Paired by
    # row order instead, q0..q3 against q3, q2, q1, q9 would count F1 (2 gained, 2 lost).
    assert got["other"]["vs_best"] == {"em": [1, 0, 1.0], "f1": [1, 1, 1.0], "n": 3, "left_out": 2}
    # against untuned on q1, q2, q3: 0.5 -> 1 and 0 -> 0.25 gained, nothing lost: p = 2 * (1/2)^2
    assert got["other"]["vs_untuned"] == {"em": [1, 0, 1.0], "f1": [2, 0, 0.5], "n": 3, "left_out": 2}
    # best and untuned hold the same four questions: nothing left out
    assert got["best"]["vs_untuned"] == {"em": [1, 0, 1.0], "f1": [2, 1, 1.0], "n": 4, "left_out": 0}
    table = paired_table({"paired": got})
    assert "* other against best: 2 questions only one of them answered were left out (3 paired by question id)." in table
    assert "* other against untuned: 2 questions" in table and "* best against" not in table


def test_verdicts_pair_the_f1_differences_by_id(tmp_path):
    from fedrag.strategies.verdicts import decide, sentence

    got = decide({name: _rows(f1) for name, f1 in (("untuned", UNTUNED), ("best", BEST), ("other", OTHER))})
    assert got["best"]["verdict"] == "best" and got["other"]["best"] == "best"
    diffs = [1.0 - 0.0, 0.5 - 0.5, 0.25 - 0.5]  # other - best on q1, q2, q3
    assert got["other"]["f1_diff"] == pytest.approx(sum(diffs) / 3)  # 0.25; unpaired means would say -0.0625
    assert got["other"]["f1_diff_ci"] == pytest.approx(_bootstrap_ref(diffs, 0.95, 2000, 0), rel=1e-12)
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    assert got["other"]["questions_needed"] == math.ceil((z * stdev(diffs) / 0.03) ** 2)
    assert (got["other"]["paired"], got["other"]["left_out"], got["other"]["n"]) == (3, 2, 4)
    said = sentence("other", got["other"], 0.03)
    assert "at n = 3 (2 questions only one of them answered left out)" in said, said


def test_a_repeated_id_pairs_by_occurrence_and_rows_without_a_shared_id_are_refused():
    from fedrag.strategies.verdicts import by_question

    a = [{"id": "q", "f1": 0.0}, {"id": "q", "f1": 1.0}, {"id": "r", "f1": 0.5}]
    b = [{"id": "r", "f1": 0.25}, {"id": "q", "f1": 0.5}, {"id": "q", "f1": 0.75}]
    assert by_question(a, b, "f1") == ([0.0, 1.0, 0.5], [0.5, 0.75, 0.25], 0)
    said = "two strategies' per-question rows share no question id: they cannot be paired"
    with pytest.raises(FedragError, match=f"^{said}$"):
        by_question([{"id": "x"}], [{"id": "y"}], "f1")


def test_rows_without_an_id_pair_by_their_position():
    """In-memory rows without an `id` are keyed by their position in their own list: the
    id-less row at position 1 of one list and position 0 of the other are different questions."""
    from fedrag.strategies.verdicts import by_question

    a = [{"id": "q", "f1": 1.0}, {"f1": 0.5}, {"f1": 0.25}]
    b = [{"f1": 0.0}, {"id": "q", "f1": 0.75}, {"f1": 0.125}]
    assert by_question(a, b, "f1") == ([1.0, 0.25], [0.75, 0.125], 2)  # q and position 2; positions 0 and 1 left out


def test_saved_rows_without_question_ids_are_refused_in_one_line(tmp_path):
    from fedrag.strategies.compare_store import question_rows

    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "old.rows.jsonl").write_text('{"id": "q0", "f1": 1.0}\n{"f1": 0.5}\n')
    with pytest.raises(FedragError, match=r"old.rows.jsonl:2: a per-question row without its question id") as err:
        question_rows(tmp_path, "old")
    assert "\n" not in str(err.value) and "delete old.rows.jsonl and old.json" in str(err.value)
