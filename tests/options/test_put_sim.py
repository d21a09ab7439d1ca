"""The rolled long-put simulator: settlement payoff, a bar-by-bar equity identity re-priced
independently from the records, coin settlement (Deribit examples), strike and size rules,
early rolls, parameter grids, data shapes and bad-input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.options import (
    InstrumentInputError, PutSettings, Underlying, black76_greeks, gbs_greeks, simulate_puts, skewed_vol,
)
from backtest.result import REQUIRED_SERIES

H = 3_600_000
D = 86_400_000
YEAR = 365 * D
V = json.loads((Path(__file__).parent / "vectors.json").read_text())


def ms(s: str) -> int:
    return int(pd.Timestamp(s, tz="UTC").value // 1_000_000)


def hourly(start: str, prices: np.ndarray, iv: float | np.ndarray = 0.8) -> Underlying:
    ts = ms(start) + H * np.arange(len(prices))
    ivs = np.full(len(prices), iv) if np.isscalar(iv) else iv
    return Underlying.from_arrays(ts, prices, iv=ivs)


def gbm(n: int, seed: int, vol: float = 0.8, s0: float = 30_000.0, drift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = 1 / (365 * 24)
    return s0 * np.exp(np.cumsum(rng.normal((drift - vol**2 / 2) * dt, vol * math.sqrt(dt), n)))


FLAT = dict(vol_source="iv", skew=0.0, slippage=0.0, fee_rate=0.0, delivery_fee_rate=0.0)


# --- settlement ---------------------------------------------------------------------------------

@pytest.mark.parametrize("final", [0.7, 1.3], ids=["itm", "otm"])
def test_put_held_to_expiry_pays_intrinsic(final):
    n = 24 * 30
    p = np.full(n, 30_000.0)
    p[24 * 10:] = np.linspace(30_000, 30_000 * final, n - 24 * 10)   # path into the money (or not)
    u = hourly("2022-06-01", p)
    res = simulate_puts(u, PutSettings(**FLAT, expiry="monthly"))
    roll = res.records["rolls"][0]
    st = res.records["settlements"]
    assert len(st) == 1 and st["expiry"][0] == ms("2022-06-24 08:00") == roll["expiry"]
    i = int(st["bar"][0])
    assert u.close_time[i] == ms("2022-06-24 08:00")        # 07:00 bar closes at the expiry
    S_T = p[i]
    assert st["settle_price"][0] == S_T and st["strike"][0] == roll["strike"]
    assert st["payoff_per_contract"][0] == max(roll["strike"] - S_T, 0.0)
    assert st["payoff"][0] == roll["contracts"] * max(roll["strike"] - S_T, 0.0)
    recv = res.series["cum_received"][:, 0]
    assert recv[i] - recv[i - 1] == st["payoff"][0]
    assert (final < 1) == (st["payoff"][0] > 0)


def _held(res, col: int, n: int) -> list[dict]:
    """Per bar, the put held after the bar's events, rebuilt from the records only."""
    ev: dict[int, list] = {}
    for r in res.records["settlements"][res.records["settlements"]["col"] == col]:
        ev.setdefault(int(r["bar"]), []).append(("settle", r))
    for r in res.records["rolls"][res.records["rolls"]["col"] == col]:
        ev.setdefault(int(r["bar"]), []).append(("roll", r))
    flat = {"strike": 1.0, "expiry": 2**62, "contracts": 0.0}   # placeholder worth 0 x anything
    cur, out = flat, []
    for i in range(n):
        for kind, r in ev.get(i, []):
            if kind == "settle" or r["expiry"] < 0:
                cur = flat
            else:
                cur = {"strike": r["strike"], "expiry": r["expiry"], "contracts": r["contracts"]}
        out.append(cur)
    return out


