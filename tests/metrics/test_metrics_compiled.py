"""The compiled metrics (``compute_metrics``, backtest/metrics/nb.py) give the numbers of the
per-column reference (``backtest.metrics.reference``: vectorbt's returns accessor and numpy per
column) on real results: perps on the committed BTC sample with margin calls, top-ups and
liquidations, puts, inverse products, a book through ``to_sim_result``, columns that never
trade, ruined columns, random engine runs; both bases. Every metric of every column is compared
(tests/metrics/metrics_compare.py states the tolerance and why)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest.engine import Account, simulate_perp
from backtest.metrics import MetricsInputError, column_labels, compute_metrics
from backtest.metrics import compute as compute_mod
from backtest.metrics.reference import compute_metrics_reference
from backtest.result import SimResult
from tests.metrics.metrics_compare import assert_same_metrics

H = 3_600_000
BASES = ("settle", "usd")


def same_both_bases(res: SimResult, **kw) -> int:
    n = 0
    for basis in BASES:
        n += assert_same_metrics(compute_metrics(res, currency=basis, **kw),
                                 compute_metrics_reference(res, currency=basis, **kw))
    return n


@pytest.fixture(scope="module")
def btc_2021():
    from backtest.data import load_market_data
    from backtest.market import load_market

    md = load_market_data("binanceusdm", "BTC/USDT:USDT", "1h", start="2021-01-01", end="2022-01-01")
    return md, load_market("binanceusdm", "BTC/USDT:USDT")


POLICIES = ["const(1)", "const(3)", "const(8)", "voltarget(0.5)"]


def _grid(md, strategy, params):
    from strategies.policies import build_targets

    return build_targets(md, strategy, params, POLICIES)


def test_perps_on_the_btc_sample_with_top_ups_and_liquidations(btc_2021):
    # shorts held through 2021's rally, cross 20x: margin calls at 0.5 answered by top-ups from a
    # small reserve (capital added), liquidations, trading on after them
    md, spec = btc_2021
    target, policy, cols = _grid(md, "short_hold", {"rebalance": [False, True]})
    res = simulate_perp(md, target, spec, Account(margin_mode="cross", leverage=20.0, margin_call_threshold=0.5, margin_call_target=0.3,
                                                  margin_call_response="top_up", reserve=500.0,
                                                  after_liquidation="continue"), policy, columns=cols)
    assert len(res.records["liquidations"]) > 0 and len(res.records["margin_calls"]) > 0
    assert np.any(res.series["capital_added"][-1] > 0)
    assert same_both_bases(res) == 2 * len(cols) * 38


def test_perps_isolated_reduced_and_stopped(btc_2021):
    # a trend short, isolated 10x: calls cut the position (fills of reason margin_call); a
    # liquidation stops the column (its growth index then stays where the liquidation left it)
    md, spec = btc_2021
    target, policy, cols = _grid(md, "trend_short", {"slow_days": [10, 50]})
    res = simulate_perp(md, target, spec, Account(margin_mode="isolated", leverage=10.0, margin_call_threshold=0.7,
                                                  margin_call_response="reduce", after_liquidation="stop"),
                        policy, columns=cols)
    assert len(res.records["liquidations"]) > 0 and len(res.records["margin_calls"]) > 0
    assert same_both_bases(res) > 0


def test_inverse_perp_with_a_gap_liquidation_and_a_column_that_never_trades():
    # coin-margined: equity in BTC, the USD basis values it (and every flow) at each bar's mark;
    # an all-NaN target column holds nothing: flat equity, no Sharpe, no drawdown, no Calmar
    from tests.engine.scenario_kit import random_case

    for seed in range(40):
        bars, target, spec, account, policy = random_case(seed, n_bars=60, n_cols=4)
        if spec.inverse:
            break
    assert spec.inverse
    tgt = np.array(target, dtype=np.float64, copy=True)
    tgt[:, 1] = np.nan
    res = simulate_perp(bars, tgt, spec, account, policy)
    # the columns are labelled by their varying account settings (backtest.runner.labels)
    flat = compute_metrics(res)["columns"][column_labels(res)[1]]
    assert flat["sharpe"] is None and flat["calmar"] is None and flat["max_drawdown"] == 0.0
    assert same_both_bases(res) > 0


@pytest.mark.parametrize("seed", range(12))
def test_random_engine_runs(seed):
    # random walks with jumps: liquidations, margin calls, rejected and clipped orders, inverse
    # and linear contracts, funding off the bar opens (tests/engine/scenario_kit.py)
    from tests.engine.scenario_kit import random_case

    bars, target, spec, account, policy = random_case(seed, n_bars=80, n_cols=5)
    assert same_both_bases(simulate_perp(bars, target, spec, account, policy)) == 2 * 5 * 38


def test_puts_with_greeks_and_premium():
    from backtest.options import PutSettings, Underlying, simulate_puts

    rng = np.random.default_rng(7)
    n = 24 * 100
    p = 30_000.0 * np.exp(np.cumsum(rng.normal(-1e-4, 0.008, n)))
    start = int(pd.Timestamp("2022-03-01", tz="UTC").value // 1_000_000)
    u = Underlying.from_arrays(start + H * np.arange(n), p, iv=np.full(n, 0.8))
    for settlement in ("usd", "coin"):
        res = simulate_puts(u, PutSettings(vol_source="iv", settlement=settlement, moneyness=[0.9, 0.95],
                                           roll_dte=[0, 3]))
        assert {"premium_paid", "delta", "theta"} <= set(res.series)
        m = compute_metrics(res, currency="usd")["columns"]
        assert all(c["avg_delta"] is not None and c["premium_spent"] > 0 for c in m.values())
        assert same_both_bases(res) > 0


@pytest.mark.parametrize("lev, reset", [(-3.0, "daily"), (-1.0, "bar"), (2.0, "daily")])
def test_inverse_products(lev, reset):
    from backtest.options import Underlying
    from backtest.products import ProductSettings, simulate_product

    rng = np.random.default_rng(int(abs(lev) * 10))
    n = 24 * 60 + 5
    p = 20_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    start = int(pd.Timestamp("2023-01-01 07:00", tz="UTC").value // 1_000_000)  # days cut mid-index
    res = simulate_product(Underlying.from_arrays(start + H * np.arange(n), p),
                           ProductSettings(leverage=lev, reset=reset))
    assert "rebalances" in res.records
    assert same_both_bases(res) > 0


@pytest.mark.parametrize("seed", [1, 5, 9])
def test_a_book_through_to_sim_result(seed):
    from backtest.book import simulate_book
    from tests.book.test_book_kernel import random_book

    bars, tgt, specs, s = random_book(seed, n=60, m=4)
    sim = simulate_book(bars, tgt, specs, s).to_sim_result()
    assert same_both_bases(sim) > 0


def _hand(equity, *, added=None, position=None, leverage=None, cum_funding=None, bar_ms=H,
          start="2022-03-01 05:00", initial=100.0, records=None, meta=None, extra=None) -> SimResult:
    eq = np.asarray(equity, dtype=np.float64)
    n, m = eq.shape
    z = np.zeros((n, m))
    series = {
        "equity": eq, "equity_usd": eq * 2.0,
        "position": z + 1.0 if position is None else np.asarray(position, dtype=np.float64),
        "notional": eq.copy(), "leverage": z + 1.0 if leverage is None else np.asarray(leverage, dtype=np.float64),
        "cum_funding": z.copy() if cum_funding is None else np.asarray(cum_funding, dtype=np.float64),
        "cum_fees": np.cumsum(z + 0.01, axis=0),
        "capital_added": z.copy() if added is None else np.asarray(added, dtype=np.float64),
        **(extra or {}),
    }
    idx = pd.date_range(start, periods=n, freq=pd.Timedelta(milliseconds=bar_ms), tz="UTC")
    return SimResult(kind="perp", currency="USDT", index=idx, columns=pd.Index([f"c{j}" for j in range(m)]),
                     series=series, records=records or {}, price_usd=np.full(n, 2.0),
                     initial_capital=np.full(m, initial), meta={"bar_ms": bar_ms, **(meta or {})})


def test_hand_made_columns_flat_ruined_recovered_and_topped_up():
    # c0 flat (no drawdown, constant returns), c1 loses everything at bar 2 and stays at 0,
    # c2 falls and recovers twice (two spells, the deeper one first), c3 gets a top-up of 50 at
    # bar 3 (a flow, not a gain), c4 ends 99.95 % down
    eq = np.array([
        [100.0, 90.0, 95.0, 100.0, 99.0],
        [100.0, 50.0, 80.0, 60.0, 50.0],
        [100.0, 0.0, 110.0, 150.0, 30.0],
        [100.0, -5.0, 90.0, 140.0, 1.0],
        [100.0, 0.0, 120.0, 150.0, 0.05],
        [100.0, 0.0, 100.0, 160.0, 0.05],
    ])
    added = np.zeros_like(eq)
    added[3:, 3] = 50.0
    pos = np.ones_like(eq)
    pos[:, 0] = 0.0
    pos[2, 2] = np.nan  # nan_to_num: a NaN position is flat
    lev = np.ones_like(eq) * 2.0
    lev[1, 1] = np.nan
    lev[2, 2] = np.inf  # nan_to_num: the largest float
    fund = np.cumsum(np.where(np.arange(30).reshape(6, 5) % 3 == 0, 0.5, -0.25), axis=0)
    res = _hand(eq, added=added, position=pos, leverage=lev, cum_funding=fund, meta={"min_equity_usd": 1.0})
    m = compute_metrics(res)["columns"]
    assert m["c0"]["sharpe"] is None and m["c0"]["max_drawdown"] == 0.0 and m["c0"]["exposure_time"] == 0.0
    assert m["c1"]["ruined"] is True and m["c1"]["max_drawdown"] == 1.0
    assert m["c2"]["longest_drawdown_bars"] == 3 and m["c2"]["max_drawdown_duration_bars"] == 3
    assert m["c2"]["max_drawdown_recovered"] is True
    assert m["c3"]["capital_added"] == 50.0 and m["c4"]["ruined"] is True
    assert m["c2"]["max_leverage"] == np.finfo(np.float64).max
    assert same_both_bases(res) == 2 * 5 * 38


def test_one_bar_and_bar_sizes_that_cut_days():
    one = _hand(np.array([[101.0, 99.0]]))
    assert same_both_bases(one) > 0
    # 7-hour bars from 05:00: days of 3 or 4 bars, some bars straddling midnight
    rng = np.random.default_rng(2)
    eq = 100.0 * np.cumprod(1 + rng.normal(0, 0.03, (50, 3)), axis=0)
    assert same_both_bases(_hand(eq, bar_ms=7 * H)) > 0
    assert same_both_bases(_hand(eq, bar_ms=7 * H), bar_ms=H) > 0  # an explicit bar size wins


def test_records_of_every_shape():
    # fills with rejected orders and clips to nothing; liquidations with and without the loss
    # fields; a record kind the metrics only count; no margin-call records (null, a perp)
    rng = np.random.default_rng(4)
    eq = 100.0 * np.cumprod(1 + rng.normal(0, 0.01, (40, 3)), axis=0)
    fills = np.zeros(9, dtype=[("bar", "i8"), ("col", "i8"), ("size", "f8"), ("notional", "f8"), ("status", "i8")])
    fills["bar"] = [0, 3, 3, 5, 9, 12, 20, 33, 39]
    fills["col"] = [0, 0, 2, 2, 0, 1, 2, 2, 0]
    fills["size"] = [1.0, -2.0, 0.0, 3.0, -1.0, 2.0, 1.5, -0.5, 1.0]
    fills["notional"] = [100.0, -210.0, 0.0, 290.0, -95.0, 205.0, 150.0, -51.0, 101.0]
    fills["status"] = [0, 2, 1, 0, 0, 2, 1, 0, 0]
    liq = np.zeros(3, dtype=[("bar", "i8"), ("col", "i8"), ("equity_start", "f8"), ("equity_after", "f8"),
                             ("deficit", "f8")])
    liq["bar"], liq["col"] = [30, 7, 12], [2, 2, 0]
    liq["equity_start"], liq["equity_after"], liq["deficit"] = [50.0, 80.0, 10.0], [20.0, 90.0, 0.0], [0.0, 0.0, 3.0]
    rolls = np.zeros(4, dtype=[("bar", "i8"), ("col", "i8")])
    rolls["col"] = [1, 1, 1, 2]
    res = _hand(eq, records={"fills": fills, "liquidations": liq, "rolls": rolls})
    c = compute_metrics(res)["columns"]
    assert c["c0"]["rejected_orders"] == 1 and c["c2"]["event_counts"] == {"fills": 3, "liquidations": 2, "rolls": 1}
    assert c["c2"]["first_liquidation_ms"] == int(res.index[7].value // 1_000_000)
    assert c["c1"]["first_liquidation_ms"] is None and c["c1"]["margin_calls"] is None
    assert same_both_bases(res) > 0
    bare = _hand(eq, records={"fills": fills[["bar", "col", "size"]],
                              "liquidations": liq[["bar", "col"]]})
    c = compute_metrics(bare)["columns"]
    assert c["c0"]["turnover"] is None and c["c0"]["liquidation_equity_lost"] is None
    assert same_both_bases(bare) > 0


def test_layout_and_blocks_do_not_change_a_number(monkeypatch):
    # the same series stored bar by bar (C order) or column by column (F order), in blocks of
    # one column or of all: the same output to the last bit
    from tests.engine.scenario_kit import random_case

    bars, target, spec, account, policy = random_case(3, n_bars=70, n_cols=6)
    res = simulate_perp(bars, target, spec, account, policy)
    base = compute_metrics(res, currency="usd")
    series = {k: np.asarray(res.series[k]) for k in res.series}
    records = {k: res.records[k] for k in res.records}
    for order in ("C", "F"):
        for block_bytes in (1, 8 * 70 * 7 * 4, 2**30):
            monkeypatch.setattr(compute_mod, "BLOCK_BYTES", block_bytes)
            other = SimResult(kind=res.kind, currency=res.currency, index=res.index, columns=res.columns,
                              series={k: np.asarray(v, order=order) for k, v in series.items()}, records=records,
                              price_usd=res.price_usd, initial_capital=res.initial_capital, meta=res.meta,
                              underlying=res.underlying)
            assert compute_metrics(other, currency="usd") == base


def test_bad_inputs_name_the_value():
    eq = np.full((5, 3), 100.0)
    eq[3, 2] = np.nan
    eq[4, 1] = np.inf
    for fn in (compute_metrics, compute_metrics_reference):  # the same message as before
        with pytest.raises(MetricsInputError, match=r"'equity' is not finite at bar 3 .* column 'c2'"):
            fn(_hand(eq))
    recs = {"fills": np.zeros(2, dtype=[("bar", "i8"), ("col", "i8")])}
    recs["fills"]["col"] = [0, 3]
    with pytest.raises(MetricsInputError, match=r"'fills' record with col=3, outside 0..2"):
        compute_metrics(_hand(np.full((5, 3), 100.0), records=recs))
    recs["fills"]["col"], recs["fills"]["bar"] = [0, 1], [0, -1]
    with pytest.raises(MetricsInputError, match=r"'fills' record with bar=-1, outside 0..4"):
        compute_metrics(_hand(np.full((5, 3), 100.0), records=recs))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_equity_paths(data):
    # drawdown spells, ties at the peak, zeros (capital gone, then topped up), negative equity,
    # flat stretches, bar sizes from 15 minutes to a day starting at any hour
    n = data.draw(st.integers(1, 60))
    m = data.draw(st.integers(1, 4))
    steps = data.draw(st.lists(st.sampled_from([0.0, 0.0, 0.01, -0.01, 0.05, -0.05, -0.5, -1.0, 0.3, -1.2]),
                               min_size=n * m, max_size=n * m))
    eq = 100.0 * np.cumprod(1.0 + np.array(steps).reshape(n, m), axis=0)
    tops = data.draw(st.lists(st.sampled_from([0.0, 0.0, 0.0, 25.0]), min_size=n * m, max_size=n * m))
    added = np.cumsum(np.array(tops).reshape(n, m), axis=0)
    eq = eq + added
    bar_ms = data.draw(st.sampled_from([15 * 60_000, H, 5 * H, 24 * H]))
    start = data.draw(st.sampled_from(["2022-03-01", "2022-03-01 13:00", "2022-03-01 23:45"]))
    res = _hand(eq, added=added, bar_ms=bar_ms, start=start)
    assert same_both_bases(res) == 2 * m * 38
