"""Rolled long calls (``PutSettings(option_type='call')``): the same simulator as the puts with
the call's strike rule, price, payoff and notional sign, each checked against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest.options import InstrumentInputError, PutSettings, Underlying, gbs_greeks, simulate_puts

H = 3_600_000
D = 86_400_000
YEAR = 365 * D
FLAT = dict(vol_source="iv", skew=0.0, slippage=0.0, fee_rate=0.0, delivery_fee_rate=0.0)


def ms(s: str) -> int:
    return int(pd.Timestamp(s, tz="UTC").value // 1_000_000)


def hourly(start: str, prices: np.ndarray, iv: float = 0.8) -> Underlying:
    ts = ms(start) + H * np.arange(len(prices))
    return Underlying.from_arrays(ts, prices, iv=np.full(len(prices), iv))


def gbm(n: int, seed: int, vol: float = 0.8, s0: float = 30_000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = 1 / (365 * 24)
    return s0 * np.exp(np.cumsum(rng.normal(-vol**2 / 2 * dt, vol * math.sqrt(dt), n)))


@pytest.mark.parametrize("final", [1.3, 0.8], ids=["itm", "otm"])
def test_call_strike_price_and_payoff(final):
    n = 24 * 30
    p = np.full(n, 30_000.0)
    p[24 * 10:] = np.linspace(30_000, 30_000 * final, n - 24 * 10)
    u = hourly("2022-06-01", p)
    res = simulate_puts(u, PutSettings(**FLAT, option_type="call", moneyness=1.10, strike_step=1000.0))
    roll = res.records["rolls"][0]
    # the smallest grid strike >= 1.10 x F (F = S, no carry): 33,000
    assert roll["strike"] == 33_000.0
    T = (roll["expiry"] - u.close_time[int(roll["bar"])]) / YEAR
    g = gbs_greeks(30_000.0, 33_000.0, T, 0.8, is_call=True)
    assert roll["premium"] / roll["contracts"] == pytest.approx(g["price"], rel=1e-12)
    assert roll["delta"] == pytest.approx(g["delta"], rel=1e-12) and roll["delta"] > 0
    st = res.records["settlements"][0]
    S_T = p[int(st["bar"])]
    assert st["payoff_per_contract"] == pytest.approx(max(S_T - 33_000.0, 0.0), abs=1e-9)
    i = int(roll["bar"])
    assert res.series["notional"][i, 0] == pytest.approx(roll["contracts"] * 30_000.0)  # long delta: +


def test_call_delta_strike_is_the_closest_grid_strike():
    p = gbm(24 * 40, seed=3)
    u = hourly("2022-03-01", p)
    res = simulate_puts(u, PutSettings(**FLAT, option_type="call", strike_mode="delta", target_delta=0.25,
                                       strike_step=500.0))
    r = res.records["rolls"][0]
    i = int(r["bar"])
    T = (r["expiry"] - u.close_time[i]) / YEAR
    S = p[i]
    errs = {k: abs(gbs_greeks(S, k, T, 0.8, is_call=True)["delta"] - 0.25)
            for k in np.arange(500.0, 3 * S, 500.0)}
    assert r["strike"] == min(errs, key=errs.get)


def test_call_with_protective_purpose_is_refused():
    u = hourly("2022-06-01", np.full(24 * 10, 30_000.0))
    with pytest.raises(InstrumentInputError, match="option_type='call'"):
        simulate_puts(u, PutSettings(**FLAT, option_type="call", purpose="protective"))
    with pytest.raises(InstrumentInputError, match="option_type='straddle' must be 'put' or 'call'"):
        simulate_puts(u, PutSettings(**FLAT, option_type="straddle"))