@pytest.mark.parametrize("coin", [False, True], ids=["usd", "coin"])
def test_equity_changes_only_by_premium_fees_and_model_value(coin):
    n = 24 * 120
    p = gbm(n, seed=6, vol=0.9, drift=-1.0)
    iv = 0.6 + 0.3 * np.sin(np.arange(n) / 200.0) ** 2
    u = hourly("2022-01-03", p, iv)
    hold = np.ones((n, 4))
    hold[700:1300, 3] = 0.0          # column 3: signal off for 25 days (exit, flat, entry)
    s = PutSettings(settlement="coin" if coin else "usd", vol_source="iv", skew=0.15, slippage=0.05,
                    fee_rate=0.0003, delivery_fee_rate=0.00015, roll_dte=[0, 0, 5, 0],
                    roll_delta=[np.inf, 0.55, np.inf, np.inf], moneyness=[0.95, 0.95, 0.7, 0.95],
                    initial_capital=1.0 if coin else 10_000.0)
    res = simulate_puts(u, s, hold=hold)
    rolls, st = res.records["rolls"], res.records["settlements"]
    # guards: the path exercises every roll reason, in-the-money settlements and the 12.5 % fee cap
    assert set(rolls["reason"].tolist()) == {0, 1, 2, 3, 4, 5}
    assert (st["payoff"] > 0).sum() >= 2 and (st["fee"] > 0).sum() >= 2
    buys = rolls[rolls["expiry"] > 0]
    fill = buys["premium"] / buys["contracts"]
    assert (0.125 * fill < 0.0003 * (1.0 if coin else buys["price"])).any()

    def value(K, E, i):  # independent model value per contract, settlement currency (vectorized)
        T = (E - u.close_time[i]) / YEAR
        live = T > 0                      # expired puts are settled at intrinsic instead (NaN here)
        Tl = np.where(live, T, 1.0)
        v = black76_greeks(p[i], K, Tl, skewed_vol(iv[i], K, p[i], Tl, 0.15))["price"]
        return np.where(live, v / p[i] if coin else v, np.nan)

    bars = np.arange(1, n)
    for c in range(4):
        eq, val = res.series["equity"][:, c], res.series["option_value"][:, c]
        held = _held(res, c, n)
        K = np.array([h["strike"] for h in held])
        E = np.array([h["expiry"] for h in held], dtype=np.int64)
        N = np.array([h["contracts"] for h in held])
        assert np.allclose(val, N * value(K, E, np.arange(n)), rtol=1e-11, atol=1e-12)
        v_old_now = np.r_[np.nan, value(K[:-1], E[:-1], bars)]      # last bar's put, at this bar
        v_old_then = np.r_[np.nan, value(K[:-1], E[:-1], bars - 1)]  # ... at the last bar
        v_new_now = value(K, E, np.arange(n))
        rc, sc = rolls[rolls["col"] == c], st[st["col"] == c]
        ev = {int(b): k for k, b in enumerate(rc["bar"])}
        sv = {int(b): k for k, b in enumerate(sc["bar"])}
        for i in range(1, n):
            old = held[i - 1]
            unit = 1.0 if coin else p[i]     # Deribit fee base: 1 coin, or its USD price
            costs = 0.0
            if i in sv:      # settled at intrinsic, less the delivery fee
                x = sc["payoff_per_contract"][sv[i]]
                assert x == (max(old["strike"] - p[i], 0) / (p[i] if coin else 1.0))
                dfee = old["contracts"] * min(0.00015 * unit, 0.125 * x)
                assert sc["fee"][sv[i]] == pytest.approx(dfee, rel=1e-12, abs=0)
                costs += dfee
            elif i in ev and rc["sold_contracts"][ev[i]] > 0:   # sold at model value less slippage and fee
                r = rc[ev[i]]
                x = v_old_now[i]
                assert r["sold_contracts"] == old["contracts"]
                assert r["sale_proceeds"] == pytest.approx(old["contracts"] * x * 0.95, rel=1e-12)
                sale_fee = old["contracts"] * min(0.0003 * unit, 0.125 * x * 0.95)
                assert r["sale_fee"] == pytest.approx(sale_fee, rel=1e-11)
                costs += old["contracts"] * x * 0.05 + sale_fee
            else:
                x = v_old_now[i]
            if i in ev and rc["expiry"][ev[i]] > 0:              # a put bought at this close
                new = rc[ev[i]]
                fill = v_new_now[i] * 1.05
                assert new["premium"] == pytest.approx(new["contracts"] * fill, rel=1e-11)
                assert new["fee"] == pytest.approx(new["contracts"] * min(0.0003 * unit, 0.125 * fill), rel=1e-11)
                costs += new["premium"] - new["contracts"] * v_new_now[i] + new["fee"]
            expected = old["contracts"] * (x - v_old_then[i]) - costs
            assert eq[i] - eq[i - 1] == pytest.approx(expected, rel=1e-9, abs=1e-9 * eq[0])
        # accounting identity of the reported series
        ident = (res.initial_capital[c] + res.series["cum_received"][:, c] - res.series["premium_paid"][:, c]
                 - res.series["cum_fees"][:, c] + val)
        assert np.allclose(eq, ident, rtol=1e-12, atol=0)
        # worst case is the premium: no margin, no liquidation
        assert (eq >= res.initial_capital[c] - res.series["premium_paid"][:, c] - res.series["cum_fees"][:, c]).all()


