"""Indicators against pandas rolling windows, vectorbt and hand-written sums."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from strategies.indicators import (average_true_range, ewma_variance, log_returns, moving_average,
                                   rolling_std, rolling_sum)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    rng = np.random.default_rng(7)
    v = 100 + np.cumsum(rng.standard_normal(500))
    v[100] = np.nan  # a hole: windows containing it must be NaN, as in pandas
    return v


def test_sma_matches_pandas_rolling_mean(x):
    got = moving_average(x, [5, 24, 3])
    assert sorted(got) == [3, 5, 24]
    for w, arr in got.items():
        ref = pd.Series(x).rolling(w, min_periods=w).mean().to_numpy()
        np.testing.assert_allclose(arr, ref, rtol=1e-12, atol=1e-12, equal_nan=True)
        assert np.isnan(arr[: w - 1]).all() and np.isfinite(arr[w - 1])


def test_ema_matches_pandas_ewm_span(x):
    y = x[:100]  # before the hole: pandas and vectorbt treat NaN in an EWM differently
    got = moving_average(y, [10], ewm=True)[10]
    ref = pd.Series(y).ewm(span=10, adjust=False, min_periods=10).mean().to_numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("ewm", [False, True])
def test_moving_averages_are_vectorbts_bit_for_bit(x, ewm):
    """strategies/nb.py reproduces vectorbt's MA (which it replaced, to spare the sweep vectorbt's
    import) to the last bit: holes, a leading NaN, windows of 1 bar up to longer than the series."""
    import vectorbt as vbt

    y = x.copy()
    y[0] = np.nan
    y[250:253] = np.nan
    y[400] = y[399]  # a repeated value (vectorbt's EWM skips the update on a constant)
    windows = [1, 2, 3, 24, 100, 499, 500, 600]
    got = moving_average(y, windows, ewm=ewm)
    want = vbt.MA.run(pd.Series(y), window=windows, ewm=ewm, param_product=True).ma.to_numpy()
    for i, w in enumerate(windows):
        assert np.array_equal(got[w], want[:, i], equal_nan=True), w
    assert np.isfinite(got[24]).sum() > 100  # compared on numbers, not on NaN alone


def test_moving_average_refuses_a_window_below_one_bar(x):
    with pytest.raises(ValueError, match="window 0 must be at least 1 bar"):
        moving_average(x, [0, 5])


def test_rolling_std_matches_pandas_sample_std(x):
    for w, arr in rolling_std(x, [2, 20]).items():
        ref = pd.Series(x).rolling(w, min_periods=w).std(ddof=1).to_numpy()
        np.testing.assert_allclose(arr, ref, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_atr_matches_true_range_by_hand():
    high = np.array([10.0, 12.0, 11.0, 15.0, 14.0])
    low = np.array([9.0, 10.0, 8.0, 12.0, 13.0])
    close = np.array([9.5, 11.0, 10.0, 14.0, 13.5])
    # TR_0 = H-L = 1; TR_1 = max(2, |12-9.5|, |10-9.5|) = 2.5; TR_2 = max(3, 0, 3) = 3;
    # TR_3 = max(3, 5, 2) = 5; TR_4 = max(1, 0, 1) = 1.
    tr = [1.0, 2.5, 3.0, 5.0, 1.0]
    got = average_true_range(high, low, close, [2])[2]
    expected = [np.nan, (tr[0] + tr[1]) / 2, (tr[1] + tr[2]) / 2, (tr[2] + tr[3]) / 2, (tr[3] + tr[4]) / 2]
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)


def test_ewma_variance_is_the_normalised_weighted_sum():
    r = np.array([np.nan, 0.1, -0.2, 0.05])
    got = ewma_variance(r, halflife_bars=1.0, min_periods=1)
    # half-life 1 bar -> weights 1, 1/2, 1/4 (newest first), normalised.
    assert np.isnan(got[0])
    assert got[1] == pytest.approx(0.01, rel=1e-12)
    assert got[2] == pytest.approx((0.04 + 0.5 * 0.01) / 1.5, rel=1e-12)
    assert got[3] == pytest.approx((0.0025 + 0.5 * 0.04 + 0.25 * 0.01) / 1.75, rel=1e-12)
    assert np.isnan(ewma_variance(r, 1.0, min_periods=3)[2])


def test_log_returns_and_rolling_sum():
    np.testing.assert_allclose(log_returns(np.array([1.0, np.e, 1.0])), [np.nan, 1.0, -1.0], equal_nan=True)
    np.testing.assert_allclose(rolling_sum(np.array([1.0, np.nan, 2.0, 4.0]), 2), [np.nan, 1.0, 2.0, 6.0],
                               equal_nan=True)
