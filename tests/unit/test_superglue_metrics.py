"""SuperGLUE metrics on small cases computed by hand: macro/binary F1, MultiRC, ReCoRD."""

from __future__ import annotations

import pytest

from ptune.metrics import f1_binary, f1_macro, multirc_metrics, normalize_answer, record_metrics, token_f1


def test_f1_macro_cb_style_with_a_class_missing_from_pred():
    # classes 0=entailment, 1=contradiction, 2=neutral
    gold = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 1, 0]
    # class 0: tp=2 fp=1 (last) fn=1 (third)  -> F1 = 2*2/(2*2+1+1) = 4/6 = 2/3
    # class 1: tp=2 fp=1 (third) fn=0         -> F1 = 4/5
    # class 2: tp=0 (never predicted)         -> F1 = 0
    # macro = (2/3 + 4/5 + 0) / 3 = (22/15) / 3 = 22/45
    assert f1_macro(pred, gold) == pytest.approx(22 / 45)


def test_f1_macro_counts_classes_only_predicted_and_handles_empty():
    # class 0: tp=1 fp=0 fn=1 -> 2/3; class 1 appears only in pred: tp=0 -> 0; mean 1/3
    assert f1_macro([0, 1], [0, 0]) == pytest.approx(1 / 3)
    assert f1_macro([2, 1, 0], [2, 1, 0]) == 1.0
    assert f1_macro([], []) == 0.0
    with pytest.raises(ValueError):
        f1_macro([0, 1], [0])


def test_f1_binary_edge_cases():
    assert f1_binary([], []) == 0.0
    assert f1_binary([0, 0, 0], [0, 0, 0]) == 0.0  # no positives anywhere: no true positive
    assert f1_binary([1, 1], [0, 0]) == 0.0
    assert f1_binary([0, 0], [1, 1]) == 0.0
    assert f1_binary([1, 1, 0], [1, 0, 1]) == pytest.approx(0.5)  # tp 1, fp 1, fn 1 -> 2/4
    assert f1_binary([1, 0, 0], [1, 0, 0]) == 1.0
    # the positive class can be chosen: F1 of class 0 = tp 1, fp 1, fn 0 -> 2/3
    assert f1_binary([0, 0, 1], [0, 1, 1], positive=0) == pytest.approx(2 / 3)


def test_multirc_em_groups_answers_by_question():
    qids = ["q1", "q1", "q1", "q2", "q2", "q3", "q3"]
    gold = [1, 0, 1, 1, 0, 0, 0]
    pred = [1, 0, 1, 0, 0, 0, 1]
    # q1 all right; q2 first option wrong (a missed positive), second right; q3 last option
    # wrong (a false positive)
    m = multirc_metrics(pred, gold, qids)
    assert m["n"] == 7
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["em"] == pytest.approx(1 / 3)
    # positives: tp=2 (q1), fp=1 (q3), fn=1 (q2) -> F1a = 4/6
    assert m["f1a"] == pytest.approx(2 / 3)
    # question ids that are not contiguous still group together; tuples work as ids
    m2 = multirc_metrics([1, 1, 0], [1, 1, 1], [(0, 5), (1, 5), (0, 5)])
    assert m2["em"] == pytest.approx(1 / 2)


def test_normalize_answer():
    assert normalize_answer("The  Cat!") == "cat"
    assert normalize_answer("An apple, a pear and THE plum.") == "apple pear and plum"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_token_f1_partial_overlap():
    # normalized: "big red dog" vs "red dog barked": 2 shared, p = 2/3, r = 2/3 -> F1 2/3
    assert token_f1("The big red dog", "a red dog barked.") == pytest.approx(2 / 3)
    # "new york" vs "new york city": p = 1, r = 2/3 -> F1 = 0.8
    assert token_f1("New York", "New York City") == pytest.approx(0.8)
    assert token_f1("Paris", "London") == 0.0
    assert token_f1("the cat", "Cat.") == 1.0


def test_record_metrics_takes_the_max_over_golds():
    pred = ["Barack Obama", "the White House", "Paris"]
    golds = [["Obama", "Barack Obama"], ["White House press office"], ["London", "Rome"]]
    m = record_metrics(pred, golds)
    # ex 1: EM 1 (second gold), F1 1; ex 2: "white house" vs "white house press office":
    # p 1, r 1/2 -> F1 2/3, EM 0; ex 3: 0 and 0
    assert m["n"] == 3
    assert m["em"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert record_metrics([], []) == {"f1": 0.0, "em": 0.0, "n": 0}
    with pytest.raises(ValueError):
        record_metrics(["x"], [[]])