def test_hold_signal_exit_and_entry_with_lag():
    n = 24 * 40
    u = hourly("2023-03-01", gbm(n, seed=21))
    sig = np.full(n, -1.0)            # a bearish signal as strategies emit it (-1 = hold puts)
    sig[300:500] = 0.0
    sig[500:520] = np.nan             # NaN keeps the previous state (off)
    res = simulate_puts(u, PutSettings(vol_source="iv"), hold=sig)
    r = res.events("rolls")
    assert r["reason"].tolist()[:3] == [0, 5, 4]
    assert r["bar"].tolist()[:3] == [1, 301, 521]              # lag 1: acts one bar after the signal
    off = slice(301, 521)
    assert (res.series["position"][off, 0] == 0).all() and np.isnan(res.series["strike"][off, 0]).all()
    assert np.ptp(res.series["equity"][off, 0]) == 0          # flat cash while off
    assert res.series["equity"][0, 0] == 10_000.0 and res.series["position"][0, 0] == 0
    with pytest.raises(InstrumentInputError, match="allow_lookahead=True"):
        simulate_puts(u, PutSettings(vol_source="iv"), hold=sig, hold_lag=0)   # acts on its own close
    same = simulate_puts(u, PutSettings(vol_source="iv"), hold=sig, hold_lag=0, allow_lookahead=True)
    assert same.events("rolls")["bar"].tolist()[:3] == [0, 300, 520]
    assert any("look-ahead" in note for note in same.meta["notes"])
    with pytest.raises(InstrumentInputError, match="hold has shape"):
        simulate_puts(u, PutSettings(vol_source="iv"), hold=np.ones(5))
    with pytest.raises(InstrumentInputError, match="hold_lag=-1"):
        simulate_puts(u, PutSettings(vol_source="iv"), hold=sig, hold_lag=-1)


def test_rising_market_loses_exactly_premium_and_fees():
    n = 24 * 70
    p = 20_000 * np.exp(np.linspace(0, 0.6, n))
    res = simulate_puts(hourly("2022-02-01", p), PutSettings(vol_source="iv"))
    st = res.records["settlements"]
    assert len(st) == 2 and (st["payoff"] == 0).all()
    i = int(st["bar"][-1])
    eq_before_new = res.series["equity"][i, 0] - res.series["option_value"][i, 0]
    paid = res.series["premium_paid"][i, 0] + res.series["cum_fees"][i, 0]
    r = res.records["rolls"][-1]
    assert eq_before_new + r["premium"] + r["fee"] == pytest.approx(10_000 - paid + r["premium"] + r["fee"], rel=1e-12)
    assert res.series["cum_received"][-1, 0] == 0.0


# --- coin settlement ------------------------------------------------------------------------------

