"""The book's reference simulator against independent sources: Binance's two-position cross
example, today's single-instrument engine (reference and kernel) for a book of one, and separate
single-instrument runs for a book of isolated positions."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backtest.book import BookBars, BookSettings, Leg, simulate_book_reference
from backtest.engine import simulate_perp
from backtest.engine.core import raw_outputs
from backtest.engine.enums import FillReason
from backtest.engine.reference import simulate_reference
from backtest.engine.settings import Account, Policy, SettingsError
from tests.engine.scenario_kit import HOUR, T0, make_bars, make_spec, random_case

VECTORS = json.loads((Path(__file__).parents[1] / "fixtures/exchange/mechanics_test_vectors.json").read_text())
REL = 1e-9


def close(a, b, rel=REL, abs_=0.0):
    return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs_, equal_nan=True)


# ------------------------------------------------------------------------------------------
# Binance's two-position cross example (ETH + BTC longs sharing one wallet)
# ------------------------------------------------------------------------------------------

def _two_tier(mmr: float, cum: float, floor_rate: float) -> list[dict]:
    """A table whose upper tier has the example's (mmr, cum): Binance's recursion
    cum = floor * (mmr - floor_rate) puts the tier boundary at cum / (mmr - floor_rate)."""
    floor = cum / (mmr - floor_rate)
    return [
        {"minNotional": 0.0, "maxNotional": floor, "maintenanceMarginRate": floor_rate, "maxLeverage": 15.0, "maintAmt": 0.0},
        {"minNotional": floor, "maxNotional": None, "maintenanceMarginRate": mmr, "maxLeverage": 8.0, "maintAmt": None},
    ]


def test_binance_two_position_cross_example():
    """[BN-LIN] via freqtrade: wallet 1,535,443.01 USDT, long 3,683.979 ETH at 1,456.84 (mark
    1,335.18) and long 109.488 BTC at 32,481.98 (mark 31,967.27); expected cross liquidation
    prices 1,153.26 (ETH) and 26,316.89 (BTC). The book opens both at bar 0's open (the entry
    prices) with no fees, and its per-position liquidation price at bar 0's close (the marks)
    must reproduce both."""
    cases = {c["symbol"]: c for c in VECTORS["binance_linear_liq_price"] if c["mode"] == "cross"}
    eth, btc = cases["ETH/USDT:USDT"], cases["BTC/USDT:USDT"]
    wallet = eth["WB"]
    # ETH tiers: 5 % below 2,707,300 USDT, then 10 % with cum 135,365 (both ETH notionals, 4.92M
    # at the mark and 4.25M at the LP, are in it); BTC: 1 % below 1,086,666.67, then 2.5 % with
    # cum 16,300 (3.50M and 2.88M)
    spec_eth = make_spec(tiers=_two_tier(eth["mmr"], eth["cum"], 0.05), liquidation_fee=0.0)
    spec_btc = make_spec(tiers=_two_tier(btc["mmr"], btc["cum"], 0.01), liquidation_fee=0.0)
    bars = BookBars.from_legs(
        ["ETH", "BTC"],
        [make_bars([(eth["entry"], eth["entry"], 1335.18, 1335.18)]),
         make_bars([(btc["entry"], btc["entry"], 31967.27, 31967.27)])])
    # exposures as multiples of the wallet: qty * entry / wallet (lot 0.001; the sizes are on it)
    target = np.array([[[eth["qty"] * eth["entry"] / wallet], [btc["qty"] * btc["entry"] / wallet]]])
    s = BookSettings(account=Account(initial_capital=wallet, leverage=8.0, fee_rate=0.0, margin_mode="cross",
                                     lag=0, allow_lookahead=True))
    series, records = simulate_book_reference(bars, target, [spec_eth, spec_btc], s)
    # both orders fill whole (initial margin 8.93M / 8 = 1.12M < the wallet; tier cap at 8x: none)
    assert series["position"][0, :, 0] == pytest.approx([eth["qty"], btc["qty"]], rel=1e-12)
    assert not len(records["liquidations"])
    # the published prices have 2 decimals
    assert series["liq_price"][0, 0, 0] == pytest.approx(eth["expected"], abs=0.005)
    assert series["liq_price"][0, 1, 0] == pytest.approx(btc["expected"], abs=0.005)


# ------------------------------------------------------------------------------------------
# A book of one instrument equals today's engine
# ------------------------------------------------------------------------------------------

def _book_of_one(bars, tgt, spec, account, policy):
    book = BookBars.from_legs(["X"], [bars])
    return simulate_book_reference(book, tgt[:, None, :], [spec], BookSettings(account=account, policy=policy))


def _compare_with_single(series, records, b_series, b_records, price_level):
    scale = max(1.0, float(np.abs(series["equity"]).max()))
    for name in ("equity", "equity_usd", "cum_funding", "cum_fees", "capital_added", "margin_ratio"):
        assert close(b_series[name], series[name], abs_=1e-9 * np.abs(series["equity"]).max()), name
    for name in ("position", "notional"):
        assert close(b_series[name][:, 0, :], series[name]), name
    # a liquidation price far from the mark (a 1x long's is near 0) cancels W against Q*EP:
    # a last-bit difference in the wallet moves it by that bit times (price level / LP); so
    # 1e-9 of the price level, not of the LP
    assert close(b_series["liq_price"][:, 0, :], series["liq_price"], abs_=1e-9 * price_level)
    for name, fields in (("fills", ("bar", "col", "price", "size", "fee", "status", "reason")),
                         ("funding", ("bar", "col", "time", "rate", "mark", "position", "amount")),
                         ("liquidations", ("bar", "col", "trigger_price", "price", "size", "clearance_fee",
                                           "equity_start", "equity_before", "equity_after", "deficit", "gap"))):
        a, b = records[name], b_records[name]
        assert len(a) == len(b), (name, len(a), len(b))
        for f in fields:
            # money that cancels to about zero (the equity after a liquidation that took it all):
            # 1e-9 of the account's scale, as the series (seed 14527: -9.5e-9 vs 9.1e-13 USDT)
            money = f in ("fee", "amount", "clearance_fee", "equity_start", "equity_before", "equity_after",
                          "deficit")
            assert close(b[f], a[f], abs_=1e-9 * (scale if money else 1.0)), (name, f)
    a, b = records["margin_calls"], b_records["margin_calls"]
    assert len(a) == len(b)
    for f in ("bar", "col", "margin_ratio", "response"):
        assert close(b[f], a[f]), f
    top = a["response"] == 2
    assert close(b["amount"][top], a["amount"][top])
    # a reduce's cut is the book's margin-call fills
    cuts = b_records["fills"][b_records["fills"]["reason"] == FillReason.MARGIN_CALL]
    red = a[a["response"] == 1]
    for r in red:
        cut = cuts[(cuts["bar"] == r["bar"]) & (cuts["col"] == r["col"])]
        assert abs(np.abs(cut["size"]).sum() - r["amount"]) <= 1e-9 * max(1.0, r["amount"])


def _single_case(seed: int):
    bars, tgt, spec, account, policy = random_case(seed, n_bars=30, n_cols=4)
    return bars, tgt, spec, replace(account, lag=1, allow_lookahead=False), policy


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
@example(seed=183)        # a 1x long's liquidation price near 0 (cancellation: tolerance on the price level)
@example(seed=63882170)   # a margin-call cut whose ratio ties the target at a lot boundary (17.155*32/47 = 11.68)
@example(seed=14527)      # an isolated liquidation that takes the whole equity: equity_after cancels to ~0
def test_book_of_one_equals_single_reference(seed):
    """Random bars, funding, tiers and settings (linear and inverse, cross and isolated, every
    call response, stop and continue, clip and reject, lag 1): same numbers as the single
    reference simulator."""
    bars, tgt, spec, account, policy = _single_case(seed)
    series, records = simulate_reference(bars, tgt, spec, account, policy)
    b_series, b_records = _book_of_one(bars, tgt, spec, account, policy)
    _compare_with_single(series, records, b_series, b_records, float(bars.mark_high.max()))


@pytest.mark.parametrize("seed", [3, 17, 101, 2024, 77_777])
def test_book_of_one_equals_single_kernel(seed):
    bars, tgt, spec, account, policy = _single_case(seed)
    series, records = raw_outputs(simulate_perp(bars, tgt, spec, account, policy))
    b_series, b_records = _book_of_one(bars, tgt, spec, account, policy)
    _compare_with_single(series, records, b_series, b_records, float(bars.mark_high.max()))


# ------------------------------------------------------------------------------------------
# A book of isolated positions equals the separate single-instrument runs
# ------------------------------------------------------------------------------------------

def _walk(seed: int, n: int, p0: float):
    rng = np.random.default_rng(seed)
    close_ = p0 * np.exp(np.cumsum(rng.normal(0, 0.03, n) + np.where(rng.random(n) < 0.1, 0.1, 0.0)))
    open_ = np.concatenate([[p0], close_[:-1]])
    high = np.maximum(open_, close_) * (1 + np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(open_, close_) * (1 - np.abs(rng.normal(0, 0.01, n)))
    ts = T0 + HOUR * np.arange(n)
    funding = [(int(ts[i]), float(rng.normal(1e-4, 3e-4))) for i in range(0, n, 4)]
    return make_bars(np.c_[open_, high, low, close_], funding=funding)


@pytest.mark.parametrize("after", ["stop", "continue"])
def test_isolated_book_equals_separate_runs(after):
    """Three isolated shorts opened at bar 0 and held: the book's equity is the sum of the three
    separate runs' equities (each with its share of the capital), and funding, fees and
    liquidation bars are those of the separate runs."""
    n = 40
    legs = [_walk(s, n, p) for s, p in ((1, 100.0), (2, 50.0), (3, 20.0))]
    spec = make_spec(taker=0.0005)
    capitals = [5_000.0, 3_000.0, 2_000.0]
    exposures = [-3.0, -8.0, -15.0]  # the 15x one is liquidated by the walk's jumps
    leverage = 20.0
    total = sum(capitals)
    book_target = np.full((n, 3, 1), np.nan)
    book_target[0, :, 0] = [x * c / total for x, c in zip(exposures, capitals)]
    acc = dict(margin_mode="isolated", leverage=leverage, after_liquidation=after, lag=0, allow_lookahead=True)
    series, records = simulate_book_reference(BookBars.from_legs(["A", "B", "C"], legs), book_target, [spec] * 3,
                                              BookSettings(account=Account(initial_capital=total, **acc)))
    eq = np.zeros(n)
    for k in range(3):
        tgt = np.full((n, 1), np.nan)
        tgt[0, 0] = exposures[k]
        s1, r1 = simulate_reference(legs[k], tgt, spec, Account(initial_capital=capitals[k], **acc), Policy())
        eq += s1["equity"][:, 0]
        assert close(series["position"][:, k, 0], s1["position"][:, 0])
        assert close(series["pnl_funding"][:, k, 0], s1["cum_funding"][:, 0])
        liq = records["liquidations"][records["liquidations"]["instrument"] == k]
        assert liq["bar"].tolist() == r1["liquidations"]["bar"].tolist()
        fees = series["pnl_fees"][:, k, 0] + np.cumsum(np.bincount(liq["bar"], liq["clearance_fee"], n))
        assert close(fees, s1["cum_fees"][:, 0])
    assert len(records["liquidations"]) >= 1  # the test covers a liquidation
    assert close(series["equity"][:, 0], eq)


# ------------------------------------------------------------------------------------------
# Input errors
# ------------------------------------------------------------------------------------------

def test_mixed_settlement_refused():
    bars = BookBars.from_legs(["L", "I"], [make_bars([(100, 101, 99, 100)] * 2)] * 2)
    with pytest.raises(SettingsError, match="one settlement currency"):
        simulate_book_reference(bars, np.zeros((2, 2)), [make_spec(), make_spec(inverse=True)])


def test_target_before_listing_refused():
    early = make_bars([(100, 101, 99, 100)] * 4)
    late = make_bars([(100, 101, 99, 100)] * 2, t0=T0 + 2 * HOUR)
    bars = BookBars.from_legs(["A", "B"], [early, late])
    tgt = np.full((4, 2), np.nan)
    tgt[0, 1] = -1.0  # reaches B at bar 1 with lag 1; B is listed at bar 2
    with pytest.raises(ValueError, match="before its first bar"):
        simulate_book_reference(bars, tgt, [make_spec()] * 2)
    tgt[0, 1] = np.nan
    tgt[1, 1] = -1.0  # reaches bar 2: fine
    series, _ = simulate_book_reference(bars, tgt, [make_spec()] * 2)
    assert series["position"][:2, 1, 0].tolist() == [0.0, 0.0] and series["position"][2, 1, 0] < 0


def test_leg_count_refused():
    bars = BookBars.from_legs(["A", "B"], [make_bars([(100, 101, 99, 100)] * 2)] * 2)
    with pytest.raises(SettingsError, match="one Leg per instrument"):
        simulate_book_reference(bars, np.zeros((2, 2)), [make_spec()] * 2, BookSettings(legs=[Leg()] * 3))


# ------------------------------------------------------------------------------------------
# The book formulas of backtest.mechanics
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wallet,upnl,fee", [(1_000.0, -900.0, 50.0), (1_000.0, -980.0, 50.0), (1_000.0, -1_200.0, 50.0)])
def test_cross_liquidation_outcome_of_one_is_the_single_rule(wallet, upnl, fee):
    from backtest import mechanics as mk
    keep, deficit, charged, shares = mk.cross_liquidation_outcome(wallet, [upnl], [fee])
    k1, d1, f1 = mk.liquidation_outcome(wallet, upnl, fee / 0.0125, 0.0125)
    assert (keep, deficit, shares[0]) == pytest.approx((k1, d1, d1), abs=1e-12)
    assert charged[0] == pytest.approx(f1, abs=1e-12)


def test_cross_liquidation_outcome_two_positions_by_hand():
    from backtest import mechanics as mk
    # left = 1,000 - 700 - 400 = -100: nothing kept, no fee charged, the 100 deficit split 7:4
    keep, deficit, charged, shares = mk.cross_liquidation_outcome(1_000.0, [-700.0, -400.0], [20.0, 10.0])
    assert (keep, deficit, charged) == (0.0, 100.0, [0.0, 0.0])
    assert shares == pytest.approx([700 / 11, 400 / 11], rel=1e-12)
    # left = 1,000 - 700 + 100 = 400 > 30 of fees: keep 370, fees charged in full
    keep, deficit, charged, _ = mk.cross_liquidation_outcome(1_000.0, [-700.0, 100.0], [20.0, 10.0])
    assert (keep, deficit, charged) == (370.0, 0.0, [20.0, 10.0])
    assert mk.path_price(100.0, 125.0, 1.0) == 125.0 and mk.path_price(100.0, 125.0, 0.0) == 100.0
    assert mk.path_price(100.0, 125.0, 0.4) == pytest.approx(110.0, rel=1e-15)
