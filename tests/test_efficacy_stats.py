"""The paired statistics of `synthkd efficacy` against hand-computed cases (issue 20)."""

from __future__ import annotations

import pytest

from synthkd.efficacy.stats import (NO_DIFFERENCE, PAYS_OFF, WORSE, detectable_difference, holm, mcnemar,
                                    paired_bootstrap, seed_spread, verdict)


def test_mcnemar_exact_by_hand() -> None:
    # Baseline right and arm wrong on 2 prompts, the reverse on 8, agreement on 5:
    # two-sided exact binomial p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10 = 2 * 56 / 1024.
    baseline = [True] * 2 + [False] * 8 + [True] * 3 + [False] * 2
    arm = [False] * 2 + [True] * 8 + [True] * 3 + [False] * 2
    result = mcnemar(baseline, arm)
    assert (result.b, result.c) == (2, 8)
    assert result.p_value == pytest.approx(112 / 1024)
    assert mcnemar([True, False], [True, False]).p_value == 1.0  # no discordant prompt: nothing to tell
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])


def test_holm_by_hand() -> None:
    # m = 3: sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06.
    assert holm({"lion": 0.04, "dpo": 0.01, "bon": 0.03}) == pytest.approx({"dpo": 0.03, "bon": 0.06, "lion": 0.06})
    assert holm({"one": 0.7, "two": 0.9}) == {"one": 1.0, "two": 1.0}


def test_paired_bootstrap_by_hand() -> None:
    baseline = [[1, 0, 1, 0, 0, 1, 0, 0]]
    arm = [[1, 1, 1, 0, 1, 1, 0, 1]]  # right on 3 more prompts of 8, never worse: mean gain 3/8
    diff = paired_bootstrap(baseline, arm, resamples=4000, seed=1)
    assert diff.mean == pytest.approx(3 / 8)
    assert 0 <= diff.ci_low < 3 / 8 < diff.ci_high <= 1
    assert diff.n_prompts == 8 and diff.p_value < 0.05  # a difference never below zero on any resample
    # Two seeds a side: the statistic is the prompt mean of the seed means.
    two = paired_bootstrap([[0, 0, 1], [0, 1, 1]], [[1, 1, 1], [1, 0, 1]], resamples=500)
    assert two.mean == pytest.approx(((1 - 0) + (0.5 - 0.5) + (1 - 1)) / 3)
    assert (two.arm_seeds, two.baseline_seeds) == (2, 2)
    constant = paired_bootstrap([[0.2, 0.4, 0.1]], [[0.7, 0.9, 0.6]], resamples=300)
    assert (constant.ci_low, constant.ci_high) == pytest.approx((0.5, 0.5))


def test_identical_arms_show_no_detectable_difference() -> None:
    seeds = [[1, 0, 1, 1, 0, 0, 1, 0, 1, 1], [1, 0, 0, 1, 0, 1, 1, 0, 1, 1]]
    diff = paired_bootstrap(seeds, seeds, resamples=1000)
    assert diff.mean == 0 and diff.p_value == 1.0
    assert verdict(diff, seed_spread(seeds)) == NO_DIFFERENCE
    smallest = detectable_difference(seeds, seeds)
    # Ten prompts of a 0/1 score cannot tell small gains apart: 2.8 * sd * sqrt(2/10) = 0.58 here.
    assert 0.5 < smallest < 0.7


def test_a_gain_must_beat_the_baselines_seed_spread() -> None:
    baseline = [[0.0] * 20 + [1.0] * 20, [0.0] * 16 + [1.0] * 24]  # seeds 0.5 and 0.6: spread 0.1
    arm = [[0.0] * 17 + [1.0] * 23]  # +0.025 on average over the baseline's seed mean 0.55, far inside the spread
    diff = paired_bootstrap(baseline, arm, resamples=1000)
    assert verdict(diff, seed_spread(baseline)) == NO_DIFFERENCE
    better = [[0.0] * 4 + [1.0] * 36]
    clear = paired_bootstrap(baseline, better, resamples=1000)
    assert clear.ci_low > 0 and verdict(clear, seed_spread(baseline)) == PAYS_OFF
    assert verdict(clear, seed_spread(baseline), adjusted_p=0.2) == NO_DIFFERENCE  # not significant after Holm
    worse = paired_bootstrap(baseline, [[0.0] * 36 + [1.0] * 4], resamples=1000)
    assert verdict(worse, seed_spread(baseline)) == WORSE