def test_coin_settled_put_reproduces_deribit_example_payoff():
    row = next(r for r in V["deribit_inverse_options"]["rows"] if r["type"] == "put")  # K 300, delivery 200
    n = 24 * 20
    p = np.full(n, 334.0)                       # 0.9 x 334 = 300.6 -> strike 300 on a 1-USD grid
    exp = ms("2023-01-20 08:00")
    i_exp = (exp - ms("2023-01-05")) // H - 1
    p[i_exp - 48:] = np.linspace(334.0, row["delivery"], n - i_exp + 48)
    p[i_exp] = row["delivery"]
    u = hourly("2023-01-05", p)
    res = simulate_puts(u, PutSettings(settlement="coin", strike_step=1.0, **FLAT),
                        expiries=[exp, ms("2023-02-24 08:00")])
    assert res.currency == "BTC" and res.kind == "put"
    r0 = res.records["rolls"][0]
    assert r0["strike"] == row["strike"]
    st = res.records["settlements"][0]
    assert st["settle_price"] == row["delivery"]
    assert st["payoff_per_contract"] == row["payoff_btc"]
    # the coin premium is the USD model price over the forward (Deribit forward-space quote)
    T0 = (exp - u.close_time[0]) / YEAR
    usd = black76_greeks(334.0, 300.0, T0, 0.8)["price"]
    assert r0["premium"] / r0["contracts"] == pytest.approx(float(usd / 334.0), rel=1e-12)
    assert res.series["equity_usd"][5, 0] == pytest.approx(res.series["equity"][5, 0] * p[5], rel=1e-15)


def test_coin_account_delta_is_deribit_net_delta_plus_balance():
    n = 24 * 25
    p = gbm(n, seed=9, s0=40_000)
    u = hourly("2023-03-01", p)
    res = simulate_puts(u, PutSettings(settlement="coin", **FLAT))
    i = n - 10
    r = res.records["rolls"][-1]
    T = (r["expiry"] - u.close_time[i]) / YEAR
    g = black76_greeks(p[i], r["strike"], T, 0.8)
    net = r["contracts"] * (g["delta"] - g["price"] / p[i])
    assert res.series["delta"][i, 0] == pytest.approx(float(net), rel=1e-11)
    assert res.series["account_delta"][i, 0] == pytest.approx(res.series["equity"][i, 0] + float(net), rel=1e-11)
    # account delta = d(equity in USD)/dS, checked by bumping S in the valuation
    cash = res.series["equity"][i, 0] - res.series["option_value"][i, 0]
    usd = lambda S: S * (cash + r["contracts"] * black76_greeks(S, r["strike"], T, 0.8)["price"] / S)  # noqa: E731
    h = p[i] * 1e-5
    assert (usd(p[i] + h) - usd(p[i] - h)) / (2 * h) == pytest.approx(res.series["account_delta"][i, 0], rel=1e-6)


# --- strikes, sizes, rolls --------------------------------------------------------------------------

@pytest.mark.parametrize("s0, step", [(50_000.0, 1000.0), (2_000.0, 50.0), (1_200.0, 25.0), (20_000.0, 500.0)])
def test_moneyness_strike_on_automatic_grid(s0, step):
    res = simulate_puts(hourly("2023-03-01", np.full(24 * 10, s0)), PutSettings(**FLAT))
    K = res.records["rolls"]["strike"][0]
    assert K % step == 0 and K <= 0.9 * s0 < K + step


def test_delta_strike_is_closest_grid_strike():
    u = hourly("2023-03-01", np.full(24 * 10, 27_345.0))
    s = PutSettings(strike_mode="delta", target_delta=0.2, strike_step=250.0, vol_source="iv", skew=0.2)
    r = simulate_puts(u, s).records["rolls"][0]
    T = (r["expiry"] - u.close_time[0]) / YEAR
    ks = r["strike"] + 250.0 * np.array([-1.0, 0.0, 1.0])
    d = black76_greeks(27_345.0, ks, T, skewed_vol(0.8, ks, 27_345.0, T, 0.2))["delta"]
    err = np.abs(np.abs(d) - 0.2)
    assert r["strike"] % 250 == 0 and np.argmin(err) == 1
    assert r["delta"] == pytest.approx(d[1], rel=1e-12)


