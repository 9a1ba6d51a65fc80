"""The demo's report: the wording measure, the mean and std over worlds, the claims in words."""

from __future__ import annotations

import pytest

from ptune.report import aggregate, claims_in_words, mean_std, wording_spread


def test_wording_spread_is_the_std_across_a_relations_wordings_averaged_over_relations():
    out = wording_spread({"P19": [0.0, 1.0], "P36": [0.5, 0.5], "P17": []})
    assert out["relations"] == 2 and out["mean"] == pytest.approx(0.5)
    assert out["std"] == pytest.approx((0.5 + 0.0) / 2)  # population std: 0.5 for (0, 1), 0 for (0.5, 0.5)
    assert wording_spread({})["std"] is None
    assert mean_std([0.3]) == (0.3, 0.0)


def test_aggregate_gives_every_cell_mean_and_std_over_worlds():
    worlds = [{"rows": {"gpt": {"ptuning": 1.0, "hybrid": None}}, "encoders": {"gpt": {"none": 0.8}},
               "wordings": {"gpt": {"manual": {"mean": 0.2, "std": 0.3}, "hybrid": {"mean": 0.9, "std": 0.0}}}},
              {"rows": {"gpt": {"ptuning": 0.8, "hybrid": 0.6}}, "encoders": {"gpt": {"none": 0.6}},
               "wordings": {"gpt": {"manual": {"mean": 0.4, "std": 0.1}, "hybrid": {"mean": 1.0, "std": 0.02}}}}]
    agg = aggregate(worlds)
    assert agg["rows"]["gpt"]["ptuning"]["mean"] == pytest.approx(0.9)
    assert agg["rows"]["gpt"]["ptuning"]["std"] == pytest.approx(0.1)
    assert agg["rows"]["gpt"]["hybrid"]["values"] == [0.6]  # a missing value is left out, not counted as 0
    assert agg["encoders"]["gpt"]["none"]["mean"] == pytest.approx(0.7)
    assert agg["wordings"]["gpt"]["manual.std"]["mean"] == pytest.approx(0.2)
    assert agg["wordings"]["gpt"]["hybrid.std"]["values"] == [0.0, 0.02]


def test_claims_say_where_they_do_not_hold_with_the_numbers():
    worlds = [{"seed": 0, "checks": {"bert": [{"check": "hybrid >= 0.9 x oracle", "pass": True,
                                                "numbers": "0.95 vs 0.89"}]}},
              {"seed": 1, "checks": {"bert": [{"check": "hybrid >= 0.9 x oracle", "pass": False,
                                                "numbers": "0.70 vs 0.88"}]}}]
    (line,) = claims_in_words(worlds)
    assert line == "masked LM (BERT style): hybrid >= 0.9 x oracle: DOES NOT HOLD on 1 of 2 world(s) (seed 1: 0.70 vs 0.88)"
    (line,) = claims_in_words(worlds[:1])
    assert line == "masked LM (BERT style): hybrid >= 0.9 x oracle: holds on the world (0.95 vs 0.89)"
