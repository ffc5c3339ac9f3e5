"""Metric values on hand-computed cases (SQuAD's official normalisation and F1)."""

import pytest

from fedrag.evaluate.metrics import exact_match, f1_score, mrr_at_k, normalize_answer, recall_at_k


def test_squad_normalisation_lowercases_and_drops_punctuation_articles_and_spaces():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("  An apple, a PEAR and the plum. ") == "apple pear and plum"
    assert exact_match("the Eiffel Tower.", ["Eiffel Tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower", "Paris"]) == 0.0
    assert exact_match("paris", ["Eiffel Tower", "Paris"]) == 1.0, "the best of the gold answers"


def test_f1_is_token_overlap_against_the_best_gold_answer():
    # "in paris france" vs "paris": precision 1/3, recall 1 -> 2·(1/3)·1/(4/3) = 0.5
    assert f1_score("in Paris, France", ["Paris"]) == pytest.approx(0.5)
    # "the red big dog" -> "red big dog" vs "big red cat": overlap 2, p = r = 2/3
    assert f1_score("the red big dog", ["big red cat"]) == pytest.approx(2 / 3)
    assert f1_score("red red", ["red"]) == pytest.approx(2 * 0.5 * 1 / 1.5), "a repeated token counts once in overlap"
    assert f1_score("nothing", ["Paris", "France"]) == 0.0
    assert f1_score("France", ["Paris", "France"]) == 1.0
    assert f1_score("", ["Paris"]) == 0.0


def test_mrr_and_recall_at_k_on_hand_computed_lists():
    ranked = ["d3", "d7", "d1", "d9"]
    assert mrr_at_k(ranked, ["d1"], 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, ["d7", "d1"], 10) == pytest.approx(1 / 2), "the first gold's rank"
    assert mrr_at_k(ranked, ["d9"], 3) == 0.0, "beyond k counts nothing"
    assert mrr_at_k(ranked, ["x"], 10) == 0.0
    assert recall_at_k(ranked, ["d1", "d9"], 3) == pytest.approx(0.5)
    assert recall_at_k(ranked, ["d1", "d9"], 4) == 1.0
