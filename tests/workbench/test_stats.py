"""The statistics every report uses: Wilson and t intervals, McNemar's exact test and the
paired t-test, checked against values worked out by hand or with R."""

from __future__ import annotations

import math

import pytest

from workbench.stats import mcnemar, paired_t, score_interval, wilson_interval


def test_wilson_on_no_wins_of_two_is_not_degenerate():
    i = wilson_interval(0, 2)
    # p = 0, z = 1.95996: centre = half = (z^2/4) / (1 + z^2/2) = 0.32881
    assert i.mean == 0.0 and i.low == 0.0
    assert i.high == pytest.approx(0.65762, abs=1e-5)


def test_wilson_on_two_wins_of_two_mirrors_it():
    i = wilson_interval(2, 2)
    assert i.mean == 1.0 and i.high == 1.0
    assert i.low == pytest.approx(1 - 0.65762, abs=1e-5)


def test_wilson_inside_the_range_and_with_fractional_successes():
    # R: prop.test(7, 10, correct = FALSE)$conf.int -> 0.3967781 0.8922087
    i = wilson_interval(7, 10)
    assert (i.low, i.high) == pytest.approx((0.3967781, 0.8922087), abs=1e-6)
    half = wilson_interval(1.5, 3)  # 3 games, each won on half its trials
    assert half.mean == 0.5 and 0 < half.low < 0.5 < half.high < 1
    assert math.isnan(wilson_interval(0, 0).mean)
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(3, 2)


def test_score_interval_is_a_t_interval_with_two_pseudo_games_in_its_spread():
    # mean 0.5; squares 0.08 + 0.5^2 + 0.5^2 = 0.58 over n + 1 = 4: sd = sqrt(0.145);
    # half = t(0.975, 2) * sd / sqrt(3) = 4.302653 * 0.380789 / 1.732051 = 0.945932
    i = score_interval([0.3, 0.5, 0.7])
    assert i.mean == pytest.approx(0.5)
    assert (i.low, i.high) == (0.0, 1.0)  # clipped: three games say little
    many = score_interval([0.3, 0.5, 0.7] * 10)
    assert 0.3 < many.low < 0.5 < many.high < 0.7
    one = score_interval([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high)


def test_score_interval_of_equal_scores_does_not_collapse():
    two = score_interval([0.0, 0.0])
    assert two.mean == 0.0 and two.low == 0.0 and two.high > 0.5  # not [0%, 0%]
    # 20 games of 0: sd = sqrt(1 / 21); half = t(0.975, 19) * sd / sqrt(20) = 0.10215
    twenty = score_interval([0.0] * 20)
    assert twenty.high == pytest.approx(2.093024 * math.sqrt(1 / 21) / math.sqrt(20), abs=1e-5)
    assert score_interval([1.0] * 20).low == pytest.approx(1 - twenty.high)


def test_mcnemar_exact_on_a_known_table():
    # Paired table: both won 5, only A 1, only B 7, neither 3 (16 games).
    a = [True] * 5 + [True] * 1 + [False] * 7 + [False] * 3
    b = [True] * 5 + [False] * 1 + [True] * 7 + [False] * 3
    t = mcnemar(a, b)
    assert (t.a_only, t.b_only, t.n) == (1, 7, 16)
    # Exact two-sided binomial on 8 discordant pairs: 2 * P(X <= 1 | 8, 0.5) = 18 / 256.
    assert t.p_value == pytest.approx(18 / 256)
    assert t.difference == pytest.approx(6 / 16)
    assert t.low < t.difference < t.high


def test_mcnemar_without_discordant_pairs_finds_nothing():
    t = mcnemar([True, False, True], [True, False, True])
    assert t.p_value == 1.0 and t.difference == 0.0
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar([True], [True, False])


def test_paired_t_against_a_hand_computation():
    a, b = [0.2, 0.5, 0.4, 0.1], [0.4, 0.6, 0.7, 0.2]
    t = paired_t(a, b)
    # differences 0.2 0.1 0.3 0.1: mean 0.175, sd 0.095743, t = 3.6556 on 3 df
    # R: t.test(b, a, paired = TRUE)$p.value -> 0.03535
    assert t.difference == pytest.approx(0.175)
    assert t.p_value == pytest.approx(0.03535, abs=1e-4)
    assert t.low == pytest.approx(0.175 - 3.182446 * 0.095743 / 2, abs=1e-5)
    same = paired_t([0.5, 0.5], [0.5, 0.5])
    assert same.p_value == 1.0 and same.low == same.high == 0.0
    assert math.isnan(paired_t([0.1], [0.2]).p_value)
