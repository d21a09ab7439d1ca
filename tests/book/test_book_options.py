"""Option legs in the book's reference simulator (docs/mechanics.md, "Options in a book").

Independent sources: the put simulator (:func:`backtest.options.simulate_puts`, its own kernel
and rules) for a book holding only puts, and candle tables whose option prices are computed
here with the closed-form Black-76 of :mod:`backtest.options.pricing` and whose cash flows are
written out by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backtest.book import BookBars, BookSettings, simulate_book_reference
from backtest.book.options import ROLL_EARLY, ROLL_FIRST, ROLL_NONE, ROLL_SETTLE, OptionLeg, option_paths
from backtest.data import SAMPLE_ROOT, load_book_data
from backtest.engine.bars import EngineInputError
from backtest.engine.enums import FillReason, FillStatus
from backtest.engine.settings import Account
from backtest.market import load_market
from backtest.options import simulate_puts
from backtest.options.inputs import YEAR_MS, Underlying
from backtest.options.pricing import gbs_greeks
from backtest.options.sim import PutSettings
from tests.engine.scenario_kit import T0, make_bars, make_spec

ONE_TIER = [{"minNotional": 0.0, "maxNotional": None, "maintenanceMarginRate": 0.01, "maxLeverage": 50.0,
             "maintAmt": 0.0}]
SPEC = make_spec(tiers=ONE_TIER, liquidation_fee=0.0125)


def put_value(S: float, K: float, T_ms: int, vol: float) -> float:
    """Black-76 put on the forward S (carry 0, no skew, no discounting), USD per contract."""
    return float(gbs_greeks(S, K, T_ms / YEAR_MS, vol, b=0.0, is_call=False)["price"])


def fills_of(rec, col=0, instrument=None, bar=None):
    f = rec["fills"]
    keep = f["col"] == col
    if instrument is not None:
        keep &= f["instrument"] == instrument
    if bar is not None:
        keep &= f["bar"] == bar
    return f[keep]


def identity_residual(series, capital: float = 10_000.0) -> np.ndarray:
    """equity - (initial capital + capital_added + sum of every row's PnL split), (n, m)."""
    pnl = (series["pnl_price"] + series["pnl_funding"] - series["pnl_fees"] + series["pnl_liquidation"]).sum(axis=1)
    return series["equity"] - (capital + series["capital_added"] + pnl)


# ------------------------------------------------------------------------------------------
# 1. A book holding only puts is the put simulator
# ------------------------------------------------------------------------------------------

CASES = {
    # (exchange, symbol, start, end, loader flags, settlement, initial capital)
    "usdt": ("binanceusdm", "BTC/USDT:USDT", "2022-01-01", "2022-04-01", {}, "usd", 10_000.0),
    "coin": ("binancecoinm", "BTC/USD:BTC", "2021-09-01", "2021-12-01",
             {"allow_mark_fallback": True, "allow_gaps": True}, "coin", 1.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_puts_only_book_equals_the_put_simulator(case):
    """A book whose perpetual is never traded and whose put leg's target is ``e`` at the first
    contract and at every roll (NaN otherwise) holds the put simulator's notional-mode puts
    (exposure e, no fees or slippage): the same equity at every close, and the contracts the
    simulator holds after close t - 1 during book bar t (the book trades at bar t's open, the
    close instant of bar t - 1). The rolls (early on |delta| >= 0.5, and settlements) are read
    from the path, and the sample window holds both kinds."""
    exchange, symbol, start, end, flags, settlement, capital = CASES[case]
    exposure = 0.7
    data = load_book_data(exchange, [symbol], "1h", start, end, root=SAMPLE_ROOT, **flags)
    bars = data.bars
    put = PutSettings(settlement=settlement, vol_source="ewma", roll_delta=0.5, fee_rate=0.0, fee_cap=0.0,
                      delivery_fee_rate=0.0, delivery_fee_cap=0.0, slippage=0.0)
    leg = OptionLeg(symbol, put=put)
    inverse = settlement == "coin"
    paths = option_paths(bars, [leg], inverse)
    roll = paths.roll[:, 0]
    assert (roll == ROLL_EARLY).any() and (roll == ROLL_SETTLE).any(), "the window must hold both kinds of roll"
    tgt = np.full((bars.n, 2, 1), np.nan)
    tgt[np.flatnonzero(roll != ROLL_NONE), 1, 0] = exposure   # row p is traded at bar p + 1 (lag 1)
    acc = Account(initial_capital=capital, leverage=5.0, fee_rate=0.0)
    series, rec = simulate_book_reference(bars, tgt, [load_market(exchange, symbol)],
                                          BookSettings(account=acc, options=[leg]))

    bl = bars.legs[0]
    u = Underlying.from_arrays(bl.timestamp, bl.mark_close, high=bl.mark_high, low=bl.mark_low,
                               bar_ms=int(bars.bar_ms))
    sim = simulate_puts(u, replace(put, initial_capital=capital, exposure=exposure))
    eq_sim = sim.series["equity"][:, 0]
    pos_sim = sim.series["position"][:, 0]
    np.testing.assert_allclose(series["equity"][:, 0], eq_sim, rtol=1e-9, atol=0)
    np.testing.assert_allclose(series["position"][1:, 1, 0], pos_sim[:-1], rtol=1e-9, atol=0)
    assert series["position"][0, 1, 0] == 0.0
    assert (series["position"][:, 0, 0] == 0.0).all()      # the perpetual is never traded
    # the options' value at a close: the contract held during the bar (at a roll close the
    # simulator already shows the new one; the equity is the same without fees)
    quiet = roll == ROLL_NONE
    np.testing.assert_allclose(series["option_value"][quiet, 0], sim.series["option_value"][quiet, 0], rtol=1e-9,
                               atol=0)
    # one record per event: the first purchase, each early roll's sale and re-purchase, each
    # settlement and the purchase after it
    f = fills_of(rec, instrument=1)
    n_early, n_settle = int((roll == ROLL_EARLY).sum()), int((roll == ROLL_SETTLE).sum())
    assert (f["reason"] == FillReason.SETTLEMENT).sum() == n_settle
    assert (f["reason"] == FillReason.ROLL).sum() == n_early          # the sales (the purchases: target)
    assert (f["reason"] == FillReason.TARGET).sum() == 1 + n_early + n_settle
    assert (f["status"] == FillStatus.FILLED).all() and (f["fee"] == 0.0).all()
    np.testing.assert_allclose(identity_residual(series, capital), 0.0, atol=1e-9 * capital)


# ------------------------------------------------------------------------------------------
# Candle tables: daily bars, an explicit expiry list, a constant implied vol (so that every
# option price is one Black-76 evaluation, done here)
# ------------------------------------------------------------------------------------------

DAY = 86_400_000
VOL = 0.8
NO_FEES = dict(fee_rate=0.0, fee_cap=0.0, delivery_fee_rate=0.0, delivery_fee_cap=0.0, slippage=0.0)


def close_ms(i: int) -> int:
    return T0 + (i + 1) * DAY


def put_leg(n: int, expiries: list[int], **put) -> OptionLeg:
    base = dict(vol_source="iv", skew=0.0, carry=0.0, strike_step=1.0, min_days=0.0, roll_delta=0.6)
    return OptionLeg("BTC", put=PutSettings(**{**base, **put}), iv=np.full(n, VOL), expiries=expiries)


def daily_book(candles) -> BookBars:
    return BookBars.from_legs(["BTC"], [make_bars(candles, bar_ms=DAY)])


def test_early_roll_and_settlement_cash_flows_with_fees_and_slippage():
    """Puts 95 % of the forward, strike grid 1, min_days 1.5, early roll at |delta| >= 0.6;
    Deribit fees (0.0003 x underlying capped at 12.5 % of the price), delivery fee (0.00015 x
    underlying capped at 12.5 % of the payoff), slippage 5 %. Expiries T0+3d, T0+4d, T0+30d.
    Closes 100, 92, 90, 84, 85 (close i at T0 + (i+1) days):

    * close 0: first contract, K 95, expiry T0+3d (the first more than 1.5 days away), T 2 d;
    * close 1: S 92, the 95 put has |delta| 0.77 over 1 day: early roll into K floor(0.95*92) =
      87, expiry T0+4d (T0+3d is within 1.5 days);
    * close 3 = T0+4d: the 87 put settles at 87 - 84 = 3, delivery fee min(0.00015*84, 0.125*3) =
      0.0126; the next contract K 79, expiry T0+30d.

    The leg's target is 1.0 at row 0 (bar 1 buys 1.0 x 10,000 / 100 = 100 contracts), NaN after:
    each roll re-buys the kept 100 (reason roll)."""
    candles = [(100, 100, 100, 100), (100, 100, 92, 92), (92, 92, 90, 90), (90, 90, 84, 84), (84, 85, 84, 85)]
    n = len(candles)
    e1, e2, e3 = T0 + 3 * DAY, T0 + 4 * DAY, T0 + 30 * DAY
    leg = put_leg(n, [e1, e2, e3], moneyness=0.95, min_days=1.5, fee_rate=0.0003, fee_cap=0.125,
                  delivery_fee_rate=0.00015, delivery_fee_cap=0.125, slippage=0.05)
    bars = daily_book(candles)
    paths = option_paths(bars, [leg], False)
    assert paths.roll[:, 0].tolist() == [ROLL_FIRST, ROLL_EARLY, ROLL_NONE, ROLL_SETTLE, ROLL_NONE]
    assert paths.strike[:, 0].tolist() == [95.0, 87.0, 87.0, 79.0, 79.0]
    tgt = np.full((n, 2, 1), np.nan)
    tgt[0, 1, 0] = 1.0
    series, rec = simulate_book_reference(bars, tgt, [SPEC], BookSettings(account=Account(initial_capital=10_000.0),
                                                                          options=[leg]))

    def fee(unit, price):
        return min(0.0003 * unit, 0.125 * price)

    q = 1.0 * 10_000.0 / 100.0
    b1 = put_value(100, 95, e1 - close_ms(0), VOL) * 1.05
    w = 10_000.0 - q * (b1 + fee(100, b1))
    eq1 = w + q * put_value(92, 95, e1 - close_ms(1), VOL)
    s2 = put_value(92, 95, e1 - close_ms(1), VOL) * 0.95            # the early roll's sale
    b2 = put_value(92, 87, e2 - close_ms(1), VOL) * 1.05            # its re-purchase
    w += q * (s2 - fee(92, s2)) - q * (b2 + fee(92, b2))
    eq2 = w + q * put_value(90, 87, e2 - close_ms(2), VOL)
    eq3 = w + q * 3.0                                               # the payoff at the expiry close
    dfee = min(0.00015 * 84, 0.125 * 3.0)
    assert dfee == pytest.approx(0.0126, rel=1e-12)
    b4 = put_value(84, 79, e3 - close_ms(3), VOL) * 1.05
    w += q * (3.0 - dfee) - q * (b4 + fee(84, b4))
    eq4 = w + q * put_value(85, 79, e3 - close_ms(4), VOL)
    np.testing.assert_allclose(series["equity"][:, 0], [10_000.0, eq1, eq2, eq3, eq4], rtol=1e-12)
    assert series["position"][:, 1, 0].tolist() == [0.0, q, q, q, q]

    f = fills_of(rec, instrument=1)
    assert f["bar"].tolist() == [1, 2, 2, 4, 4]
    assert f["reason"].tolist() == [FillReason.TARGET, FillReason.ROLL, FillReason.ROLL, FillReason.SETTLEMENT,
                                    FillReason.ROLL]
    np.testing.assert_allclose(f["price"], [b1, s2, b2, 3.0, b4], rtol=1e-12)
    np.testing.assert_allclose(f["size"], [q, -q, q, -q, q], rtol=1e-12)
    np.testing.assert_allclose(f["notional"], q * np.array([b1, s2, b2, 3.0, b4]), rtol=1e-12)
    np.testing.assert_allclose(f["fee"], q * np.array([fee(100, b1), fee(92, s2), fee(92, b2), dfee, fee(84, b4)]),
                               rtol=1e-12)
    assert (f["status"] == FillStatus.FILLED).all()
    assert series["pnl_fees"][-1, 1, 0] == pytest.approx(f["fee"].sum(), rel=1e-12)
    assert series["cum_fees"][-1, 0] == pytest.approx(f["fee"].sum(), rel=1e-12)
    # price PnL: sales and the settlement at their prices - purchases at theirs + the held value
    held = q * put_value(85, 79, e3 - close_ms(4), VOL)
    assert series["pnl_price"][-1, 1, 0] == pytest.approx(q * (s2 + 3.0 - b1 - b2 - b4) + held, rel=1e-12)
    np.testing.assert_allclose(series["option_value"][:, 0],
                               [0.0, q * put_value(92, 95, e1 - close_ms(1), VOL),
                                q * put_value(90, 87, e2 - close_ms(2), VOL), q * 3.0, held], rtol=1e-12)
    np.testing.assert_allclose(identity_residual(series), 0.0, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Options as collateral: a short perpetual and long puts through a rally
# ------------------------------------------------------------------------------------------

E_FAR = T0 + 60 * DAY


def short_with_puts(high: float, collateral, after="stop", later_put_target=False):
    """Cross, leverage 10, capital 10,000, no fees. Row 0 (bar 1 at 100): perp -4x (-400
    contracts, IM 4,000) and puts 2x (200 ATM puts, K 100, expiry T0+60d, bought at the close-0
    value v0). Bar 2 rallies from 100 to ``high`` and closes at 110."""
    candles = [(100, 100, 100, 100), (100, 100, 100, 100), (100, high, 100, 110), (110, 110, 110, 110)]
    n = len(candles)
    leg = put_leg(n, [E_FAR], moneyness=1.0, **NO_FEES)
    bars = daily_book(candles)
    m = len(collateral)
    tgt = np.full((n, 2, m), np.nan)
    tgt[0, :, :] = [[-4.0], [2.0]]
    if later_put_target:
        tgt[2, 1, :] = 2.0
    acc = Account(initial_capital=10_000.0, leverage=10.0, fee_rate=0.0, after_liquidation=after)
    return simulate_book_reference(bars, tgt, [SPEC], BookSettings(account=acc, options=[leg],
                                                                  options_collateral=collateral))


def test_puts_as_collateral_keep_the_short_alive():
    """After bar 1: W = 10,000 - 200 v0, with v0 = put(100, 100, 59 d). On bar 2's path the puts'
    value is taken at the mark high (adv = put(118, 100, 57 d)), a constant. Short linear, one
    tier 1 %: MB(P) = W + c - 400 (P - 100), MM = 4 P, so LP = (W + c + 40,000) / 404 with c = 0
    (no collateral: 117.4..., below the high 118: liquidated) or c = 200 adv (about 120: kept).
    Without collateral the liquidation leaves the puts alone (the account keeps max(0, MB - fees)
    = 0 as 1 % < 1.25 %) and they keep their value."""
    series, rec = short_with_puts(118.0, [False, True])
    v0 = put_value(100, 100, E_FAR - close_ms(0), VOL)
    w = 10_000.0 - 200 * v0
    adv = put_value(118, 100, E_FAR - close_ms(2), VOL)
    lp_plain = (w + 40_000.0) / 404.0
    lp_coll = (w + 200 * adv + 40_000.0) / 404.0
    assert lp_plain < 118.0 < lp_coll
    liq = rec["liquidations"]
    assert liq["col"].tolist() == [0] and liq["bar"].tolist() == [2]
    assert liq["price"][0] == pytest.approx(lp_plain, rel=1e-9)
    # column 0: the perp is gone, the puts stay; equity at the close = the puts' value
    assert series["position"][2:, :, 0].tolist() == [[0.0, 200.0], [0.0, 200.0]]
    assert series["equity"][2, 0] == pytest.approx(200 * put_value(110, 100, E_FAR - close_ms(2), VOL), rel=1e-12)
    assert not (fills_of(rec, col=0)["reason"] == FillReason.LIQUIDATION).any()
    # column 1: alive; equity at close 2 = W + uPnL + puts
    assert series["position"][2, :, 1].tolist() == [-400.0, 200.0]
    eq = w - 400 * (110 - 100) + 200 * put_value(110, 100, E_FAR - close_ms(2), VOL)
    assert series["equity"][2, 1] == pytest.approx(eq, rel=1e-12)
    # the adverse ratio counts the collateral at adv: MM / MB at the high
    mb = w + 200 * adv - 400 * (118 - 100)
    assert series["margin_ratio_adverse"][2, 1] == pytest.approx(4 * 118 / mb, rel=1e-12)
    np.testing.assert_allclose(identity_residual(series), 0.0, atol=1e-9)


def test_a_cross_liquidation_sells_the_collateral_puts_and_stops_them():
    """The same book through a rally to 125: with collateral c = 200 put(125, 100, 57 d),
    LP = (W + c + 40,000)/404 < 125: liquidated. The puts are sold first at adv into W (reason
    liquidation, no fee), then the account keeps max(0, MB - fees) = 0; with 'stop' a later
    target on the put leg is ignored."""
    series, rec = short_with_puts(125.0, [True], later_put_target=True)
    v0 = put_value(100, 100, E_FAR - close_ms(0), VOL)
    w = 10_000.0 - 200 * v0
    adv = put_value(125, 100, E_FAR - close_ms(2), VOL)
    lp = (w + 200 * adv + 40_000.0) / 404.0
    assert lp < 125.0
    liq = rec["liquidations"]
    assert liq["bar"].tolist() == [2] and liq["price"][0] == pytest.approx(lp, rel=1e-9)
    sale = fills_of(rec, instrument=1, bar=2)
    assert sale["reason"].tolist() == [FillReason.LIQUIDATION]
    assert sale["size"][0] == -200.0 and sale["fee"][0] == 0.0
    assert sale["price"][0] == pytest.approx(adv, rel=1e-12)
    assert len(fills_of(rec, instrument=1, bar=3)) == 0               # stopped: row 2's target ignored
    assert series["position"][2:, :, 0].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert series["equity"][2:, 0].tolist() == [0.0, 0.0]
    # equity_before: at the execution mark with the puts at adv
    assert liq["equity_before"][0] == pytest.approx(w - 400 * (lp - 100) + 200 * adv, rel=1e-9)
    np.testing.assert_allclose(identity_residual(series), 0.0, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Reductions before increases; clip and reject of a purchase
# ------------------------------------------------------------------------------------------

def test_put_purchase_funded_by_a_perp_reduction_clip_and_reject():
    """Cross, leverage 2, capital 10,000, flat at 100, no fees. Row 0 (bar 1): perp -1.8x
    (-180, IM 9,000; free margin 1,000). Row 1 (bar 2): puts 2x = 200 contracts at
    v1 = put(100, 100, 58 d) (about 2,000 of premium, more than 1,000), and in column 0 the perp
    back to -0.2x (-20, IM 1,000): the reduction executes first and frees the margin, the
    purchase is filled whole. Columns 1 and 2 keep the perp: 'clip' buys (10,000 - 9,000)/v1
    contracts (closed form), 'reject' buys none (record with the requested size, fee 0)."""
    candles = [(100, 100, 100, 100)] * 4
    n = len(candles)
    leg = put_leg(n, [E_FAR], moneyness=1.0, **NO_FEES)
    bars = daily_book(candles)
    tgt = np.full((n, 2, 3), np.nan)
    tgt[0, 0, :] = -1.8
    tgt[1, 1, :] = 2.0
    tgt[1, 0, 0] = -0.2
    acc = Account(initial_capital=10_000.0, leverage=2.0, fee_rate=0.0, excess=["clip", "clip", "reject"])
    series, rec = simulate_book_reference(bars, tgt, [SPEC], BookSettings(account=acc, options=[leg]))
    v1 = put_value(100, 100, E_FAR - close_ms(1), VOL)
    assert 1_000.0 < 200 * v1 < 9_000.0
    f0 = fills_of(rec, col=0, bar=2)
    assert f0["instrument"].tolist() == [0, 1] and f0["status"].tolist() == [FillStatus.FILLED] * 2
    assert f0["size"].tolist() == [160.0, 200.0]
    assert series["position"][2, :, 0].tolist() == [-20.0, 200.0]
    f1 = fills_of(rec, col=1, bar=2)
    assert f1["status"].tolist() == [FillStatus.CLIPPED]
    assert f1["size"][0] == pytest.approx(1_000.0 / v1, rel=1e-12)
    assert series["position"][2, 1, 1] == pytest.approx(1_000.0 / v1, rel=1e-12)
    f2 = fills_of(rec, col=2, bar=2)
    assert f2["status"].tolist() == [FillStatus.REJECTED] and f2["fee"].tolist() == [0.0]
    assert f2["size"][0] == pytest.approx(200.0, rel=1e-12)
    assert series["position"][2, 1, 2] == 0.0
    # no fees, flat perp: equity = capital + the puts' change in value since their purchase
    q = series["position"][2, 1]
    np.testing.assert_allclose(series["equity"][2], 10_000.0 + q * (put_value(100, 100, E_FAR - close_ms(2), VOL) - v1),
                               rtol=1e-12)
    np.testing.assert_allclose(identity_residual(series), 0.0, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Equity identity on the sample; a target before the first contract
# ------------------------------------------------------------------------------------------

def test_equity_identity_with_options_on_the_sample():
    """A short BTC perp (-2x, then -3x, -1x) with puts rebalanced daily (1x, 0.5x, 0.8x, once
    0), through an early roll and the February expiry, Deribit fees, delivery fees, slippage, funding; collateral off and on,
    reject and clip: equity = capital + capital added + the sum of every row's PnL split at
    every bar, and the option rows carry no funding or liquidation PnL."""
    symbol = "BTC/USDT:USDT"
    data = load_book_data("binanceusdm", [symbol], "1h", "2022-01-01", "2022-03-01", root=SAMPLE_ROOT)
    bars = data.bars
    leg = OptionLeg(symbol, put=PutSettings(vol_source="ewma", roll_delta=0.5))
    paths = option_paths(bars, [leg], False)
    first = int(np.argmax(np.isfinite(paths.val[:, 0])))
    n = bars.n
    tgt = np.full((n, 2, 4), np.nan)
    tgt[first, 0, :] = -2.0
    tgt[first + 300, 0, :] = -3.0
    tgt[first + 700, 0, :] = -1.0
    rows = np.arange(first, n - 1, 24)
    tgt[rows, 1, :] = np.resize([1.0, 0.5, 0.8], rows.shape[0])[:, None]
    tgt[rows[5], 1, :] = 0.0   # one whole sale, days before the February expiry
    acc = Account(initial_capital=10_000.0, leverage=5.0, excess=["reject", "clip", "reject", "clip"],
                  slippage=0.0005)
    series, rec = simulate_book_reference(bars, tgt, [load_market("binanceusdm", symbol)],
                                          BookSettings(account=acc, options=[leg],
                                                       options_collateral=[False, False, True, True]))
    np.testing.assert_allclose(identity_residual(series), 0.0, atol=1e-9 * 10_000.0)
    for name in ("pnl_funding", "pnl_liquidation", "liq_price"):
        assert (series[name][:, 1, :] == 0.0).all()
    f = rec["fills"][rec["fills"]["instrument"] == 1]
    assert {FillReason.TARGET, FillReason.ROLL, FillReason.SETTLEMENT} <= set(f["reason"].tolist())
    assert (f[f["reason"] == FillReason.TARGET]["size"] < 0.0).any()       # target sales too
    assert (series["pnl_fees"][-1, 1, :] > 0.0).all()
    assert np.isfinite(series["delta_btc"]).all() and np.isfinite(series["vega"]).all()


def test_target_before_the_first_contract_is_refused():
    """The put leg's first contract is at close 0: a target at row 0 with lag 0 would trade it
    at bar 0's open, before it exists; the error names the leg, the bar and the first bar it can
    trade."""
    candles = [(100, 100, 100, 100)] * 3
    leg = put_leg(3, [E_FAR], moneyness=1.0)
    tgt = np.full((3, 2), np.nan)
    tgt[0, 1] = 1.0
    acc = Account(initial_capital=10_000.0, lag=0, allow_lookahead=True)
    with pytest.raises(EngineInputError, match=r"option leg BTC put at bar 0 .*before its first contract.*"
                                               r"first trade at bar 1"):
        simulate_book_reference(daily_book(candles), tgt, [SPEC], BookSettings(account=acc, options=[leg]))


def test_a_gap_liquidation_sells_the_collateral_puts_at_the_open_value():
    """The short-and-puts book with collateral, bar 2 opening at 130 (a gap): at the mark opens
    MB = W + 200 old[1] - 400 x 30 < 0 <= MM, so step 2 liquidates at the opens (gap = 1): the
    puts are sold at old[1] = put(100, 100, 58 d), the value of the contracts held into the open,
    not at the bar's adverse value; the shortfall -MB is the insurance fund's deficit."""
    candles = [(100, 100, 100, 100), (100, 100, 100, 100), (130, 131, 129, 130), (130, 130, 130, 130)]
    n = len(candles)
    leg = put_leg(n, [E_FAR], moneyness=1.0, **NO_FEES)
    tgt = np.full((n, 2, 1), np.nan)
    tgt[0, :, 0] = [-4.0, 2.0]
    acc = Account(initial_capital=10_000.0, leverage=10.0, fee_rate=0.0)
    series, rec = simulate_book_reference(daily_book(candles), tgt, [SPEC],
                                          BookSettings(account=acc, options=[leg], options_collateral=True))
    w = 10_000.0 - 200 * put_value(100, 100, E_FAR - close_ms(0), VOL)
    old1 = put_value(100, 100, E_FAR - close_ms(1), VOL)
    mb = w + 200 * old1 - 400 * 30.0
    assert mb < 0.0
    liq = rec["liquidations"]
    assert liq["bar"].tolist() == [2] and liq["gap"].tolist() == [1] and liq["price"].tolist() == [130.0]
    assert liq["deficit"][0] == pytest.approx(-mb, rel=1e-9)
    sale = fills_of(rec, instrument=1, bar=2)
    assert sale["reason"].tolist() == [FillReason.LIQUIDATION] and sale["price"][0] == pytest.approx(old1, rel=1e-12)
    assert series["equity"][2:, 0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(identity_residual(series), 0.0, atol=1e-9)