def _cash_before(res, k):
    r = res.records["rolls"][k]
    i, c = int(r["bar"]), int(r["col"])
    return res.series["equity"][i, c] - res.series["option_value"][i, c] + r["premium"] + r["fee"] \
        - r["sale_proceeds"] + r["sale_fee"]


def test_sizing_notional_and_budget():
    n = 24 * 70
    p = gbm(n, seed=2, s0=25_000)
    u = hourly("2022-09-01", p)
    res = simulate_puts(u, PutSettings(size_mode=["notional", "budget"], exposure=1.5, budget=0.02, vol_source="iv"))
    rolls = res.records["rolls"]
    for k in range(len(rolls)):
        r = rolls[k]
        cash = _cash_before(res, k)
        if r["col"] == 0:
            assert r["contracts"] * r["price"] == pytest.approx(1.5 * cash, rel=1e-12)
        else:
            assert r["premium"] + r["fee"] == pytest.approx(0.02 * cash, rel=1e-12)
    assert (rolls["col"] == 0).sum() == 3 and (rolls["col"] == 1).sum() == 3


def test_size_is_clipped_to_cash():
    res = simulate_puts(hourly("2023-03-01", np.full(24 * 10, 30_000.0), iv=1.5),
                        PutSettings(exposure=500.0, vol_source="iv"))
    r = res.records["rolls"][0]
    assert r["clipped"] == 1
    cash = res.series["equity"][0, 0] - res.series["option_value"][0, 0]
    assert abs(cash) < 1e-9 and r["premium"] + r["fee"] == pytest.approx(10_000.0, rel=1e-12)


def test_early_dte_roll_timing():
    n = 24 * 60
    u = hourly("2023-03-01", np.full(n, 30_000.0))
    res = simulate_puts(u, PutSettings(roll_dte=7, **FLAT))
    rolls = res.records["rolls"]
    first_exp = rolls["expiry"][0]
    early = rolls[rolls["reason"] == 3][0]
    i = int(early["bar"])
    assert (first_exp - u.close_time[i]) <= 7 * D < (first_exp - u.close_time[i - 1])
    assert early["expiry"] - u.close_time[i] > 7 * D
    assert len(res.records["settlements"]) == 0      # always rolled before expiry


def test_early_delta_roll_on_first_bar_beyond_threshold():
    n = 24 * 20
    p = np.r_[np.full(24 * 5, 30_000.0), np.linspace(30_000, 21_000, n - 24 * 5)]
    u = hourly("2023-03-01", p)
    res = simulate_puts(u, PutSettings(roll_delta=0.5, **FLAT))
    rolls = res.records["rolls"]
    first, early = rolls[0], rolls[rolls["reason"] == 2][0]
    i = int(early["bar"])
    T = lambda j: (first["expiry"] - u.close_time[j]) / YEAR  # noqa: E731
    d = lambda j: float(black76_greeks(p[j], first["strike"], T(j), 0.8)["delta"])  # noqa: E731
    assert abs(d(i)) >= 0.5 > abs(d(i - 1))
    assert abs(early["delta"]) < 0.5 and early["strike"] < first["strike"]


def test_grid_columns_are_independent_runs():
    n = 24 * 50
    u = hourly("2022-05-02", gbm(n, seed=4))
    grid = PutSettings(moneyness=[0.9, 0.8, 0.95], roll_dte=[0, 7, 3], size_mode=["notional", "budget", "notional"],
                       vol_source="iv")
    res = simulate_puts(u, grid)
    assert list(res.columns.names) == ["moneyness", "roll_dte", "size_mode"]
    for j, (m, d, sz) in enumerate([(0.9, 0, "notional"), (0.8, 7, "budget"), (0.95, 3, "notional")]):
        one = simulate_puts(u, PutSettings(moneyness=m, roll_dte=d, size_mode=sz, vol_source="iv"))
        for name in ("equity", "delta", "vega", "strike"):
            assert np.array_equal(res.series[name][:, j], one.series[name][:, 0], equal_nan=True)


