"""The account series a book adds to its positions' (docs/mechanics.md, "Books", step 6): the
distance to liquidation (``liq_distance``: the smallest common adverse move from the closes that
liquidates a margin group) against closed forms, checked in turn by the reference simulator's own
margin ratio at that move; and the beta-weighted (BTC-equivalent) exposure against a pandas hand
computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest.book import BookBars, BookSettings, Leg, simulate_book, simulate_book_reference
from backtest.engine.settings import Account
from tests.engine.scenario_kit import make_bars, make_spec


def one_tier(mmr: float) -> list[dict]:
    return [{"minNotional": 0.0, "maxNotional": None, "maintenanceMarginRate": mmr, "maxLeverage": 25.0,
             "maintAmt": 0.0}]


SPEC_A = make_spec(tiers=one_tier(0.01), liquidation_fee=0.0125)   # A: maintenance 1 %
SPEC_B = make_spec(tiers=one_tier(0.02), liquidation_fee=0.0125)   # B: maintenance 2 %


def account(**kw) -> Account:
    base = dict(initial_capital=1_000.0, leverage=20.0, fee_rate=0.0, margin_call_threshold=1.0,
                lag=0, allow_lookahead=True)
    return Account(**{**base, **kw})


def opened_at_bar0(n: int, *exposures: float) -> np.ndarray:
    tgt = np.full((n, len(exposures), 1), np.nan)
    tgt[0, :, 0] = exposures
    return tgt


def flat_then(p0: float, close: float) -> list[tuple]:
    """Bar 0 at ``p0`` throughout (the fill at its open), bar 1 from ``p0`` to ``close``."""
    return [(p0, p0, p0, p0), (p0, max(p0, close), min(p0, close), close)]


# ------------------------------------------------------------------------------------------
# Distance to liquidation: closed forms
# ------------------------------------------------------------------------------------------

# A short and a long in cross. Capital 1,000, no fees, filled at bar 0's open: A -3x (30 at
# 100), B +2x (40 at 50). Bar 1 closes A at 102, B at 49: uPnL -60 - 40, MB(0) = 900.
# After a common adverse move x (A to 102 (1 + x), B to 49 (1 - x)), one tier each:
#   MB(x) = 900 - 30*102*x - 40*49*x,   MM(x) = 0.01*30*102*(1 + x) + 0.02*40*49*(1 - x)
#   MB = MM at x* = (900 - 30.6 - 39.2) / (3,060*1.01 + 1,960*0.98) = 830.2 / 5,011.4.
X_PAIR = 830.2 / 5_011.4


def pair_book(a_close: float = 102.0, b_close: float = 49.0, mode_b: str = "cross"):
    bars = BookBars.from_legs(["A", "B"], [make_bars(flat_then(100.0, a_close)), make_bars(flat_then(50.0, b_close))])
    settings = BookSettings(account=account(), legs=[Leg(), Leg(margin_mode=mode_b)])
    return bars, opened_at_bar0(2, -3.0, 2.0), [SPEC_A, SPEC_B], settings


def test_distance_of_a_short_and_a_long_in_cross_is_the_closed_form():
    bars, tgt, specs, s = pair_book()
    series, _ = simulate_book_reference(bars, tgt, specs, s)
    res = simulate_book(bars, tgt, specs, s)
    assert series["position"][1, :, 0].tolist() == pytest.approx([-30.0, 40.0], rel=1e-12)
    assert series["liq_distance"][1, 0] == pytest.approx(X_PAIR, rel=1e-12)
    assert res.series["liq_distance"][1, 0] == pytest.approx(X_PAIR, rel=1e-12)


def test_reference_margin_ratio_at_that_move_is_one():
    """Bar 2 moves every mark by the distance found at bar 1's close (a hair less, 1e-12 of it,
    so that the account is not liquidated on the way): the reference's margin ratio at bar 2's
    close is 1 within 1e-9."""
    res = simulate_book(*pair_book())
    x = float(res.series["liq_distance"][1, 0]) * (1.0 - 1e-12)
    a, b = 102.0 * (1.0 + x), 49.0 * (1.0 - x)
    legs = [make_bars(flat_then(100.0, 102.0) + [(102.0, a, 102.0, a)]),
            make_bars(flat_then(50.0, 49.0) + [(49.0, 49.0, b, b)])]
    bars = BookBars.from_legs(["A", "B"], legs)
    series, rec = simulate_book_reference(bars, opened_at_bar0(3, -3.0, 2.0), [SPEC_A, SPEC_B],
                                          BookSettings(account=account()))
    assert len(rec["liquidations"]) == 0
    assert series["margin_ratio"][2, 0] == pytest.approx(1.0, abs=1e-9)
    assert series["liq_distance"][2, 0] == pytest.approx(0.0, abs=1e-9)


def test_distance_is_the_nearest_margin_group():
    """B isolated (margin 2,000/20 = 100): its own group liquidates at
    x_B = (100 - 40 - 0.02*1,960) / (1,960*0.98) = 20.8/1,920.8; the cross account (A alone,
    wallet 900 after B's margin, uPnL -60) at x_A = (840 - 30.6) / (3,060*1.01) = 809.4/3,090.6.
    The account's distance is the smaller."""
    bars, tgt, specs, s = pair_book(mode_b="isolated")
    series, _ = simulate_book_reference(bars, tgt, specs, s)
    res = simulate_book(bars, tgt, specs, s)
    x_b, x_a = 20.8 / 1_920.8, 809.4 / 3_090.6
    assert x_b < x_a
    for got in (series["liq_distance"][1, 0], res.series["liq_distance"][1, 0]):
        assert got == pytest.approx(x_b, rel=1e-12)


def test_a_short_below_one_times_needs_more_than_a_doubling():
    """A -0.5x short of 5 at 100, closing at 100: x* = (1,000 - 0.01*500) / (500*1.01) = 1.9703
    (the price nearly triples); a flat column has no distance (NaN)."""
    bars = BookBars.from_legs(["A"], [make_bars(flat_then(100.0, 100.0))])
    tgt = np.full((2, 1, 2), np.nan)
    tgt[0, 0, 0] = -0.5
    s = BookSettings(account=account())
    series, _ = simulate_book_reference(bars, tgt, [SPEC_A], s)
    res = simulate_book(bars, tgt, [SPEC_A], s)
    for got in (series["liq_distance"][:, :], res.series["liq_distance"][:, :]):
        assert got[1, 0] == pytest.approx(995.0 / 505.0, rel=1e-12)
        assert np.isnan(got[:, 1]).all()


def test_an_unlevered_inverse_short_is_never_liquidated():
    """Coin-margined, capital 1 BTC, a -1x short of 100 contracts (100 USD each) at 10,000:
    MB - MM = W - C_usd/e + C_usd (1 - mmr)/q > 0 for every price q (W = C_usd/e), so no common
    move liquidates it: the distance is inf."""
    spec = make_spec(inverse=True, tiers=one_tier(0.01), lot=1.0)
    bars = BookBars.from_legs(["A"], [make_bars(flat_then(10_000.0, 10_000.0))])
    s = BookSettings(account=account(initial_capital=1.0))
    series, _ = simulate_book_reference(bars, opened_at_bar0(2, -1.0), [spec], s)
    res = simulate_book(bars, opened_at_bar0(2, -1.0), [spec], s)
    assert series["position"][1, 0, 0] == -100.0
    assert series["liq_distance"][1, 0] == math.inf and res.series["liq_distance"][1, 0] == math.inf


# ------------------------------------------------------------------------------------------
# Beta-weighted (BTC-equivalent) exposure
# ------------------------------------------------------------------------------------------

def test_beta_exposure_of_the_pair_by_hand():
    """Bar 1: A -30 at 102 (N = -3,060), B +40 at 49 (N = 1,960), equity 900; betas A 1 (the
    benchmark), B 1.5: B = -3,060 + 1.5*1,960 = -120, i.e. -120/900 = -0.1333 x equity and
    -120/102 = -1.1765 A-coins. Bar 0 (A -30 at 100, B +40 at 50, equity 1,000) has B's beta
    unknown (NaN): the exposure is NaN there, not a partial sum."""
    bars, tgt, specs, s = pair_book()
    betas = {"A": 1.0, "B": np.array([np.nan, 1.5])}
    series, _ = simulate_book_reference(bars, tgt, specs, s, betas=betas, benchmark="A")
    res = simulate_book(bars, tgt, specs, s, betas=betas, benchmark="A")
    for got in (series, res.series):
        assert np.isnan(got["beta_exposure"][0, 0]) and np.isnan(got["beta_exposure_coin"][0, 0])
        assert got["beta_exposure"][1, 0] == pytest.approx(-120.0 / 900.0, rel=1e-12)
        assert got["beta_exposure_coin"][1, 0] == pytest.approx(-120.0 / 102.0, rel=1e-12)
    sim = res.to_sim_result()
    assert sim.series["beta_exposure"][1, 0] == pytest.approx(-120.0 / 900.0, rel=1e-12)
    assert sim.series["liq_distance"][1, 0] == pytest.approx(X_PAIR, rel=1e-12)
    assert res.meta["beta_benchmark"] == "A"


def _pandas_beta_exposure(res, betas: pd.DataFrame, option_under: list[str]) -> tuple[pd.DataFrame, ...]:
    """sum_i beta_i N_i over the rows (an option leg: its underlying's beta), per column, with
    pandas: NaN when a held row's beta is NaN, 0 for flat rows."""
    per_eq, coin = {}, {}
    rows = list(res.symbols)
    for j, label in enumerate(res.columns):
        n_df = pd.DataFrame(res.positions["notional"][:, :, j], index=res.index, columns=rows)
        b_df = pd.concat([betas, betas[option_under].set_axis(rows[betas.shape[1]:], axis=1)], axis=1)
        contrib = (n_df * b_df).where(n_df != 0.0, 0.0)
        total = contrib.sum(axis=1, skipna=False)
        eq = pd.Series(res.series["equity"][:, j], index=res.index)
        per_eq[label] = (total / eq).where(eq > 0.0)
        coin[label] = total
    return pd.DataFrame(per_eq), pd.DataFrame(coin)


@pytest.mark.parametrize("seed", [3, 11])
def test_beta_exposure_with_option_legs_is_the_pandas_computation(seed):
    """Random books with option legs (an option row's notional is its delta-equivalent one, so
    it adds delta x its underlying's beta), random betas with a NaN warm-up: the kernel's and the
    reference's series equal a pandas computation from the positions' notionals."""
    from tests.book.test_book_options_kernel import random_option_book

    bars, tgt, specs, s = random_option_book(seed)
    rng = np.random.default_rng(seed)
    betas = pd.DataFrame(rng.uniform(0.5, 2.0, (bars.n, bars.k)), index=bars.index, columns=list(bars.symbols))
    betas.iloc[:10, 0] = np.nan   # a warm-up of the first instrument's beta (listed from bar 0)
    bench = bars.symbols[-1]
    res = simulate_book(bars, tgt, specs, s, betas=betas.to_numpy(), benchmark=bench)
    ref, _ = simulate_book_reference(bars, tgt, specs, s, betas=betas.to_numpy(), benchmark=bench)
    under = [leg.underlying for leg in s.options]
    per_eq, total = _pandas_beta_exposure(res, betas, under)
    # the warm-up is exercised: the first instrument is held there with no beta (NaN exposure)
    assert (res.positions["notional"][:10, 0, :] != 0.0).any() and np.isnan(res.series["beta_exposure"][:10]).any()
    np.testing.assert_allclose(res.series["beta_exposure"], per_eq.to_numpy(), rtol=1e-12, atol=1e-15)
    k_b = bars.symbols.index(bench)
    usd = bars.prices("mark_close")[:, 0] if specs[0].inverse else np.ones(bars.n)
    want_coin = total.to_numpy() * (usd / bars.prices("mark_close")[:, k_b])[:, None]
    np.testing.assert_allclose(res.series["beta_exposure_coin"], want_coin, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ref["beta_exposure"], res.series["beta_exposure"], rtol=1e-9,
                               atol=1e-9 * np.nanmax(np.abs(res.series["beta_exposure"])))


def test_bad_betas_name_the_fix():
    bars, tgt, specs, s = pair_book()
    with pytest.raises(Exception, match="give .*2.* constant betas"):
        simulate_book(bars, tgt, specs, s, betas=[1.0, 1.0, 1.0])
    with pytest.raises(Exception, match=r"missing \['B'\]"):
        simulate_book(bars, tgt, specs, s, betas={"A": 1.0})
    with pytest.raises(Exception, match="not an instrument of the book"):
        simulate_book(bars, tgt, specs, s, betas=[1.0, 1.0], benchmark="BTC")
    with pytest.raises(Exception, match="infinite"):
        simulate_book(bars, tgt, specs, s, betas=[1.0, np.inf])


# ------------------------------------------------------------------------------------------
# In the report and its Parquet files
# ------------------------------------------------------------------------------------------

def test_report_draws_the_accounts_distance_and_beta_exposure(tmp_path):
    """A book's distance-to-liquidation figure is the account's ``liq_distance`` (the hand case
    above: X_PAIR at bar 1), its beta-weighted exposure has a figure, and both are columns of
    equity.parquet."""
    from backtest.report import build_report, collect, write_report
    from backtest.report.figures import decode_array

    bars, tgt, specs, s = pair_book()
    res = simulate_book(bars, tgt, specs, s, columns=["pair"], betas={"A": 1.0, "B": 1.5}, benchmark="A")
    figs = {f["id"]: f["spec"] for f in build_report(collect({"book": res}, title="t"))["figures"]}
    y = decode_array(next(t for t in figs["fig-0-liq_distance"]["data"] if t.get("name") == "pair")["y"])
    np.testing.assert_array_equal(y, res.series["liq_distance"][:, 0].astype(np.float32))
    assert y[1] == np.float32(X_PAIR)
    assert "Distance to liquidation of the account" in figs["fig-0-liq_distance"]["layout"]["title"]["text"]
    yb = decode_array(next(t for t in figs["fig-0-beta_exposure"]["data"] if t.get("name") == "pair")["y"])
    assert yb[1] == np.float32(-120.0 / 900.0)
    out = write_report({"book": res}, tmp_path / "r", title="t", html=False)
    eq = pd.read_parquet(out / "equity.parquet")
    eq = eq[eq["result"] == "book"].sort_values("bar")
    assert eq["liq_distance"].iloc[1] == pytest.approx(X_PAIR, rel=1e-12)
    assert eq["beta_exposure"].iloc[1] == pytest.approx(-120.0 / 900.0, rel=1e-12)


@pytest.mark.parametrize("contracts, price, x", [(-3.0, 102.0, 0.25), (4.0, 49.0, 0.25), (-1.0, 10.0, 3.5),
                                                 (2.0, 7.0, 0.0)])
def test_the_kernels_common_move_is_the_liqcap_policys(contracts, price, x):
    """The kernel's moved price (``moved_price_nb``) is the ``liqcap`` book policy's definition of
    the common adverse move (``strategies.policies.book.moved_price``)."""
    from backtest.book.nb import moved_price_nb
    from strategies.policies.book import moved_price

    assert moved_price_nb(contracts, price, x) == moved_price(contracts, price, x)
