"""``purpose='protective'``: the puts protect a held long position in the underlying, and that
position's P&L is part of the result. The put leg is the directional one; the holding is
``Q = exposure x initial_capital / S_start`` coins, held from the first purchase's close.

* equity(protective) = equity(directional) + Q x (S_t - S_start) on every bar from the start;
* at expiry, a holding covered by as many puts ends at the same value whatever the settlement
  price below the strike (the floor the put buys);
* the long_put strategy's ``purpose`` reaches the simulator through the column labels;
* coin settlement, where the coin balance already is the long holding, is refused.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest.metrics import compute_metrics
from backtest.options import InstrumentInputError, PutSettings, Underlying, simulate_puts

H = 3_600_000
FLAT = dict(vol_source="iv", skew=0.0, slippage=0.0, fee_rate=0.0, delivery_fee_rate=0.0)


def ms(s: str) -> int:
    return int(pd.Timestamp(s, tz="UTC").value // 1_000_000)


def hourly(start: str, prices: np.ndarray, iv: float = 0.8) -> Underlying:
    return Underlying.from_arrays(ms(start) + H * np.arange(len(prices)), prices, iv=np.full(len(prices), iv))


def gbm(n: int, seed: int, vol: float = 0.8, s0: float = 30_000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = 1 / (365 * 24)
    return s0 * np.exp(np.cumsum(rng.normal(-vol**2 / 2 * dt, vol * math.sqrt(dt), n)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_protective_equity_is_the_put_account_plus_the_holding_pnl(seed):
    p = gbm(24 * 95, seed)
    u = hourly("2022-03-01", p)
    grid = dict(exposure=[1.0, 0.5], moneyness=[0.9, 0.95], initial_capital=[10_000.0, 25_000.0])
    d = simulate_puts(u, PutSettings(**grid, purpose="directional", roll_dte=3))
    pr = simulate_puts(u, PutSettings(**grid, purpose="protective", roll_dte=3))
    for j in range(2):
        s0 = p[pr.meta["start_bar"][j]]
        q = grid["exposure"][j] * grid["initial_capital"][j] / s0
        assert pr.meta["protective"]["holding"][j] == pytest.approx(q, rel=1e-15)
        assert pr.meta["protective"]["entry_price"][j] == s0
        held = np.arange(len(p)) >= pr.meta["start_bar"][j]
        pnl = np.where(held, q * (p - s0), 0.0)
        # the put account by its cash flows (capital + received - premium - fees + value), plus the
        # held coins' P&L
        puts = (grid["initial_capital"][j] + pr.series["cum_received"][:, j] - pr.series["premium_paid"][:, j]
                - pr.series["cum_fees"][:, j] + pr.series["option_value"][:, j])
        np.testing.assert_allclose(pr.series["equity"][:, j], puts + pnl, rtol=1e-12,
                                   atol=1e-9 * grid["initial_capital"][j])
        np.testing.assert_array_equal(pr.series["equity_usd"][:, j], pr.series["equity"][:, j])
        # every purchase covers the holding: Q contracts
        mine = pr.records["rolls"][(pr.records["rolls"]["col"] == j) & (pr.records["rolls"]["expiry"] >= 0)]
        np.testing.assert_allclose(mine["contracts"], q, rtol=1e-12)
        # the account's delta counts the holding: d(equity)/dS = Q + the puts' delta (Q puts)
        np.testing.assert_allclose(pr.series["account_delta"][:, j],
                                   pr.series["delta"][:, j] + np.where(held, q, 0.0), rtol=1e-12, atol=1e-12)
        # the first purchase is the directional one (same cash, same size at the start)
        assert pr.records["rolls"][pr.records["rolls"]["col"] == j][0]["contracts"] == pytest.approx(
            d.records["rolls"][d.records["rolls"]["col"] == j][0]["contracts"], rel=1e-12)


@pytest.mark.parametrize("final", [0.5, 0.6, 0.7])
def test_protective_put_floors_the_holding_at_expiry(final):
    """First purchase at the first close (S0 = 30,000), strike K = 27,000 (10 % OTM, flat vol,
    no fees): covered by exactly Q puts, the account at the settlement close is
    cash + Q x (S_T - S0) + Q x (K - S_T) = cash + Q x (K - S0) for any S_T below K."""
    n = 24 * 30
    p = np.full(n, 30_000.0)
    p[24 * 10:] = np.linspace(30_000, 30_000 * final, n - 24 * 10)
    u = hourly("2022-06-01", p)
    res = simulate_puts(u, PutSettings(**FLAT, purpose="protective", expiry="monthly", moneyness=0.9))
    roll = res.records["rolls"][0]
    st = res.records["settlements"]
    i = int(st["bar"][0])
    q = res.meta["protective"]["holding"][0]
    assert roll["contracts"] == pytest.approx(q, rel=1e-12)  # the first put covers the whole holding
    assert roll["strike"] == 27_000.0 and p[i] < roll["strike"]
    cash_after_purchase = 10_000.0 - roll["premium"] - roll["fee"]
    # at the settlement close a new put is bought: its cost is in the roll of that bar
    new = res.records["rolls"][res.records["rolls"]["bar"] == i]
    spent = float(new["premium"].sum() + new["fee"].sum())
    value_new = res.series["option_value"][i, 0]
    floor = cash_after_purchase + q * (roll["strike"] - 30_000.0)
    assert res.series["equity"][i, 0] == pytest.approx(floor - spent + value_new, rel=1e-12)


def test_protection_pays_in_a_crash_and_costs_the_premium_in_a_calm():
    n = 24 * 30
    crash = np.full(n, 30_000.0)
    crash[24 * 10:] = np.linspace(30_000, 15_000, n - 24 * 10)
    calm = np.full(n, 30_000.0)
    for p, protected_better in ((crash, True), (calm, False)):
        u = hourly("2022-06-01", p)
        pr = simulate_puts(u, PutSettings(**FLAT, purpose="protective"))
        i = int(pr.records["settlements"]["bar"][0])
        q = pr.meta["protective"]["holding"][0]
        holding_alone = 10_000.0 + q * (p[i] - 30_000.0)
        assert (pr.series["equity"][i, 0] > holding_alone) == protected_better
        m = compute_metrics(pr)["columns"]
        assert next(iter(m.values()))["final_equity"] == pytest.approx(pr.series["equity"][-1, 0], rel=1e-15)


def test_protective_with_coin_settlement_is_refused():
    u = hourly("2022-06-01", np.full(24 * 40, 30_000.0))
    with pytest.raises(InstrumentInputError, match=r"purpose='protective'.*settlement='coin'.*'directional'"):
        simulate_puts(u, PutSettings(vol_source="iv", settlement="coin", purpose="protective"))


def test_unknown_purpose_is_refused():
    u = hourly("2022-06-01", np.full(24 * 40, 30_000.0))
    with pytest.raises(InstrumentInputError, match=r"purpose='hedge' is not one of \['directional', 'protective'\]"):
        simulate_puts(u, PutSettings(vol_source="iv", purpose="hedge"))


def test_long_put_strategy_purpose_reaches_the_simulator():
    from strategies import signals
    from strategies.long_put import settings_of

    p = gbm(24 * 70, 5)
    frame = pd.DataFrame({"close": p}, index=pd.to_datetime(ms("2022-03-01") + H * np.arange(len(p)), unit="ms",
                                                             utc=True))
    sig = signals(frame, "long_put", {"purpose": ["directional", "protective"], "trigger": "always"})
    values = settings_of(sig.columns)
    assert values["purpose"] == ["directional", "protective"]
    u = hourly("2022-03-01", p)
    res = simulate_puts(u, PutSettings(**FLAT, **{k: v for k, v in values.items()}), hold=sig.to_numpy())
    s0 = p[res.meta["start_bar"][1]]
    q = res.meta["protective"]["holding"][1]
    assert res.meta["protective"]["holding"][0] == 0.0
    assert q == pytest.approx(10_000.0 / s0, rel=1e-12)
    # the protective column holds Q coins and Q puts; the directional one sizes from its cash
    rolls = res.records["rolls"]
    np.testing.assert_allclose(rolls[(rolls["col"] == 1) & (rolls["expiry"] >= 0)]["contracts"], q, rtol=1e-12)
    assert res.series["account_delta"][-1, 1] == pytest.approx(res.series["delta"][-1, 1] + q, rel=1e-12)


def test_every_protective_roll_covers_the_whole_holding_after_a_rally():
    """The price doubles over four months: a directional put program sized from its cash buys
    about half the coins at the later rolls, a protective one keeps covering the Q coins it holds
    (otherwise half of the holding would be unprotected)."""
    n = 24 * 125
    p = np.linspace(30_000.0, 60_000.0, n)
    u = hourly("2022-02-01", p)
    pr = simulate_puts(u, PutSettings(**FLAT, purpose="protective"))
    d = simulate_puts(u, PutSettings(**FLAT, purpose="directional"))
    q = pr.meta["protective"]["holding"][0]
    assert q == pytest.approx(10_000.0 / 30_000.0, rel=1e-12)
    bought = pr.records["rolls"]["contracts"]
    assert len(bought) >= 4
    np.testing.assert_allclose(bought, q, rtol=1e-12)
    later = d.records["rolls"]["contracts"][-1]
    assert later < 0.6 * q  # cash-sized: exposure x cash / S at twice the price