def test_grid_helper_builds_cartesian_columns():
    from backtest.options import grid
    g = grid(moneyness=[0.9, 0.8], skew=[0.0, 0.1])
    assert g == {"moneyness": [0.9, 0.9, 0.8, 0.8], "skew": [0.0, 0.1, 0.0, 0.1]}
    res = simulate_puts(hourly("2023-03-01", np.full(100, 30_000.0)), PutSettings(vol_source="iv", **g))
    assert res.n_cols == 4 and list(res.columns.names) == ["moneyness", "skew"]
    assert res.columns[1] == (0.9, 0.1)
    assert res.records["rolls"]["strike"].tolist() == [27_000.0, 27_000.0, 24_000.0, 24_000.0]


def test_result_contract_and_conventions():
    n = 24 * 40
    u = hourly("2022-05-02", gbm(n, seed=8))
    res = simulate_puts(u, PutSettings(vol_source="iv"))
    assert res.kind == "put" and res.currency == "USDT"
    assert set(REQUIRED_SERIES) <= set(res.series)
    assert np.all(res.series["cum_funding"] == 0) and np.all(res.series["capital_added"] == 0)
    notional, eq = res.series["notional"][:, 0], res.series["equity"][:, 0]
    assert (notional < 0).all() and np.allclose(res.series["leverage"][:, 0], np.abs(notional) / eq, rtol=1e-14)
    assert np.allclose(notional, -res.series["position"][:, 0] * u.price[:, 0], rtol=1e-15)
    assert (res.series["delta_exposure"][:, 0] < 0).all() and (res.series["vega"][:, 0] > 0).all()
    assert (res.series["theta"][:, 0] < 0).all() and (res.series["gamma"][:, 0] > 0).all()
    assert res.events("rolls")["reason"].iloc[0] == 0


@pytest.mark.parametrize("coin", [False, True], ids=["usd", "coin"])
def test_position_greeks_units(coin):
    n = 24 * 20
    p = gbm(n, seed=12, s0=35_000)
    iv = np.full(n, 0.75)
    u = hourly("2023-04-03", p, iv)
    res = simulate_puts(u, PutSettings(vol_source="iv", skew=0.1, settlement="coin" if coin else "usd",
                                       carry=0.05, initial_capital=1.0 if coin else 10_000.0))
    r = res.records["rolls"][0]
    T = (r["expiry"] - u.close_time) / YEAR
    F = p * np.exp(0.05 * T)
    sig = skewed_vol(0.75, r["strike"], F, T, 0.1)
    # Greeks w.r.t. the perp mark S with F = S exp(bT): generalized Black-Scholes with carry b
    g = gbs_greeks(p, r["strike"], T, sig, b=0.05)
    conv = 1 / F if coin else 1.0
    n_ct = r["contracts"]
    s = res.series
    assert np.allclose(s["put_vol"][:, 0], sig, rtol=1e-13)
    assert np.allclose(s["option_value"][:, 0], n_ct * g["price"] * conv, rtol=1e-11)
    assert np.allclose(s["gamma"][:, 0], n_ct * g["gamma"], rtol=1e-11)
    assert np.allclose(s["vega"][:, 0], n_ct * g["vega"] * conv / 100, rtol=1e-11)     # per vol point
    assert np.allclose(s["theta"][:, 0], n_ct * g["theta"] * conv / 365, rtol=1e-11)   # per day
    d = n_ct * (g["delta"] - g["price"] * conv) if coin else n_ct * g["delta"]
    assert np.allclose(s["delta"][:, 0], d, rtol=1e-11)
    assert np.allclose(s["delta_exposure"][:, 0], d * p / s["equity_usd"][:, 0], rtol=1e-11)
    assert np.allclose(s["days_to_expiry"][:, 0], T * 365, rtol=1e-13)


