"""The numba book kernel with option legs (long puts and calls, with and without options as
collateral) against the book's slow reference simulator on random books (hypothesis), and
its own equity identity."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backtest.book import BookSettings, simulate_book, simulate_book_reference
from backtest.book.options import ROLL_EARLY, ROLL_SETTLE, OptionLeg, option_paths
from backtest.book import nb as bnb
from backtest.options import PutSettings
from tests.book.test_book_kernel import _quiet_bars, assert_same_book, random_book
from tests.engine.scenario_kit import HOUR, T0


def random_option_book(seed: int, n: int = 30, m: int = 4, sparse: bool = False):
    """A random book (``random_book``: 2-4 instruments, cross/isolated mixes (all cross on half
    the seeds), every call response and policy) with 1-2 option legs: puts or calls on random instruments, an implied
    vol series, expiries every 9 hours (settlements and early rolls inside the window), random
    fees and slippage; option targets in [0, 0.3] or [0, 3] on half the rows (``sparse``: one row
    in ten, with ``random_book``'s sparse orders and funding, so that quiet stretches occur);
    options as collateral per column."""
    bars, tgt, specs, s = random_book(seed, n, m, sparse)
    rng = np.random.default_rng(seed + 7919)
    kk = bars.k
    jj = int(rng.integers(1, 3))
    inverse = bool(specs[0].inverse)
    expiries = T0 + 9 * HOUR * np.arange(1, 40)
    legs = []
    for _ in range(jj):
        k = int(rng.integers(0, kk))
        call = bool(rng.random() < 0.5)
        put = PutSettings(
            settlement="coin" if inverse else "usd", option_type="call" if call else "put",
            moneyness=float(rng.choice([0.95, 1.0, 1.05])) * (1.05 if call else 0.95), strike_step=None,
            min_days=0.0, roll_dte=float(rng.choice([0.0, 0.1])), vol_source="iv", skew=float(rng.choice([0.0, 0.1])),
            fee_rate=float(rng.choice([0.0, 0.0003])), fee_cap=0.125,
            delivery_fee_rate=float(rng.choice([0.0, 0.00015])), slippage=float(rng.choice([0.0, 0.05])))
        iv = np.full(bars.n, float(rng.choice([0.5, 0.9, 1.5])))
        legs.append(OptionLeg(bars.symbols[k], put, iv=iv, expiries=expiries))
    otg = rng.uniform(0.0, float(rng.choice([0.3, 3.0])), (n, jj, m))
    otg[rng.random((n, jj, m)) < (0.9 if sparse else 0.5)] = np.nan
    otg[rng.random((n, jj, m)) < 0.05] = 0.0
    for q, leg in enumerate(legs):
        f = int(bars.first_bar[bars.symbols.index(leg.underlying)])
        otg[: f + 1, q, :] = np.nan  # the first contract is bought at the close of the first bar
    legs_s = s.legs
    if rng.random() < 0.5:  # all cross: cross liquidations that sell collateral options occur
        legs_s = [replace(leg, margin_mode="cross") for leg in s.legs]
    s = BookSettings(account=s.account, policy=s.policy, legs=legs_s, intrabar=s.intrabar, options=legs,
                     options_collateral=list(rng.random(m) < 0.7))
    return bars, np.concatenate([tgt, otg], axis=1), specs, s


def test_roll_codes_are_the_paths():
    """The kernel's roll constants are the path module's (one definition, checked)."""
    assert (bnb.ROLL_SETTLE, bnb.ROLL_EARLY) == (ROLL_SETTLE, ROLL_EARLY)


def test_random_option_books_roll_settle_and_trade():
    """The random option books do settle, roll early, buy, sell and (some) liquidate, so the
    comparison below is not vacuous: summed over a few seeds."""
    seen = {"settle": 0, "early": 0, "buy": 0, "sell": 0, "liq_sale": 0, "clip": 0}
    for seed in range(40):
        bars, tgt, specs, s = random_option_book(seed)
        res = simulate_book(bars, tgt, specs, s)
        f = res.records["fills"]
        opt = f[f["instrument"] >= bars.k]
        seen["settle"] += int((opt["reason"] == 3).sum())
        seen["early"] += int(((opt["reason"] == 2) & (opt["size"] < 0)).sum())
        seen["buy"] += int((opt["size"] > 0).sum())
        seen["sell"] += int(((opt["reason"] == 0) & (opt["size"] < 0)).sum())
        seen["liq_sale"] += int((opt["reason"] == 4).sum())
        seen["clip"] += int((opt["status"] == 1).sum())
    assert all(v > 0 for v in seen.values()), seen


def test_equity_identity_with_options():
    """Per bar and column: equity = initial capital + capital added + the sum over every
    instrument and option leg of price + funding - fees + liquidation PnL."""
    for seed in range(8):
        bars, tgt, specs, s = random_option_book(seed)
        res = simulate_book(bars, tgt, specs, s)
        p = res.positions
        total = (p["pnl_price"] + p["pnl_funding"] - p["pnl_fees"] + p["pnl_liquidation"]).sum(axis=1)
        ic = float(s.account.initial_capital)
        np.testing.assert_allclose(res.series["equity"], ic + res.series["capital_added"] + total,
                                   rtol=1e-9, atol=1e-9 * ic)
        np.testing.assert_allclose(res.series["option_value"], (
            p["position"][:, bars.k:, :] * np.nan_to_num(option_paths(bars, s.options, bool(specs[0].inverse)).old)[
                :, :, None]).sum(axis=1), rtol=1e-12, atol=1e-12 * ic)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
@example(seed=0)
def test_kernel_equals_reference_on_random_option_books(seed):
    """Random books with puts and calls (settlements, early rolls, clip/reject, collateral on
    and off, cross liquidations that sell the options): the kernel gives the reference's
    numbers, every series and record."""
    bars, tgt, specs, s = random_option_book(seed)
    series, records = simulate_book_reference(bars, tgt, specs, s)
    res = simulate_book(bars, tgt, specs, s)
    assert_same_book(bars, res, series, records, float(s.account.initial_capital))
    for name in ("option_value", "delta_btc", "vega"):
        np.testing.assert_allclose(res.series[name], series[name], rtol=1e-9,
                                   atol=1e-9 * float(s.account.initial_capital), err_msg=name)


@pytest.mark.parametrize("seed", range(4))
def test_kernel_equals_reference_on_sparse_option_books(seed):
    """Sparse orders, funding and option trades: the kernel values the bars between an option
    leg's rolls and trades in quiet stretches (columns without options as collateral), and gives
    the reference's numbers."""
    bars, tgt, specs, s = random_option_book(seed, n=60, sparse=True)
    series, records = simulate_book_reference(bars, tgt, specs, s)
    res = simulate_book(bars, tgt, specs, s)
    assert_same_book(bars, res, series, records, float(s.account.initial_capital))
    for name in ("option_value", "delta_btc", "vega"):
        np.testing.assert_allclose(res.series[name], series[name], rtol=1e-9,
                                   atol=1e-9 * float(s.account.initial_capital), err_msg=name)


def test_option_books_take_quiet_stretches_and_they_change_nothing():
    """With option legs held (without collateral), the kernel takes quiet stretches between the
    legs' rolls and trades, and its every output is bit for bit the one of the same kernel
    taking none."""
    quiet = total = 0
    for seed in range(6):
        bars, tgt, specs, s = random_option_book(seed, 60, 4, sparse=True)
        a, ra = _quiet_bars(bars, tgt, specs, s)
        b, rb = _quiet_bars(bars, tgt, specs, s, no_stretches=True)
        assert b.quiet.sum() == 0
        quiet += int(a.quiet.sum())
        total += bars.n * tgt.shape[2]
        assert np.array_equal(a.series, b.series, equal_nan=True) and np.array_equal(a.pseries, b.pseries)
        assert np.array_equal(a.counts, b.counts) and np.array_equal(a.fpos, b.fpos)
        for x, y in zip(ra, rb):
            assert np.array_equal(x, y)
    assert quiet > 0.1 * total, (quiet, total)
