"""Robustness next to a sweep's ranking: the deflated Sharpe ratio against the paper's numerical
example, moments against closed forms, parameter neighbours on a hand-made grid."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest.runner.robust import (deflated_sharpe, expected_max_sharpe, moments, neighbours, robustness)


def test_deflated_sharpe_reproduces_the_papers_numerical_example():
    """Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", section "A numerical example":
    N = 100 trials whose annualised Sharpe ratios have variance 1/2, the best annualised Sharpe
    2.5 over T = 1,250 daily returns (5 years of 250 days), skewness -3, kurtosis 10:
    SR0 = 0.1132 (per day) and DSR = 0.9004.

    By hand: V per day = 0.5 / 250 = 0.002; Z^-1(0.99) = 2.32635, Z^-1(1 - 1/(100 e)) = 2.68059;
    SR0 = sqrt(0.002) * (0.42278 * 2.32635 + 0.57722 * 2.68059) = 0.044721 * 2.53089 = 0.11318.
    SR = 2.5 / sqrt(250) = 0.158114; denominator sqrt(1 + 3 * 0.158114 + 9 / 4 * 0.025) = 1.23719;
    z = (0.158114 - 0.11318) * sqrt(1249) / 1.23719 = 1.2838; Z(1.2838) = 0.9004."""
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_expected_max_sharpe_limits():
    assert expected_max_sharpe(1, 0.3) == 0.0  # nothing selected from one trial
    assert expected_max_sharpe(100, 0.0) == 0.0
    # grows with the trials and with the spread (sqrt(V))
    assert expected_max_sharpe(1000, 1.0) > expected_max_sharpe(100, 1.0) > expected_max_sharpe(10, 1.0) > 0
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0))
    with pytest.raises(ValueError, match="n_trials=0"):
        expected_max_sharpe(0, 1.0)


def test_dsr_of_one_normal_trial_is_the_probabilistic_sharpe_ratio():
    # N = 1: SR0 = 0, normal moments: Z(SR sqrt(T - 1) / sqrt(1 + SR^2 / 2))
    sr = 0.05
    assert deflated_sharpe(sr, 0.0, 401, 0.0, 3.0) == pytest.approx(
        0.5 * math.erfc(-(sr * 20 / math.sqrt(1 + sr * sr / 2)) / math.sqrt(2)), rel=1e-12)
    assert deflated_sharpe(0.1, 0.1, 100, 0.0, 3.0) == pytest.approx(0.5)


def test_moments_of_a_two_point_distribution():
    # +a and -a equally often: skewness 0, kurtosis 1; mean 0 so Sharpe 0
    r = np.array([0.01, -0.01] * 50)
    sr, skew, kurt = moments(r)
    assert sr == 0.0 and skew == pytest.approx(0.0, abs=1e-12) and kurt == pytest.approx(1.0, rel=1e-12)
    # Bernoulli(p) shifted: skewness (1 - 2p) / sqrt(p q), kurtosis (1 - 3 p q) / (p q)
    p = 0.2
    r = np.array([1.0] * 20 + [0.0] * 80)
    _, skew, kurt = moments(r)
    assert skew == pytest.approx((1 - 2 * p) / math.sqrt(p * (1 - p)), rel=1e-12)
    assert kurt == pytest.approx((1 - 3 * p * (1 - p)) / (p * (1 - p)), rel=1e-12)


# a 3 (slow_days) x 2 (fast) x 2 (policy) grid in grid order, policy innermost
LEVELS = pd.DataFrame([(s, f, p) for s in (10, 20, 40) for f in (2.0, 5.0) for p in ("const(1)", "voltarget(0.5)")],
                      columns=["slow_days", "fast", "policy"])


def test_neighbours_are_the_adjacent_levels_on_each_axis():
    mid = 4  # slow_days=20, fast=2, const(1): position 1 * 4 + 0 * 2 + 0
    assert tuple(LEVELS.iloc[mid]) == (20, 2.0, "const(1)")
    near = neighbours(LEVELS, mid)
    assert near == {"slow_days": [0, 8], "fast": [6], "policy": [5]}
    corner = neighbours(LEVELS, 0)  # slow_days=10: one side only
    assert corner == {"slow_days": [4], "fast": [2], "policy": [1]}
    # an axis of one level is no axis
    assert "fast" not in neighbours(LEVELS[LEVELS["fast"] == 2.0].reset_index(drop=True), 0)


def test_robustness_block_on_a_hand_made_table():
    metric = np.arange(12, dtype=float)  # column c has metric c
    table = pd.DataFrame({"col": np.arange(12)[::-1], "column": [f"c{c}" for c in range(12)][::-1],
                          "sharpe": (metric / 10)[::-1], "calmar": metric[::-1]})  # any row order
    rng = np.random.default_rng(3)
    ret = rng.normal(0.001, 0.01, 500)
    out = robustness(table, LEVELS, "calmar", 4, ret, bars_per_year=365.0)
    assert out["columns_tried"] == 12
    assert out["best"] == {"column": "c4", "col": 4, "calmar": 4.0}
    nb = out["neighbours"]
    assert nb["all"]["cols"] == [0, 5, 6, 8]  # values 0, 5, 6, 8
    assert nb["all"]["median"] == 5.5 and nb["all"]["min"] == 0.0 and nb["all"]["max"] == 8.0
    # quartiles by linear interpolation: positions 0.75 and 2.25 of the sorted values
    assert nb["all"]["q25"] == pytest.approx(3.75) and nb["all"]["q75"] == pytest.approx(6.5)
    assert nb["axes"]["slow_days"]["median"] == 4.0 and nb["axes"]["policy"]["count"] == 1
    d = out["deflated_sharpe"]
    per_bar = metric / 10 / math.sqrt(365.0)
    assert d["sharpe_variance"] == pytest.approx(np.var(per_bar, ddof=1), rel=1e-12)
    assert d["expected_max_sharpe"] == pytest.approx(expected_max_sharpe(12, d["sharpe_variance"]), rel=1e-12)
    sr, skew, kurt = moments(ret)
    assert d["sharpe"] == sr and d["bars"] == 500
    assert d["dsr"] == pytest.approx(deflated_sharpe(sr, d["expected_max_sharpe"], 500, skew, kurt), rel=1e-12)
    assert 0.0 < d["dsr"] < 1.0