# --- data shapes ----------------------------------------------------------------------------------

class FakeMarketData:
    """What the loader's MarketData exposes: a .frame with a UTC DatetimeIndex."""

    def __init__(self, frame: pd.DataFrame, symbol: str = "BTC/USDT:USDT") -> None:
        self.frame, self.symbol = frame, symbol


def _frame(n: int, with_iv: bool) -> pd.DataFrame:
    idx = pd.date_range("2023-01-02", periods=n, freq="h", tz="UTC")
    c = gbm(n, seed=1, s0=20_000)
    f = pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c, "mark_open": c * 1.001,
                      "mark_high": c * 1.011, "mark_low": c * 0.991, "mark_close": c * 1.001,
                      "funding_rate": np.where(np.arange(n) % 8 == 0, 1e-4, np.nan)}, index=idx)
    if with_iv:
        f["iv"] = 0.7
    return f


def test_marketdata_like_object_uses_mark_close_and_iv():
    f = _frame(24 * 30, with_iv=True)
    res = simulate_puts(FakeMarketData(f), PutSettings(vol_source="iv"))
    r = res.records["rolls"][0]
    assert r["price"] == f["mark_close"].iloc[0] and r["vol"] > 0.7        # skewed from iv 0.7
    assert res.series["atm_vol"][0, 0] == 0.7 and res.meta["price_source"].startswith("mark_close")
    coin = simulate_puts(FakeMarketData(f), PutSettings(settlement="coin", vol_source="iv"))
    assert coin.currency == "BTC"


