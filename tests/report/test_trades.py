"""Round-trip trades (``backtest.report.trades``): a hand-computed candle table (a short reduced,
flipped long through one fill, then closed; funding at the open instant and inside a bar; a
trip still open at the end), and on random engine results (linear and inverse, liquidations,
margin-call cuts, top-ups) the trips' PnL summed per column equals the equity change less the
capital added."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.engine import simulate_perp
from backtest.engine.enums import RECORD_DTYPES
from backtest.report.trades import round_trips, trade_summary
from backtest.result import REQUIRED_SERIES, SimResult
from tests.engine.scenario_kit import random_case

H = 3_600_000
T0 = 1_640_995_200_000  # 2022-01-01


def _records(name, rows):
    dt = RECORD_DTYPES[name]
    return np.array([tuple(r) for r in rows], dtype=dt) if rows else np.empty(0, dtype=dt)


def hand_result() -> SimResult:
    """Bars 0..7, closes below. Fills (bar, price, size, fee): short 2 at 100 (bar 1), cover 1 at
    90 (bar 3), buy 3 at 80 (bar 5: covers the last 1 and opens a long of 2; fee 3.0 split 1:2),
    sell 2 at 85 (bar 6); then a long of 1 at 84 opened at bar 7 and still open (close 86).
    Funding: -0.5 at bar 2's open instant (the short pays), +0.25 inside bar 5 (the new long
    receives: after the fill at bar 5's open)."""
    n = 8
    closes = np.array([100.0, 98.0, 104.0, 91.0, 85.0, 82.0, 86.0, 86.0])
    index = pd.to_datetime(T0 + H * np.arange(n), unit="ms", utc=True)
    fills = _records("fills", [
        (1, 0, 100.0, -2.0, 200.0, 2.0, 0, 0),
        (3, 0, 90.0, 1.0, 90.0, 1.0, 0, 0),
        (5, 0, 80.0, 3.0, 240.0, 3.0, 0, 0),
        (6, 0, 85.0, -2.0, 170.0, 2.0, 0, 0),
        (6, 0, 85.0, -1.0, 85.0, 0.0, 2, 0),   # rejected: not a trade
        (7, 0, 84.0, 1.0, 84.0, 0.5, 0, 0),
    ])
    funding = _records("funding", [
        (2, 0, T0 + 2 * H, 1e-4, 100.0, -2.0, -0.5),
        (5, 0, T0 + 5 * H + H // 2, 1e-4, 80.0, 2.0, 0.25),
    ])
    z = np.zeros((n, 1))
    series = {s: z.copy() for s in REQUIRED_SERIES}
    return SimResult(kind="perp", currency="USDT", index=index, columns=pd.Index(["c0"]), series=series,
                     records={"fills": fills, "funding": funding, "margin_calls": _records("margin_calls", []),
                              "liquidations": _records("liquidations", [])},
                     price_usd=np.ones(n), initial_capital=np.array([1000.0]),
                     meta={"instrument": "linear_perp", "contract_size": 1.0, "bar_ms": H}, underlying=closes)


def test_hand_trips():
    tr = round_trips(hand_result())
    assert len(tr) == 3
    a, b, c = (tr.iloc[i] for i in range(3))
    # the short: 2 at 100, covered 1 at 90 and 1 at 80 (part of the flip)
    assert (a.entry_bar, a.exit_bar, a.direction, a["size"]) == (1, 5, -1, 2.0)
    assert a.entry_price == 100.0 and a.exit_price == pytest.approx(85.0)
    assert a.pnl_price == pytest.approx((100 - 90) + (100 - 80))
    assert a.pnl_funding == pytest.approx(-0.5)
    assert a.pnl_fees == pytest.approx(2.0 + 1.0 + 3.0 / 3)
    assert a.pnl == pytest.approx(30 - 0.5 - 4.0)
    # running price PnL at the closes while held (bars 1..4): 2*(100 - close) and, after the
    # cover at 90 (bar 3), 10 + (100 - close): bar 2 -> -8 (adverse), bar 4 -> 25 (favourable)
    assert a.mae == pytest.approx(-8.0) and a.mfe == pytest.approx(25.0)
    # the long from the flip: 2 at 80, sold at 85; funding received inside bar 5
    assert (b.entry_bar, b.exit_bar, b.direction, b["size"]) == (5, 6, 1, 2.0)
    assert b.pnl_price == pytest.approx(10.0) and b.pnl_funding == pytest.approx(0.25)
    assert b.pnl_fees == pytest.approx(2.0 + 2.0)
    assert not b.open and not b.liquidated
    # still open at the end: 1 at 84, marked to the last close 86
    assert c.open and c.pnl_price == pytest.approx(2.0) and c.exit_price == 86.0
    assert c.holding_hours == pytest.approx(1.0)   # bar 7's open to its close
    s = trade_summary(tr, 1).iloc[0]
    assert s.trades == 3 and s.win_rate == pytest.approx(1.0) and s.profit_factor is None
    assert s.avg_pnl == pytest.approx(tr["pnl"].mean())


@pytest.mark.parametrize("seed", range(40))
def test_trips_add_up_to_the_equity_change(seed):
    bars, tgt, spec, account, policy = random_case(seed, n_bars=40, n_cols=4)
    res = simulate_perp(bars, tgt, spec, account, policy)
    tr = round_trips(res)
    eq = np.asarray(res.series["equity"])
    added = np.asarray(res.series["capital_added"])
    for j in range(4):
        t = tr[tr["col"] == j]
        want = eq[-1, j] - res.initial_capital[j] - added[-1, j]
        assert t["pnl"].sum() == pytest.approx(want, rel=1e-9, abs=1e-9 * res.initial_capital[j])
        assert (t["mae"] <= 0).all() and (t["mfe"] >= 0).all() and (t["pnl_fees"] >= 0).all()
        assert t["open"].sum() <= 1 and (t[~t["open"]]["exit_bar"] >= t[~t["open"]]["entry_bar"]).all()
    liq = res.records["liquidations"]
    assert tr["liquidated"].sum() == len(liq)


def test_the_random_results_cover_liquidations_inverse_and_cuts():
    """The identity above is not vacuous: the seeds hold liquidations, inverse contracts and
    margin-call cuts."""
    seen = {"liq": 0, "inverse": 0, "cut": 0}
    for seed in range(40):
        bars, tgt, spec, account, policy = random_case(seed, n_bars=40, n_cols=4)
        res = simulate_perp(bars, tgt, spec, account, policy)
        seen["liq"] += len(res.records["liquidations"])
        seen["inverse"] += int(spec.inverse)
        seen["cut"] += int((res.records["fills"]["reason"] == 1).sum())
    assert all(v > 0 for v in seen.values()), seen


def test_round_trips_refuse_other_kinds():
    r = hand_result()
    other = SimResult(kind="put", currency=r.currency, index=r.index, columns=r.columns, series=r.series,
                      records=r.records, price_usd=r.price_usd, initial_capital=r.initial_capital, meta=r.meta)
    with pytest.raises(ValueError, match="perpetual"):
        round_trips(other)


def test_report_stores_every_trip_and_shows_the_statistics(tmp_path):
    """write_report: trades.parquet holds round_trips() of the result, metrics.json each
    column's statistics (trade_summary's), the page a Trades table with them; a folder read back
    keeps them."""
    from backtest.report import write_report
    from backtest.report.store import load_stored

    bars, tgt, spec, account, policy = random_case(3, n_bars=40, n_cols=4)
    res = simulate_perp(bars, tgt, spec, account, policy)
    out = write_report({"perp": res}, tmp_path / "r", title="trades")
    stored = pd.read_parquet(out / "trades.parquet")
    want = round_trips(res)
    assert len(stored) == len(want) > 0
    np.testing.assert_array_equal(stored["pnl"].to_numpy(), want["pnl"].to_numpy())
    doc = __import__("json").loads((out / "metrics.json").read_text())
    stats = doc["results"]["perp"]["trades"]
    summary = trade_summary(want, 4)
    labels = doc["results"]["perp"]["columns"]
    for j, label in enumerate(labels):
        assert stats[label]["trades"] == summary["trades"][j]
        wr = summary["win_rate"][j]
        assert (stats[label]["win_rate"] is None and wr is None) or stats[label]["win_rate"] == pytest.approx(wr)
    page = (out / "report.html").read_text()
    assert 'class="metrics trades sortable" data-result="perp"' in page and "largest trips by |PnL|" in page
    again = load_stored(out)
    assert again.trades is not None and len(again.trades) == len(want)
