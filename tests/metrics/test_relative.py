"""Relative metrics (beta, correlation, excess return) against numpy's closed forms on hand arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backtest.metrics import METRIC_DOCS, MetricsInputError, compute_metrics
from tests.report.report_factories import from_equity

# the underlying's close at each bar (bar 0's return is not defined: the price before it is not
# in the series); bar returns u = +10 %, -5 %, +2 %, -8 %, +4 %
PRICE = np.array([100.0, 110.0, 104.5, 106.59, 98.0628, 101.985312])
U = PRICE[1:] / PRICE[:-1] - 1.0


def _equity_from_returns(r0: float, r: np.ndarray, initial: float = 100.0) -> np.ndarray:
    """An equity path whose bar returns are r0 (bar 0) then r (bars 1..)."""
    return initial * np.cumprod(np.r_[1.0 + r0, 1.0 + r])


def _with_underlying(eq: np.ndarray, price=PRICE, **kw):
    return dataclasses.replace(from_equity(eq, **kw), underlying=np.asarray(price, dtype=np.float64))


def test_beta_and_correlation_are_numpys_cov_and_corrcoef():
    # c0: twice the underlying's returns (beta 2, correlation 1); c1: minus the underlying's
    # (beta -1, correlation -1); c2: hand returns unrelated to it; bar 0 moves too (a fee), and
    # is left out of the pairing
    r2 = np.array([0.03, -0.01, 0.02, 0.0, -0.04])
    eq = np.column_stack([_equity_from_returns(-0.001, 2 * U), _equity_from_returns(0.0, -U),
                          _equity_from_returns(0.01, r2)])
    m = compute_metrics(_with_underlying(eq))["columns"]
    for label, r in (("c0", 2 * U), ("c1", -U), ("c2", r2)):
        cov = np.cov(r, U)  # the closed forms: sample covariance matrix and Pearson correlation
        assert m[label]["beta"] == pytest.approx(cov[0, 1] / cov[1, 1], rel=1e-12)
        assert m[label]["correlation"] == pytest.approx(np.corrcoef(r, U)[0, 1], rel=1e-12)
    assert m["c0"]["beta"] == pytest.approx(2.0, rel=1e-12)
    assert m["c0"]["correlation"] == pytest.approx(1.0, rel=1e-12)
    assert m["c1"]["beta"] == pytest.approx(-1.0, rel=1e-12)
    assert m["c1"]["correlation"] == pytest.approx(-1.0, rel=1e-12)
    # hand value of c2: cov / var from the sums, written out
    du, dr = U - U.mean(), r2 - r2.mean()
    assert m["c2"]["beta"] == pytest.approx(np.sum(dr * du) / np.sum(du * du), rel=1e-12)
    assert abs(m["c2"]["correlation"]) < 1.0


def test_excess_return_is_total_return_minus_the_underlyings():
    eq = np.column_stack([_equity_from_returns(0.0, 2 * U), np.full(6, 100.0)])
    m = compute_metrics(_with_underlying(eq))["columns"]
    u_total = PRICE[-1] / PRICE[0] - 1.0
    assert m["c0"]["excess_return"] == pytest.approx(np.prod(1 + 2 * U) - 1 - u_total, rel=1e-12)
    assert m["c1"]["excess_return"] == pytest.approx(-u_total, rel=1e-12)  # cash: total return 0


def test_a_flat_column_has_beta_0_and_no_correlation():
    m = compute_metrics(_with_underlying(np.full(6, 100.0)))["columns"]["c0"]
    assert m["beta"] == 0.0
    assert m["correlation"] is None


def test_a_constant_underlying_has_no_beta():
    m = compute_metrics(_with_underlying(_equity_from_returns(0.0, U), price=np.full(6, 50.0)))["columns"]["c0"]
    assert m["beta"] is None and m["correlation"] is None
    assert m["excess_return"] == pytest.approx(np.prod(1 + U) - 1, rel=1e-12)


def test_without_an_underlying_the_relative_metrics_are_null():
    res = from_equity(_equity_from_returns(0.0, U))
    assert res.underlying is None
    m = compute_metrics(res)["columns"]["c0"]
    assert (m["beta"], m["correlation"], m["excess_return"]) == (None, None, None)


def test_invariants_scale_of_the_price_and_of_the_capital():
    # beta and correlation depend on returns only: a price in another unit, or ten times the
    # capital, change nothing
    r = np.array([0.03, -0.01, 0.02, 0.0, -0.04])
    eq = _equity_from_returns(0.0, r)
    a = compute_metrics(_with_underlying(eq))["columns"]["c0"]
    b = compute_metrics(_with_underlying(eq * 10, price=PRICE / 7, initial=1000.0))["columns"]["c0"]
    for k in ("beta", "correlation", "excess_return"):
        assert b[k] == pytest.approx(a[k], rel=1e-12)


def test_capital_added_is_a_flow_not_a_return():
    # a top-up of 50 at bar 3: the flow return r_t = E_t / (E_{t-1} + F_t) - 1 is what is paired
    r = 2 * U
    eq = _equity_from_returns(0.0, r)
    added = np.zeros(6)
    eq_topped = eq.copy()
    eq_topped[3:] = eq[3:] * (eq[2] + 50.0) / eq[2]  # the same returns on a larger base from bar 3
    added[3:] = 50.0
    m = compute_metrics(_with_underlying(eq_topped, capital_added=added))["columns"]["c0"]
    assert m["beta"] == pytest.approx(2.0, rel=1e-12)


def test_two_bars_are_too_few():
    m = compute_metrics(_with_underlying(np.array([100.0, 105.0]), price=PRICE[:2]))["columns"]["c0"]
    assert m["beta"] is None and m["correlation"] is None


@pytest.mark.parametrize("bad, what", [(np.nan, "nan"), (0.0, "0.0"), (-1.0, "-1.0")])
def test_a_bad_underlying_price_is_named_with_its_bar(bad, what):
    price = PRICE.copy()
    price[3] = bad
    with pytest.raises(MetricsInputError, match=rf"underlying is {what} at bar 3 .*finite and > 0"):
        compute_metrics(_with_underlying(np.full(6, 100.0), price=price))


def test_the_keys_are_documented():
    for k in ("beta", "correlation", "excess_return"):
        assert k in METRIC_DOCS