def test_carry_from_funding_shifts_forward():
    f = _frame(24 * 30, with_iv=True)
    res = simulate_puts(f, PutSettings(vol_source="iv", carry_from_funding=[False, True]))
    r0, r1 = (res.records["rolls"][res.records["rolls"]["col"] == j][0] for j in (0, 1))
    T = (r1["expiry"] - (f.index[0].value // 1_000_000 + H)) / YEAR
    b = 1e-4 / (7 / 365)   # one print in the 7-day window so far, annualised
    assert r0["forward"] == r0["price"]
    assert r1["forward"] == pytest.approx(r1["price"] * math.exp(b * T), rel=1e-12)


def test_sample_data_monthly_rolls_settle_at_0800_last_friday():
    root = Path(__file__).resolve().parents[2] / "data" / "sample"
    o = pd.read_parquet(root / "binanceusdm/BTC_USDT_USDT/mark-1h.parquet")
    dv = pd.read_parquet(root / "deribit/BTC-DVOL/index-1h.parquet")
    o = o[(o.timestamp >= ms("2021-06-01")) & (o.timestamp < ms("2022-06-01"))]
    iv = pd.Series(dv.close.to_numpy() / 100, index=dv.timestamp.to_numpy()).reindex(o.timestamp.to_numpy())
    u = Underlying.from_arrays(o.timestamp.to_numpy(), o.close.to_numpy(), iv=iv.to_numpy())
    res = simulate_puts(u, PutSettings(vol_source=["iv", "auto"]))
    st = res.events("settlements")
    t = pd.to_datetime(u.close_time[st["bar"].to_numpy()], unit="ms", utc=True)
    assert (st["col"] == 0).sum() == (st["col"] == 1).sum() == 12      # Jun 2021 .. May 2022
    assert (t.hour == 8).all() and (t.day_of_week == 4).all()
    assert ((t + pd.Timedelta(days=7)).month != t.month).all()
    assert np.isfinite(res.series["equity"]).all() and (res.series["equity"] > 0).all()


# --- bad input ------------------------------------------------------------------------------------

def test_missing_iv_gap_after_start_names_the_bar():
    n = 24 * 20
    iv = np.full(n, 0.8)
    iv[200:300] = np.nan
    with pytest.raises(InstrumentInputError, match=r"volatility at bar 272 \(2023-03-12T09:00:00\+00:00 close\)"):
        simulate_puts(hourly("2023-03-01", np.full(n, 30_000.0), iv), PutSettings(vol_source="iv"))


@pytest.mark.parametrize("iv, msg", [(-0.5, "implied vol must be > 0"), (0.0, "implied vol must be > 0"),
                                     (80.0, "divide it by 100")])
def test_bad_iv_values(iv, msg):
    with pytest.raises(InstrumentInputError, match=msg):
        hourly("2023-03-01", np.full(100, 30_000.0), iv)


def test_iv_source_without_iv():
    u = Underlying.from_arrays(ms("2023-03-01") + H * np.arange(100), np.full(100, 1.0))
    with pytest.raises(InstrumentInputError, match="vol_source='iv' but the data has no implied-vol"):
        simulate_puts(u, PutSettings(vol_source="iv"))
    with pytest.raises(InstrumentInputError, match="no bar has a usable volatility"):
        simulate_puts(u, PutSettings(vol_source="ewma"))


def test_expiries_outside_the_data():
    u = hourly("2023-03-01", np.full(24 * 40, 30_000.0))
    with pytest.raises(InstrumentInputError, match="before the data start"):
        simulate_puts(u, PutSettings(vol_source="iv"), expiries=[ms("2023-02-24 08:00"), ms("2023-03-31 08:00")])
    with pytest.raises(InstrumentInputError, match="no expiry after 2023-03-08T01:00:00"):
        simulate_puts(u, PutSettings(vol_source="iv"), expiries=[ms("2023-03-03 08:00")])
    with pytest.raises(InstrumentInputError, match="the last expiry given is 2023-03-31T08:00"):
        simulate_puts(u, PutSettings(vol_source="iv"), expiries=[ms("2023-03-31 08:00")])


def test_strike_grid_without_strike():
    with pytest.raises(InstrumentInputError, match="strike_step=50000.0 yields no strike"):
        simulate_puts(hourly("2023-03-01", np.full(100, 30_000.0)), PutSettings(vol_source="iv", strike_step=50_000))


@pytest.mark.parametrize("kw, msg", [
    ({"moneyness": -0.9}, r"PutSettings.moneyness=-0.9 \(column 0\)"),
    ({"strike_mode": "delta", "target_delta": 1.5}, r"PutSettings.target_delta=1.5"),
    ({"budget": 2.0, "size_mode": "budget"}, r"PutSettings.budget=2.0"),
    ({"strike_step": 0.0}, r"PutSettings.strike_step=0.0"),
    ({"slippage": [0.0, 1.0]}, r"PutSettings.slippage=1.0 \(column 1\)"),
    ({"moneyness": [0.9, 0.8], "skew": [0.1, 0.2, 0.3]}, "skew has 3 values but moneyness has 2"),
    ({"settlement": "eur"}, "settlement='eur'"),
    ({"size_mode": "lots"}, "size_mode='lots' is not one of"),
    ({"strike_mode": "delta", "target_delta": 0.6, "roll_delta": 0.5}, "below roll_delta"),
])
def test_bad_settings(kw, msg):
    with pytest.raises(InstrumentInputError, match=msg):
        simulate_puts(hourly("2023-03-01", np.full(100, 30_000.0)), PutSettings(vol_source="iv", **kw))


def test_new_put_already_beyond_roll_delta():
    with pytest.raises(InstrumentInputError, match="already has delta -0.6"):
        simulate_puts(hourly("2023-03-01", np.full(100, 30_000.0)),
                      PutSettings(vol_source="iv", moneyness=1.1, roll_delta=0.5))


def test_bad_prices():
    p = np.full(100, 30_000.0)
    p[7] = np.nan
    with pytest.raises(InstrumentInputError, match="price at bar 7"):
        hourly("2023-03-01", p)
    with pytest.raises(InstrumentInputError, match="settlement='coin' needs one price path"):
        u = Underlying.from_arrays(ms("2023-03-01") + H * np.arange(100), np.full((100, 2), 3e4),
                                   iv=np.full(100, 0.5))
        simulate_puts(u, PutSettings(settlement="coin", vol_source="iv"))
