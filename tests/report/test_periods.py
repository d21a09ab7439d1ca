"""Period returns and drawdown spells (backtest/report/periods.py) against closed forms,
hand-computed growth paths, and the metrics' own (independent) drawdown and return numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backtest.metrics import compute_metrics
from backtest.metrics.returns import flow_returns, growth_index
from backtest.report.periods import drawdown_spells, period_returns, worst_drawdowns
from report_factories import H, from_equity

D = 86_400_000


def ms(ts: str) -> int:
    return int(pd.Timestamp(ts, tz="UTC").value // 10**6)


def daily(start: str, end: str) -> np.ndarray:
    return (pd.date_range(start, end, freq="D", tz="UTC").as_unit("ms").asi8).astype(np.int64)


# --- period returns: a constant daily rate has closed-form period returns -------------------

R_UP, R_DOWN = 0.001, -0.002


@pytest.fixture(scope="module")
def constant_rate():
    """Daily bars 2023-06-15 .. 2024-03-10 (Feb 2024 has 29 days) with G_t = (1 + r)^(t + 1)."""
    t_ms = daily("2023-06-15", "2024-03-10")
    t = np.arange(len(t_ms))[:, None]
    g = (1.0 + np.array([R_UP, R_DOWN]))[None, :] ** (t + 1)
    return t_ms, g


# days of each month inside the window, counted on a calendar by hand
MONTH_DAYS = {"2023-06": 16, "2023-07": 31, "2023-08": 31, "2023-09": 30, "2023-10": 31, "2023-11": 30,
              "2023-12": 31, "2024-01": 31, "2024-02": 29, "2024-03": 10}
YEAR_DAYS = {"2023": 200, "2024": 70}


@pytest.mark.parametrize("freq, days", [("month", MONTH_DAYS), ("year", YEAR_DAYS)])
def test_constant_rate_periods_are_closed_form(constant_rate, freq, days):
    t_ms, g = constant_rate
    pr = period_returns(g, t_ms, D, freq)
    assert pr.labels == list(days)
    assert pr.bars.tolist() == list(days.values())
    for i, n in enumerate(days.values()):
        np.testing.assert_allclose(pr.returns[i], (1 + np.array([R_UP, R_DOWN])) ** n - 1, rtol=1e-12)


def test_period_bounds_and_partial_periods(constant_rate):
    t_ms, g = constant_rate
    pr = period_returns(g, t_ms, D, "month")
    # the window starts on the 15th and ends on the 10th: only the first and last months are partial
    assert pr.partial.tolist() == [True] + [False] * 8 + [True]
    assert pr.start_ms[0] == ms("2023-06-15") and pr.end_ms[0] == ms("2023-07-01")
    assert pr.start_ms[8] == ms("2024-02-01") and pr.end_ms[8] == ms("2024-03-01")
    assert pr.end_ms[-1] == ms("2024-03-11")  # close of the last daily bar
    years = period_returns(g, t_ms, D, "year")
    assert years.partial.tolist() == [True, True]


def test_hourly_bars_group_by_the_utc_month_of_their_open_time():
    """The bar opening 2022-03-31 23:00 belongs to March; its close (April 1st 00:00) ends March."""
    t_ms = np.arange(ms("2022-03-31 22:00"), ms("2022-04-01 02:00"), H, dtype=np.int64)  # 4 bars
    g = np.array([1.1, 1.21, 1.331, 1.4641])
    pr = period_returns(g, t_ms, H, "month")
    assert pr.labels == ["2022-03", "2022-04"]
    assert pr.bars.tolist() == [2, 2]
    np.testing.assert_allclose(pr.returns[:, 0], [0.21, 0.21], rtol=1e-12)
    assert pr.end_ms.tolist() == [ms("2022-04-01"), ms("2022-04-01 02:00")]


def test_a_ruined_account_loses_everything_once_then_returns_zero():
    t_ms = daily("2022-01-30", "2022-04-02")
    g = np.ones(len(t_ms))
    g[t_ms >= ms("2022-02-10")] = 0.0  # wiped out on Feb 10th
    g[t_ms < ms("2022-02-01")] = 1.5
    pr = period_returns(g, t_ms, D, "month")
    assert pr.labels == ["2022-01", "2022-02", "2022-03", "2022-04"]
    np.testing.assert_array_equal(pr.returns[:, 0], [0.5, -1.0, 0.0, 0.0])


def test_period_returns_reject_bad_input():
    t_ms = daily("2022-01-01", "2022-01-05")
    with pytest.raises(ValueError, match="freq='week'"):
        period_returns(np.ones(5), t_ms, D, "week")
    with pytest.raises(ValueError, match=r"shape \(4,\).*5 bars"):
        period_returns(np.ones(5), t_ms[:4], D, "month")
    with pytest.raises(ValueError, match="not strictly increasing"):
        period_returns(np.ones(5), t_ms[::-1].copy(), D, "month")
    with pytest.raises(ValueError, match=r"growth\[2, 0\] = nan"):
        period_returns(np.array([1.0, 1.0, np.nan, 1.0, 1.0]), t_ms, D, "month")
    with pytest.raises(ValueError, match="bar_ms=0"):
        period_returns(np.ones(5), t_ms, 0, "month")


# --- drawdown spells: a hand-computed growth path --------------------------------------------

T0 = ms("2022-03-01")
# points: start 1.0, then the closes 1.2, 0.9, 1.2, 1.5, 1.0, 1.2, 0.75
PATH = np.array([1.2, 0.9, 1.2, 1.5, 1.0, 1.2, 0.75])
OPEN = T0 + H * np.arange(len(PATH), dtype=np.int64)


def test_spells_of_a_hand_path():
    sp = drawdown_spells(PATH, OPEN, H)
    # A: peak 1.2 at the close of bar 0 (01:00), trough 0.9 (02:00), back to 1.2 at 03:00 (equal = recovered)
    # B: peak 1.5 at 04:00, 1.0 and 1.2 stay under it, trough 0.75 at the last close 07:00, not recovered
    assert sp["peak_ms"].tolist() == [T0 + H, T0 + 4 * H]
    assert sp["trough_ms"].tolist() == [T0 + 2 * H, T0 + 7 * H]
    assert sp["recovery_ms"].tolist() == [T0 + 3 * H, pd.NA]
    assert sp["recovered"].tolist() == [True, False]
    np.testing.assert_allclose(sp["depth"], [1 - 0.9 / 1.2, 1 - 0.75 / 1.5], rtol=1e-15)
    assert sp["peak_to_trough_bars"].tolist() == [1, 3]
    assert sp["duration_bars"].tolist() == [2, 3]


def test_worst_drawdowns_rank_deepest_first_and_agree_with_the_metrics():
    w = worst_drawdowns(PATH, OPEN, H, n=5)
    assert w["rank"].tolist() == [1, 2]
    assert w["depth"].tolist() == pytest.approx([0.5, 0.25], rel=1e-15)
    assert w["duration_days"].tolist() == pytest.approx([3 / 24, 2 / 24], rel=1e-15)
    assert w["peak_to_trough_days"].tolist() == pytest.approx([3 / 24, 1 / 24], rel=1e-15)
    assert worst_drawdowns(PATH, OPEN, H, n=1)["depth"].tolist() == pytest.approx([0.5])
    m = compute_metrics(from_equity(100 * PATH))["columns"]["c0"]
    assert m["max_drawdown"] == pytest.approx(w["depth"][0], rel=1e-12)
    assert m["max_drawdown_duration_bars"] == w["duration_days"][0] * 24
    assert m["max_drawdown_recovered"] is bool(w["recovered"][0])


def test_a_loss_on_the_first_bar_starts_at_the_start():
    sp = drawdown_spells(np.array([0.8, 1.0, 1.1]), OPEN[:3], H)
    assert sp["peak_ms"].tolist() == [T0]  # the start (first bar's open) is a peak
    assert sp["trough_ms"].tolist() == [T0 + H] and sp["recovery_ms"].tolist() == [T0 + 2 * H]
    assert sp["depth"].tolist() == pytest.approx([0.2])


def test_no_drawdown_and_equal_depths():
    assert len(drawdown_spells(np.array([1.0, 1.1, 1.2]), OPEN[:3], H)) == 0
    assert len(worst_drawdowns(np.array([1.0, 1.1, 1.2]), OPEN[:3], H)) == 0
    # two spells of the same depth (10 %): the earlier ranks first
    w = worst_drawdowns(np.array([0.9, 1.0, 0.9, 1.0]), OPEN[:4], H)
    assert w["peak_ms"].tolist() == [T0, T0 + 2 * H]
    with pytest.raises(ValueError, match="n=0"):
        worst_drawdowns(PATH, OPEN, H, n=0)
    with pytest.raises(ValueError, match="2 columns"):
        drawdown_spells(np.ones((3, 2)), OPEN[:3], H)


def test_a_ruined_path_is_one_unrecovered_spell_of_depth_one():
    sp = drawdown_spells(np.array([0.5, 0.0, 0.0]), OPEN[:3], H)
    assert sp["depth"].tolist() == [1.0] and sp["recovered"].tolist() == [False]
    assert sp["trough_ms"].tolist() == [T0 + 2 * H]  # the first point at zero


# --- invariants against the metrics (an independent implementation) --------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.3, 0.3), min_size=2, max_size=300), st.sampled_from([H, 4 * H, D]))
@example([-0.1, 0.125, 0.1, -0.2, 0.25, -0.3, 0.0, 0.25, 0.25], D)  # back at a peak up to the last bit
def test_periods_compound_and_the_deepest_spell_is_max_drawdown(rets, bar_ms):
    r = np.asarray(rets)
    equity = 100 * np.cumprod(1 + r)
    res = from_equity(equity, bar_ms=bar_ms, start="2021-12-20")
    m = compute_metrics(res)["columns"]["c0"]
    # the growth index the metrics and the report both measure (equity.parquet's ``growth``): from
    # the equity's flow returns, not equity / 100, which differs in the last bits and decides
    # otherwise whether a point is back at its peak
    g = growth_index(flow_returns(equity[:, None], np.zeros((len(equity), 1)), np.array([100.0])))[:, 0]
    t_ms = (res.index.as_unit("ms").asi8).astype(np.int64)
    years = period_returns(g, t_ms, bar_ms, "year")
    months = period_returns(g, t_ms, bar_ms, "month")
    assert np.prod(1 + years.returns[:, 0]) - 1 == pytest.approx(m["total_return"], rel=1e-9, abs=1e-12)
    # the months of each year compound to the year's return
    month_year = np.array([lab[:4] for lab in months.labels])
    for i, year in enumerate(years.labels):
        assert np.prod(1 + months.returns[month_year == year, 0]) == pytest.approx(1 + years.returns[i, 0],
                                                                                   rel=1e-9)
    spells = worst_drawdowns(g, t_ms, bar_ms, n=None)
    if m["max_drawdown"] == 0:
        assert len(spells) == 0
        return
    assert spells["depth"][0] == pytest.approx(m["max_drawdown"], rel=1e-9)
    assert int(spells["duration_bars"].max()) == m["longest_drawdown_bars"]
    if (spells["depth"] == spells["depth"][0]).sum() == 1:  # a unique deepest spell
        assert int(spells["duration_bars"][0]) == m["max_drawdown_duration_bars"]
    # spells are disjoint and in time order by peak
    by_time = spells.sort_values("peak_ms")
    ends = by_time["recovery_ms"].fillna(np.iinfo(np.int64).max).to_numpy(dtype=np.int64)
    assert np.all(by_time["peak_ms"].to_numpy()[1:] >= ends[:-1])
