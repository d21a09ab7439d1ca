"""Black-76 / generalized Black-Scholes against published library values (py_vollib doctests and
test data, QuantLib's Haug table), parity, the scalar kernel, skew, fees and inverse options."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from backtest.options import (
    InstrumentInputError, black76, black76_greeks, bsm_greeks, gbs_greeks, inverse_net_delta,
    inverse_payoff, inverse_price, option_fee, parity_gap, skewed_vol,
)
from backtest.options.nb import gbs_nb, skewed_vol_nb

V = json.loads((Path(__file__).parent / "vectors.json").read_text())


def test_py_vollib_black_scholes_prices():
    v = V["py_vollib_bs"]
    g = lambda call: gbs_greeks(v["S"], v["K"], v["t"], v["sigma"], r=v["r"], b=v["r"], is_call=call)  # noqa: E731
    assert abs(g(True)["price"] - v["call"]) < 1e-9
    assert abs(g(False)["price"] - v["put"]) < 1e-9


@pytest.mark.parametrize("row", V["py_vollib_black"]["rows"])
def test_py_vollib_black_call(row):
    assert abs(black76(row["F"], row["K"], row["t"], row["sigma"], r=row["r"], is_call=True) - row["call"]) < 1e-12


def test_py_vollib_normalised_black():
    v = V["py_vollib_normalised_black"]
    scale = math.sqrt(v["F"] * v["K"])
    assert abs(black76(v["F"], v["K"], v["t"], v["sigma"], is_call=True) / scale - v["call"]) < 1e-14
    assert abs(black76(v["F"], v["K"], v["t"], v["sigma"]) / scale - v["put"]) < 1e-14


def test_py_vollib_bsm_put():
    v = V["py_vollib_bsm"]
    p = bsm_greeks(v["S"], v["K"], v["t"], v["sigma"], r=v["r"], q=v["q"])["price"]
    assert abs(p - v["put"]) < v["tol"]


def test_py_vollib_hull_greeks():
    v = V["py_vollib_bs_greeks_hull"]
    c = gbs_greeks(v["S"], v["K"], v["t"], v["sigma"], r=v["r"], b=v["r"], is_call=True)
    p = gbs_greeks(v["S"], v["K"], v["t"], v["sigma"], r=v["r"], b=v["r"], is_call=False)
    assert abs(c["delta"] - v["call_delta"]) < 1e-11
    assert abs(c["theta"] - v["call_theta_annual"]) < 1e-9
    assert abs(p["theta"] - v["put_theta_annual"]) < 1e-9
    assert abs(c["gamma"] - v["gamma"]) < 1e-12
    assert abs(c["vega"] / 100 - v["vega_per_pct"]) < 1e-11
    assert abs(p["gamma"] - c["gamma"]) < 1e-15 and abs(p["vega"] - c["vega"]) < 1e-12


def test_py_vollib_black_greeks():
    v = V["py_vollib_black_greeks"]
    c = black76_greeks(v["F"], v["K"], v["t"], v["sigma"], r=v["r"], is_call=True)
    p = black76_greeks(v["F"], v["K"], v["t"], v["sigma"], r=v["r"], is_call=False)
    assert abs(c["delta"] - v["call_delta"]) < 1e-14
    assert abs(c["theta"] / 365 - v["call_theta_day"]) < 1e-13
    assert abs(p["theta"] / 365 - v["put_theta_day"]) < 1e-13
    assert abs(c["gamma"] - v["gamma"]) < 1e-12
    assert abs(c["vega"] / 100 - v["vega_per_pct"]) < 1e-11


@pytest.mark.parametrize("row", V["py_vollib_test_data"]["rows"], ids=lambda r: f"S{r['S']}-t{r['t']}-v{r['v']}")
def test_py_vollib_test_data_grid(row):
    K, r = V["py_vollib_test_data"]["K"], V["py_vollib_test_data"]["r"]
    p = gbs_greeks(row["S"], K, row["t"], row["v"], r=r, b=r, is_call=False)
    # published to 10 significant digits
    assert p["price"] == pytest.approx(row["put"], rel=1e-8)
    assert p["delta"] == pytest.approx(row["put_delta"], rel=1e-8)
    assert p["gamma"] == pytest.approx(row["gamma"], rel=1e-6)
    assert p["theta"] == pytest.approx(row["put_theta"], rel=1e-8)
    assert p["vega"] == pytest.approx(row["vega"], rel=1e-8)
    if "call" in row:
        c = gbs_greeks(row["S"], K, row["t"], row["v"], r=r, b=r, is_call=True)
        assert c["price"] == pytest.approx(row["call"], rel=1e-8)


@pytest.mark.parametrize("row", V["quantlib_haug_prices"]["rows"], ids=lambda r: f"{r[0]}-K{r[1]}-S{r[2]}")
def test_quantlib_haug_prices(row):
    kind, K, S, q, r, t, sigma, value = row
    p = bsm_greeks(S, K, t, sigma, r=r, q=q, is_call=kind == "call")["price"]
    assert abs(p - value) < V["quantlib_haug_prices"]["tol"]


def test_quantlib_haug_greeks():
    g = V["quantlib_haug_greeks"]
    tol = g["tol"]
    d = g["delta"]
    for call, key in ((True, "call"), (False, "put")):
        x = bsm_greeks(d["S"], d["K"], d["t"], d["sigma"], r=d["r"], q=d["q"], is_call=call)
        assert abs(x["delta"] - d[key]) < tol
    gv = g["gamma_vega"]
    x = bsm_greeks(gv["S"], gv["K"], gv["t"], gv["sigma"], r=gv["r"], q=gv["q"], is_call=True)
    assert abs(x["gamma"] - gv["gamma"]) < tol and abs(x["vega"] - gv["vega"]) < tol
    th = g["theta"]
    x = bsm_greeks(th["S"], th["K"], th["t"], th["sigma"], r=th["r"], q=th["q"])
    assert abs(x["theta"] - th["put_theta"]) < tol
    assert abs(x["theta"] / 365 - th["put_theta_day"]) < tol


def test_black76_is_bsm_with_q_equal_r():
    # Haug/QuantLib note: the (19, 19, q = r = 0.10) row is Black-76 with F = 19
    a = black76(19, 19, 0.75, 0.28, r=0.10)
    b = bsm_greeks(19, 19, 0.75, 0.28, r=0.10, q=0.10)["price"]
    assert abs(a - b) < 1e-15 and abs(a - 1.7011) < 1e-4


def test_put_call_parity_random():
    rng = np.random.default_rng(7)
    F = rng.uniform(100, 100_000, 2000)
    K = F * rng.uniform(0.3, 2.0, 2000)
    T = rng.uniform(1 / 365, 2, 2000)
    s = rng.uniform(0.05, 3.0, 2000)
    r = rng.uniform(-0.02, 0.1, 2000)
    c = black76(F, K, T, s, r=r, is_call=True)
    p = black76(F, K, T, s, r=r)
    gap = parity_gap(c, p, F, K, T, r=r)
    assert np.max(np.abs(gap) / F) < 1e-12
    # coin (forward-space) parity: c - p = 1 - K/F, exact to 1e-12 in coin units
    ci, pi = inverse_price(F, K, T, s, is_call=True), inverse_price(F, K, T, s)
    assert np.max(np.abs(ci - pi - (1 - K / F))) < 1e-12
    # deltas: call - put = discount factor
    gc, gp = black76_greeks(F, K, T, s, r=r, is_call=True), black76_greeks(F, K, T, s, r=r)
    assert np.max(np.abs(gc["delta"] - gp["delta"] - np.exp(-r * T))) < 1e-12


def test_numba_kernel_matches_numpy():
    rng = np.random.default_rng(11)
    for _ in range(300):
        S, K = rng.uniform(10, 90_000), rng.uniform(10, 90_000)
        T, sig = rng.uniform(1e-3, 2), rng.uniform(0.05, 3)
        r, b = rng.uniform(-0.05, 0.1), rng.uniform(-0.5, 0.5)
        call = bool(rng.integers(2))
        ref = gbs_greeks(S, K, T, sig, r=r, b=b, is_call=call)
        got = gbs_nb(call, S, K, T, sig, r, b)
        for name, x in zip(("price", "delta", "gamma", "vega", "theta"), got):
            assert x == pytest.approx(float(ref[name]), rel=1e-11, abs=1e-12 * S), name


def test_greeks_match_finite_differences():
    S, K, T, s, r, b = 30_000.0, 27_000.0, 0.1, 0.9, 0.01, 0.05
    f = lambda **kw: gbs_greeks(**({"S": S, "K": K, "T": T, "sigma": s, "r": r, "b": b} | kw))["price"]  # noqa: E731
    g = gbs_greeks(S, K, T, s, r=r, b=b)
    h = 1e-4 * S
    assert (f(S=S + h) - f(S=S - h)) / (2 * h) == pytest.approx(g["delta"], rel=1e-6)
    assert (f(S=S + h) - 2 * f() + f(S=S - h)) / h**2 == pytest.approx(g["gamma"], rel=1e-4)
    assert (f(sigma=s + 1e-5) - f(sigma=s - 1e-5)) / 2e-5 == pytest.approx(g["vega"], rel=1e-6)
    # theta = dV/dt = -dV/dT
    assert -(f(T=T + 1e-6) - f(T=T - 1e-6)) / 2e-6 == pytest.approx(g["theta"], rel=1e-5)


def test_inverse_worked_example():
    v = V["inverse_worked_example"]
    T = v["T_days"] / 365
    g = black76_greeks(v["F"], v["K"], T, v["sigma"])
    assert abs(g["price"] - v["put_usd"]) < 0.005
    assert abs(inverse_price(v["F"], v["K"], T, v["sigma"]) - v["put_btc"]) < 5e-7
    assert abs(g["delta"] - v["delta_bs"]) < 5e-6
    assert abs(inverse_net_delta(v["F"], v["K"], T, v["sigma"]) - v["delta_net"]) < 5e-6
    assert abs(g["gamma"] - v["gamma"]) < 5e-10
    assert abs(g["vega"] / 100 - v["vega_per_pt"]) < 0.005
    assert abs(g["theta"] / 365 - v["theta_per_day"]) < 0.005


@pytest.mark.parametrize("row", V["deribit_inverse_options"]["rows"], ids=lambda r: f"{r['type']}-K{r['strike']}")
def test_deribit_inverse_payoff_examples(row):
    pay = inverse_payoff(row["strike"], row["delivery"], is_call=row["type"] == "call")
    assert abs(pay - row["payoff_btc"]) < 1e-15
    assert abs(pay - row["premium_btc"] - row["buyer_profit_btc"]) < 1e-15


def test_deribit_fee_cap():
    row = V["deribit_fee"]["rows"][0]
    assert option_fee(row["premium_btc"]) == pytest.approx(row["fee_btc"], rel=1e-12)
    assert option_fee(0.01) == pytest.approx(0.0003, rel=1e-12)   # cap not binding
    # USD book: 0.0003 x index vs 12.5 % of a USD premium
    assert option_fee(2000.0, 50_000.0) == pytest.approx(15.0, rel=1e-12)
    assert option_fee(40.0, 50_000.0) == pytest.approx(5.0, rel=1e-12)


def test_skew_research_number_and_flat_call_wing():
    # one-month 10 %-OTM put: m = ln(0.9)/sqrt(30/365) = -0.3675 -> +3.7 % relative at s = 0.10
    v = skewed_vol(0.8, 45_000, 50_000, 30 / 365, 0.10)
    assert v / 0.8 - 1 == pytest.approx(0.1 * -math.log(0.9) / math.sqrt(30 / 365), rel=1e-14)
    assert round(float(v / 0.8 - 1), 3) == 0.037
    assert skewed_vol(0.8, 55_000, 50_000, 30 / 365, 0.25) == 0.8
    assert skewed_vol_nb(0.8, 45_000.0, 50_000.0, 30 / 365, 0.10) == pytest.approx(float(v), rel=1e-15)


def test_expiry_value_is_intrinsic():
    g = black76_greeks([90.0, 110.0], 100.0, 0.0, 0.5)
    assert list(g["price"]) == [10.0, 0.0] and list(g["delta"]) == [-1.0, 0.0]


@pytest.mark.parametrize("kw, word", [
    ({"sigma": 0.0}, "volatility sigma"),
    ({"sigma": -0.2}, "volatility sigma"),
    ({"sigma": np.nan}, "volatility sigma"),
    ({"T": -0.1}, "time to expiry"),
    ({"K": 0.0}, "strike"),
    ({"F": -1.0}, "underlying/forward price"),
])
def test_bad_pricing_inputs_name_the_value(kw, word):
    args = {"F": 100.0, "K": 90.0, "T": 0.5, "sigma": 0.3} | kw
    with pytest.raises(InstrumentInputError, match=word):
        black76(**args)


def test_bad_vol_in_array_names_index():
    with pytest.raises(InstrumentInputError, match=r"index \(2,\) is 0.0"):
        black76(100.0, 90.0, 0.5, [0.3, 0.4, 0.0])
