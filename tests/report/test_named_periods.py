"""Named periods ([[period]]) on a hand equity path: return, max drawdown, Sharpe, liquidations and
funding net per period and column, the Parquet file, the page and the config."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest.report import collect, load_stored, render_html, store_run
from backtest.report.build import build_report
from backtest.report.named_periods import NAMED_COLUMNS, NamedPeriodError
from backtest.runner.config import ConfigError, parse_config
from tests.report.report_factories import LIQ, from_equity

DAY = 86_400_000
T0 = int(pd.Timestamp("2022-03-01", tz="UTC").value // 1_000_000)  # bar 0 opens 2022-03-01
# c0 moves, c1 stays flat (liquidated twice on paper), c2 is wiped out in bar 1
EQUITY = np.array([
    [100.0, 100.0, 100.0],
    [110.0, 100.0, 0.0],
    [99.0, 100.0, 0.0],
    [121.0, 100.0, 0.0],
    [121.0, 100.0, 0.0],
    [133.1, 100.0, 0.0],
])
CUM_FUNDING = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.5, 0.0],
                        [3.0, 0.5, 0.0], [4.0, 0.5, 0.0]])
PRICE_USD = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
PERIODS = [("A", T0 + DAY, T0 + 4 * DAY),        # bars 1, 2, 3
           ("B", T0 + 4 * DAY, T0 + 9 * DAY),    # bars 4, 5: the data ends on day 6 (partial)
           ("early", T0 - 30 * DAY, T0 + 2 * DAY)]  # bars 0, 1: starts before the data (partial)


def _result():
    liq = np.zeros(2, dtype=LIQ)
    liq["bar"], liq["col"] = [2, 5], [1, 1]
    return from_equity(EQUITY * 1.0, bar_ms=DAY, start="2022-03-01", price_usd=PRICE_USD,
                       extra={"cum_funding": CUM_FUNDING}, records={"liquidations": liq},
                       columns=["c0", "c1", "c2"])


def _table(periods=PERIODS):
    run = collect({"r": _result()}, title="t", periods=periods)
    return run, run.named_table()


def _row(t, period, column, basis="settle"):
    sel = t[(t["period"] == period) & (t["column"] == column) & (t["basis"] == basis)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_period_a_by_hand():
    _, t = _table()
    a = _row(t, "A", "c0")
    # growth before the period: bar 0's close, 1.0; at its last bar (3): 1.21
    assert a["return"] == pytest.approx(0.21, rel=1e-12)
    # points 1.0, 1.1, 0.99, 1.21: from the peak 1.1 down to 0.99
    assert a["max_drawdown"] == pytest.approx(0.1, rel=1e-12)
    r = np.array([0.1, -0.1, 121.0 / 99.0 - 1.0])
    mean = r.sum() / 3
    std = math.sqrt(((r - mean) ** 2).sum() / 2)
    assert a["sharpe"] == pytest.approx(mean / std * math.sqrt(365), rel=1e-12)
    assert a["funding_net"] == pytest.approx(3.0 - 0.0, rel=1e-12)  # cum_funding at bar 3 less at bar 0
    assert (a["bars"], a["first_ms"], a["last_ms"], bool(a["partial"])) == (3, T0 + DAY, T0 + 4 * DAY, False)
    # USD: each bar's funding at that bar's USD price (1 at bar 1, 2 more at bar 3 at 2 USD)
    assert _row(t, "A", "c0", "usd")["funding_net"] == pytest.approx(1.0 * 1.0 + 2.0 * 2.0, rel=1e-12)


def test_flat_and_wiped_out_columns_and_liquidations():
    _, t = _table()
    flat = _row(t, "A", "c1")
    assert flat["return"] == 0.0 and flat["max_drawdown"] == 0.0 and np.isnan(flat["sharpe"])
    assert flat["liquidations"] == 1 and flat["funding_net"] == pytest.approx(0.5)  # the one at bar 2
    assert _row(t, "B", "c1")["liquidations"] == 1  # the one at bar 5
    assert _row(t, "A", "c0")["liquidations"] == 0
    assert _row(t, "A", "c2")["return"] == -1.0  # wiped out in bar 1, inside A
    gone = _row(t, "B", "c2")  # nothing left before the period: it earned nothing, lost nothing more
    assert gone["return"] == 0.0 and gone["max_drawdown"] == 0.0


def test_partial_periods_say_which_bars_were_measured():
    _, t = _table()
    b = _row(t, "B", "c0")
    assert bool(b["partial"]) and b["bars"] == 2
    assert (b["start_ms"], b["end_ms"], b["first_ms"], b["last_ms"]) == (T0 + 4 * DAY, T0 + 9 * DAY, T0 + 4 * DAY,
                                                                         T0 + 6 * DAY)
    assert b["return"] == pytest.approx(133.1 / 121.0 - 1, rel=1e-12) and b["max_drawdown"] == 0.0
    e = _row(t, "early", "c0")
    assert bool(e["partial"]) and e["bars"] == 2 and e["return"] == pytest.approx(0.1, rel=1e-12)
    # c2 loses everything in bar 1 of the early period
    assert _row(t, "early", "c2")["return"] == -1.0 and _row(t, "early", "c2")["max_drawdown"] == 1.0


def test_consecutive_periods_compound_to_the_total():
    periods = [("p1", T0, T0 + 2 * DAY), ("p2", T0 + 2 * DAY, T0 + 6 * DAY)]
    run, t = _table(periods)
    total = run.metrics["results"]["r"]["settle"]["columns"]["c0"]["total_return"]
    r1, r2 = _row(t, "p1", "c0")["return"], _row(t, "p2", "c0")["return"]
    assert (1 + r1) * (1 + r2) - 1 == pytest.approx(total, rel=1e-12)
    whole = collect({"r": _result()}, title="t", periods=[("all", T0, T0 + 6 * DAY)]).named_table()
    m = run.metrics["results"]["r"]["settle"]["columns"]["c0"]
    assert _row(whole, "all", "c0")["max_drawdown"] == pytest.approx(m["max_drawdown"], rel=1e-12)
    assert _row(whole, "all", "c0")["sharpe"] == pytest.approx(m["sharpe"], rel=1e-9)


def test_a_period_without_bars_and_bad_periods_are_refused():
    with pytest.raises(NamedPeriodError, match=r"period 'april' \(2022-04-01.*holds no bar of result 'r'.*remove it"):
        _table([("april", T0 + 31 * DAY, T0 + 61 * DAY)])
    for bad, msg in (([("x", 5, 5)], "not after"), ([("x", 1, 2), ("x", 3, 4)], "used twice"),
                     ([("", 1, 2)], "non-empty"), ([("x", 1.5, 2)], "int milliseconds")):
        with pytest.raises(ValueError, match=msg):
            collect({"r": _result()}, title="t", periods=bad)


def test_stored_as_parquet_and_read_back(tmp_path):
    run, t = _table()
    out = store_run(run, tmp_path / "rep", html=False)
    stored = pd.read_parquet(out / "named_periods.parquet")
    assert list(stored.columns) == list(NAMED_COLUMNS)
    assert len(stored) == 3 * 3 * 2  # periods x columns x bases
    pd.testing.assert_frame_equal(stored, t.reset_index(drop=True))
    back = load_stored(out)
    pd.testing.assert_frame_equal(back.named_table(), stored)
    (out / "named_periods.parquet").unlink()  # recomputed from equity.parquet and events.parquet
    again = load_stored(out).named_table()
    pd.testing.assert_frame_equal(again.reset_index(drop=True), stored, check_dtype=False)


def test_no_named_periods_no_file_and_no_section(tmp_path):
    run = collect({"r": _result()}, title="t")
    out = store_run(run, tmp_path / "rep")
    assert not (out / "named_periods.parquet").exists()
    assert 'id="named-periods"' not in (out / "report.html").read_text()


def test_the_page_has_a_table_per_result():
    run, _ = _table()
    doc = build_report(run)
    named = doc["results"][0]["named"]
    assert [p["name"] for p in named["periods"]] == ["A", "B", "early"]
    assert [h["key"] for h in named["headers"][:5]] == ["return", "max_drawdown", "sharpe", "liquidations",
                                                       "funding_net"]
    c0 = next(r for r in named["rows"] if r["column"] == "c0")
    usd = _row(run.named_table(), "A", "c0", "usd")
    assert c0["cells"][:5] == [pytest.approx(usd["return"]), pytest.approx(usd["max_drawdown"]),
                               pytest.approx(usd["sharpe"]), 0, pytest.approx(usd["funding_net"])]
    html = render_html(doc)
    assert 'id="named-periods"' in html and 'class="metrics named sortable"' in html
    assert html.count('data-period="A"') >= 6  # the group header and its five columns


def test_config_period_tables():
    cfg = parse_config({"perp": [{"name": "a"}], "period": [
        {"name": "2022 bear", "start": "2022-01-01", "end": "2023-01-01"},
        {"name": "2023 recovery", "start": "2023-01-01T00:00:00Z", "end": 1704067200000}]})
    assert [p.span_ms() for p in cfg.period] == [(1640995200000, 1672531200000), (1672531200000, 1704067200000)]
    assert cfg.content()["period"][1]["start"] == "2023-01-01"  # canonical: the run id ignores the spelling
    assert "period" not in parse_config({"perp": [{"name": "a"}]}).content()
    for bad, msg in (
            ({"name": "x", "start": "2022-02-01", "end": "2022-01-01"}, "period is empty"),
            ({"name": "x", "start": "2022-01-01"}, r"period\[0\]\.end: required key is missing"),
            ({"name": "x", "start": "2022-01-01", "end": "2022-02-01", "stop": 1}, "unknown key"),
            ({"name": "", "start": "2022-01-01", "end": "2022-02-01"}, r"period\[0\]\.name")):
        with pytest.raises(ConfigError, match=msg):
            parse_config({"perp": [{"name": "a"}], "period": [bad]})
    with pytest.raises(ConfigError, match="two periods"):
        parse_config({"perp": [{"name": "a"}], "period": [{"name": "x", "start": "2022-01-01", "end": "2022-02-01"}] * 2})
