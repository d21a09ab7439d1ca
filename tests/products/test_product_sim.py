"""The leveraged-product simulator: FTX's table, exact path products, fee/funding recursion,
triggers, termination, a slow reference simulator on random bars, and the volatility decay on
simulated GBM paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.options import InstrumentInputError, Underlying
from backtest.products import ProductSettings, simulate_product
from backtest.result import REQUIRED_SERIES

H = 3_600_000
D = 86_400_000
V = json.loads((Path(__file__).parent / "vectors.json").read_text())
FTX = V["leveraged_tokens_ftx"]
PURE = dict(trigger=None, fee_per_day=0.0, include_funding=False)


def daily(closes, **kw) -> Underlying:
    return Underlying.from_arrays(np.arange(len(closes)) * D, closes, bar_ms=D, **kw)


def hourly_paths(n: int, k: int, seed: int, vol: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = 1 / (365 * 24)
    z = rng.normal(-vol**2 / 2 * dt, vol * math.sqrt(dt), (n - 1, k))
    return 20_000 * np.exp(np.vstack([np.zeros((1, k)), np.cumsum(z, axis=0)]))


# --- exact path products ----------------------------------------------------------------------

@pytest.mark.parametrize("k", range(3))
def test_ftx_table_reproduced(k):
    closes = FTX["rows"][k]["btc_daily_closes"]
    res = simulate_product(daily(closes), ProductSettings(leverage=[3, -3, -1], **PURE))
    ret = res.series["nav"][-1] - 1
    assert ret[0] == pytest.approx(FTX["rows"][k]["BULL"], abs=5e-4 if k else 5e-5)   # published +3x
    assert ret[1] == pytest.approx(FTX["derived_BEAR_minus3x"][k], abs=5e-5)
    assert ret[2] == pytest.approx(FTX["derived_minus1x"][k], abs=5e-5)


@pytest.mark.parametrize("L", [-1.0, -2.0, -3.0, 2.0])
def test_daily_reset_nav_is_path_product(L):
    n = 24 * 30 + 5
    p = hourly_paths(n, 1, seed=int(abs(L) * 10), vol=0.6)[:, 0]
    ts = pd.Timestamp("2023-01-01 00:00", tz="UTC").value // 1_000_000 + 7 * H + H * np.arange(n)  # starts 07:00
    res = simulate_product(Underlying.from_arrays(ts, p), ProductSettings(leverage=L, **PURE))
    nav = res.series["nav"][:, 0]
    close = ts + H
    reb = np.r_[0, np.flatnonzero(close % D == 0)]      # bar 0 and every close at 00:00 UTC
    expected = np.cumprod(np.r_[1.0, 1 + L * (p[reb[1:]] / p[reb[:-1]] - 1)])
    assert np.allclose(nav[reb], expected, rtol=1e-12, atol=0)
    # between resets NAV = NAV_reset * (1 + L * return since the reset)
    last = reb[np.searchsorted(reb, np.arange(n), side="right") - 1]
    within = expected[np.searchsorted(reb, last)] * (1 + L * (p / p[last] - 1))
    assert np.allclose(nav, within, rtol=1e-12, atol=0)
    ev = res.events("rebalances")
    assert list(ev["bar"]) == list(reb[1:]) and (ev["reason"] == 0).all()


def test_constant_leverage_product_is_bar_path_product():
    p = hourly_paths(500, 1, seed=3)[:, 0]
    u = Underlying.from_arrays(H * np.arange(500), p)
    res = simulate_product(u, ProductSettings(leverage=-2, reset="bar", **PURE))
    assert np.allclose(res.series["nav"][:, 0], np.cumprod(np.r_[1.0, 1 - 2 * (p[1:] / p[:-1] - 1)]), rtol=1e-12)
    assert len(res.records["rebalances"]) == 0


def test_fee_and_funding_recursion():
    rng = np.random.default_rng(5)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, 60)))
    fr = rng.normal(1e-4, 3e-4, 60)
    fr[0] = np.nan
    fee = 0.0003
    res = simulate_product(daily(closes, funding_rate=fr), ProductSettings(leverage=-3, trigger=None, fee_per_day=fee))
    nav = [1.0]
    for t in range(1, 60):
        r = closes[t] / closes[t - 1] - 1
        nav.append((nav[-1] * (1 - 3 * r) + 3 * nav[-1] * fr[t]) * (1 - fee))
    assert np.allclose(res.series["nav"][:, 0], nav, rtol=1e-12)
    # -3x receives 3 x NAV x rate
    got = res.series["cum_funding"][:, 0]
    assert np.allclose(np.diff(got), 10_000 * 3 * np.array(nav[:-1]) * fr[1:], rtol=1e-12)
    fees = 10_000 * fee * np.array(nav[1:]) / (1 - fee)
    assert np.allclose(np.diff(res.series["cum_fees"][:, 0]), fees, rtol=1e-12)


# --- triggers and termination ------------------------------------------------------------------

def test_intrabar_trigger_minus3x_at_ftx_level():
    # -3x, rebalanced at 100; the next bar trades up to 110 and closes at 110: the trigger at
    # |L'| = 4 fires at +6.67 % (FTX's BEAR level), NAV 1 - 3/15 = 0.8; then 106.67 -> 110
    u = Underlying.from_arrays([0, H], [100.0, 110.0], high=[100.0, 110.0], low=[100.0, 100.0])
    res = simulate_product(u, ProductSettings(leverage=-3, fee_per_day=0.0, include_funding=False))
    rec = res.records["rebalances"]
    assert len(rec) == 1 and rec["reason"][0] == 1
    assert rec["price"][0] == pytest.approx(100 * 16 / 15, rel=1e-14)
    assert rec["leverage_before"][0] == pytest.approx(-4.0, rel=1e-13)
    assert rec["nav"][0] == pytest.approx(0.8, rel=1e-13)
    assert res.series["nav"][1, 0] == pytest.approx(0.8 * (1 - 3 * (110 * 15 / 1600 - 1)), rel=1e-13)
    assert res.series["nav"][1, 0] == pytest.approx(0.725, rel=1e-13)
    assert res.series["effective_leverage"][1, 0] == pytest.approx(-3 * (110 / (1600 / 15)) / (0.725 / 0.8), rel=1e-12)


def test_funding_at_the_open_past_the_trigger_rebalances_at_the_open():
    # -3x at 100; bar 1 closes at 106.6 (just under the 106.67 trigger), bar 2 opens with a
    # funding print of -1 % that the short pays: NAV 0.802 - 0.03198 = 0.77002, so |L'| is already
    # 3.198 / 0.77002 = 4.153 > 4 at the open -> rebalance at the open price 106.6
    u = Underlying.from_arrays([0, H, 2 * H], [100.0, 106.6, 106.6], high=[100.0, 106.6, 106.6],
                               low=[100.0, 100.0, 106.6], funding_rate=[np.nan, np.nan, -0.01])
    res = simulate_product(u, ProductSettings(leverage=-3, fee_per_day=0.0))
    rec = res.records["rebalances"]
    assert len(rec) == 1 and rec["bar"][0] == 2 and rec["reason"][0] == 1
    assert rec["price"][0] == 106.6
    assert rec["leverage_before"][0] == pytest.approx(-3 * 1.066 / (0.802 - 0.03198), rel=1e-12)
    assert res.series["effective_leverage"][2, 0] == pytest.approx(-3.0, rel=1e-12)


def test_trigger_checked_at_close_without_high_low():
    u = Underlying.from_arrays([0, H, 2 * H], [100.0, 108.0, 108.0])
    res = simulate_product(u, ProductSettings(leverage=-3, fee_per_day=0.0, include_funding=False))
    rec = res.records["rebalances"][0]
    assert rec["bar"] == 1 and rec["price"] == 108.0
    assert rec["leverage_before"] == pytest.approx(-3 * 1.08 / (1 - 3 * 0.08), rel=1e-13)
    assert res.series["effective_leverage"][1, 0] == pytest.approx(-3.0, rel=1e-13)


def test_nav_reaching_zero_terminates():
    u = Underlying.from_arrays(np.arange(4) * D, [100.0, 140.0, 90.0, 80.0], bar_ms=D)
    res = simulate_product(u, ProductSettings(leverage=-3, **PURE))
    rec = res.records["rebalances"]
    assert rec["reason"].tolist() == [2] and rec["bar"][0] == 1
    assert rec["price"][0] == pytest.approx(100 * (1 + 1 / 3), rel=1e-13)
    assert (res.series["equity"][1:, 0] == 0).all() and (res.series["position"][1:, 0] == 0).all()
    assert (res.series["leverage"][1:, 0] == 0).all()


def test_result_contract():
    n = 24 * 10
    p = hourly_paths(n, 1, seed=1)[:, 0]
    fr = np.where(np.arange(n) % 8 == 0, 1e-4, np.nan)
    res = simulate_product(Underlying.from_arrays(H * np.arange(n), p, funding_rate=fr),
                           ProductSettings(leverage=[-1, -3], investment=[1000, 5000]))
    assert res.kind == "inverse_product" and res.currency == "USDT" and set(REQUIRED_SERIES) <= set(res.series)
    s = res.series
    assert np.allclose(s["equity"], np.array([1000, 5000]) * s["nav"], rtol=1e-15)
    assert np.allclose(s["notional"], s["effective_leverage"] * s["equity"], rtol=1e-12)
    assert np.allclose(s["leverage"], np.abs(s["notional"]) / s["equity"], rtol=1e-12)
    assert (s["notional"] < 0).all() and (s["position"] == [1000, 5000]).all()
    assert (s["capital_added"] == 0).all() and (np.diff(s["cum_funding"], axis=0) > 0).any()
    assert np.allclose(s["ideal_nav"][:, 0], 1 - (p / p[0] - 1), rtol=1e-14)
    assert res.initial_capital.tolist() == [1000.0, 5000.0]


def test_marketdata_like_frame_uses_mark_extremes_and_funding():
    n = 48
    idx = pd.date_range("2023-01-01", periods=n, freq="h", tz="UTC")
    c = np.full(n, 100.0)
    c[10:] = 110.0
    f = pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "mark_open": c, "mark_high": c * 1.0,
                      "mark_low": c, "mark_close": c, "funding_rate": np.nan}, index=idx)
    f.loc[idx[5], "mark_high"] = 107.0      # only the mark touches the -3x trigger level (106.67)
    f.loc[idx[8], "funding_rate"] = 1e-3

    class MD:
        frame = f

    res = simulate_product(MD(), ProductSettings(leverage=-3, fee_per_day=0.0))
    rec = res.records["rebalances"]
    assert rec["bar"][0] == 5 and rec["price"][0] == pytest.approx(100 * 16 / 15)
    assert res.series["cum_funding"][8, 0] > 0 and res.meta["trigger_check"].startswith("extreme")


# --- slow reference simulator ------------------------------------------------------------------

def reference(close_time, P, Hi, Lo, fr, L, trig, reset, hour, fee, cost, use_hl):
    """Plain loop over the documented rules; trigger prices found by bisection."""
    n = len(P)
    c, q = 1.0 - L, L / P[0]
    thr = trig * abs(L)
    navs, recs, last_fee, alive = [1.0], [], close_time[0], True
    day = lambda t: pd.Timestamp(int(t - hour * H), unit="ms").floor("D")  # noqa: E731
    lev = lambda c, q, x: q * x / (c + q * x)  # noqa: E731
    for i in range(1, n):
        if not alive:
            navs.append(0.0)
            continue
        if not np.isnan(fr[i]):
            c += -q * P[i - 1] * fr[i]
        X = (Hi[i] if L < 1 else Lo[i]) if use_hl else P[i]
        while use_hl and np.isfinite(thr) and L not in (0.0, 1.0):
            if abs(lev(c, q, P[i - 1])) >= thr and c + q * P[i - 1] > 0:
                ps = P[i - 1]
            elif c + q * X > 0 and abs(lev(c, q, X)) >= thr:
                lo, hi = P[i - 1], X
                for _ in range(200):
                    mid = 0.5 * (lo + hi)
                    if abs(lev(c, q, mid)) >= thr:
                        hi = mid
                    else:
                        lo = mid
                ps = hi
            else:
                break
            nav = c + q * ps
            qn = L * nav / ps
            k = cost * abs(qn - q) * ps
            recs.append((i, 1, ps))
            c, q = nav - k - qn * ps, qn
        if c + q * X <= 0:
            recs.append((i, 2, -c / q))
            alive = False
            navs.append(0.0)
            continue
        nav = c + q * P[i]
        is_day = day(close_time[i]) > day(close_time[i - 1])
        if is_day:
            m = nav * fee * (close_time[i] - last_fee) / D
            c, nav, last_fee = c - m, nav - m, close_time[i]
        why = None
        if reset == "bar":
            why = 99
        elif is_day:
            why = 0
        elif not use_hl and np.isfinite(thr) and abs(q * P[i] / nav) >= thr:
            why = 1
        if why is not None:
            qn = L * nav / P[i]
            k = cost * abs(qn - q) * P[i]
            if why != 99:
                recs.append((i, why, P[i]))
            c, q = nav - k - qn * P[i], qn
        navs.append(c + q * P[i])
    return np.array(navs), recs


# (L, trigger ratio, reset, check along the bar): every branch of the rebalance rules
CASES = [(-3, 4 / 3, "daily", True), (-3, 4 / 3, "daily", False), (-2, 1.2, "daily", True), (-1, 1.2, "daily", False),
         (3, 4 / 3, "daily", True), (2, 1.2, "bar", True), (-3, np.inf, "daily", True), (-3, np.inf, "bar", False),
         (0.5, 1.2, "daily", True), (3, np.inf, "daily", False), (-2, 4 / 3, "bar", True), (-1, 1.2, "daily", True),
         (2, 4 / 3, "daily", False), (-3, 1.2, "daily", True), (3, 1.2, "bar", False), (-2, np.inf, "daily", True)]


def _random_case(seed: int):
    rng = np.random.default_rng(100 + seed)
    n = 24 * 12
    ts = int(pd.Timestamp("2023-05-01", tz="UTC").value // 1_000_000) + H * np.arange(n) + H * int(rng.integers(24))
    P = 1000 * np.exp(np.cumsum(rng.standard_t(3, n) * (0.04 if seed in (6, 7, 9) else 0.02)))
    op = np.r_[P[0], P[:-1]]
    Hi = np.maximum(op, P) * (1 + np.abs(rng.normal(0, 0.015, n)))
    Lo = np.minimum(op, P) * (1 - np.abs(rng.normal(0, 0.015, n)))
    fr = np.where(rng.random(n) < 0.15, rng.normal(0, 2e-3, n), np.nan)
    L, trig, reset, use_hl = CASES[seed]
    args = dict(L=float(L), trig=float(trig), reset=reset, hour=float(rng.integers(0, 24)),
                fee=float(rng.uniform(0, 0.01)), cost=float(rng.uniform(0, 0.002)), use_hl=use_hl)
    u = Underlying.from_arrays(ts, P, high=Hi, low=Lo, funding_rate=fr)
    settings = ProductSettings(leverage=L, trigger=None if np.isinf(trig) else trig, reset=reset,
                               rebalance_hour=args["hour"], fee_per_day=args["fee"], trade_cost=args["cost"],
                               trigger_check="extreme" if use_hl else "close")
    return u, settings, args, (P, Hi, Lo, fr)


SEEDS = range(len(CASES))


@pytest.mark.parametrize("seed", SEEDS)
def test_kernel_matches_reference_on_random_bars(seed):
    u, settings, a, (P, Hi, Lo, fr) = _random_case(seed)
    res = simulate_product(u, settings)
    nav, recs = reference(u.close_time, P, Hi, Lo, fr, a["L"], a["trig"], a["reset"], a["hour"], a["fee"],
                          a["cost"], a["use_hl"])
    assert np.allclose(res.series["nav"][:, 0], nav, rtol=1e-9, atol=1e-12)
    got = res.records["rebalances"]
    assert [(int(b), int(r)) for b, r in zip(got["bar"], got["reason"])] == [(b, r) for b, r, _ in recs]
    assert np.allclose(got["price"], [p for _, _, p in recs], rtol=1e-9)


def test_random_cases_exercise_every_rebalance_path():
    """Guard for the test above: its cases must include intrabar triggers, close triggers,
    daily resets, terminations, funding and both reset modes."""
    seen = set()
    for seed in SEEDS:
        u, settings, a, _ = _random_case(seed)
        res = simulate_product(u, settings)
        for r in set(res.records["rebalances"]["reason"].tolist()):
            seen.add((r, a["use_hl"]))
        seen.add(a["reset"])
        if np.any(res.series["cum_funding"][:, 0] != 0):
            seen.add("funding")
    assert {(0, True), (1, True), (1, False), "daily", "bar", "funding"} <= seen
    assert any(k[0] == 2 for k in seen if isinstance(k, tuple)), seen


# --- volatility decay on GBM -------------------------------------------------------------------

@pytest.mark.parametrize("L", [-1.0, -2.0, -3.0])
def test_decay_of_frequently_rebalanced_product_matches_closed_form(L):
    sigma, n, k = 0.8, 24 * 60 + 1, 300
    p = hourly_paths(n, k, seed=int(-L), vol=sigma)
    u = Underlying.from_arrays(H * np.arange(n), p)
    res = simulate_product(u, ProductSettings(leverage=L, reset="bar", **PURE))
    d = res.series["log_decay"][-1]
    expected = -(L * L - L) / 2 * sigma**2 * (n - 1) / (365 * 24)
    se = d.std(ddof=1) / math.sqrt(k)
    assert abs(d.mean() - expected) < 4 * se, (d.mean(), expected, se)
    assert 4 * se < 0.02 * abs(expected)          # the test is sharp enough to see a wrong coefficient


def _exact_step_drag(L: float, s: float) -> float:
    """E[ln(1 + L r) - L ln(1 + r)] for one GBM step, ln(1 + r) ~ N(-s^2/2, s^2): trapezoid rule
    over +-6 standard deviations (the mass beyond is 2e-9)."""
    z = np.linspace(-6.0, 6.0, 20_001)
    lr = -s * s / 2 + s * z
    f = (np.log1p(L * np.expm1(lr)) - L * lr) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(z)))


@pytest.mark.parametrize("L", [-1.0, -2.0, -3.0])
def test_daily_reset_decay_on_gbm(L):
    sigma, days, k = 0.8, 365, 1000
    rng = np.random.default_rng(40 + int(-L))
    s = sigma / math.sqrt(365)
    z = rng.normal(-s * s / 2, s, (days, k))
    p = 100 * np.exp(np.vstack([np.zeros((1, k)), np.cumsum(z, axis=0)]))
    u = Underlying.from_arrays(np.arange(days + 1) * D, p, bar_ms=D)
    res = simulate_product(u, ProductSettings(leverage=L, **PURE))
    d = res.series["log_decay"][-1]
    se = d.std(ddof=1) / math.sqrt(k)
    exact = days * _exact_step_drag(L, s)
    closed = -(L * L - L) / 2 * sigma**2
    assert abs(d.mean() - exact) < 4 * se, (d.mean(), exact, se)
    # the closed form is the continuous limit: within 3 % of the daily-step expectation here
    assert abs(closed / exact - 1) < 0.03
    # per path, the realised-variance estimate tracks the realised decay closely
    est = res.series["log_decay_estimate"][-1]
    assert np.corrcoef(d, est)[0, 1] > 0.95


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, msg", [
    ({"leverage": 0}, r"ProductSettings.leverage=0.0 \(column 0\)"),
    ({"trigger": 1.0}, r"ProductSettings.trigger=1.0"),
    ({"rebalance_hour": 24}, r"ProductSettings.rebalance_hour=24.0"),
    ({"fee_per_day": -0.001}, r"ProductSettings.fee_per_day=-0.001"),
    ({"investment": [100, 0]}, r"ProductSettings.investment=0.0 \(column 1\)"),
    ({"trigger_check": "open"}, "trigger_check='open'"),
    ({"reset": "weekly"}, "reset='weekly' is not one of"),
    ({"leverage": [-1, -2], "fee_per_day": [0, 0, 0]}, "fee_per_day has 3 values but leverage has 2"),
])
def test_bad_settings(kw, msg):
    with pytest.raises(InstrumentInputError, match=msg):
        simulate_product(daily([100.0, 101.0, 102.0]), ProductSettings(**kw))


def test_bad_data():
    with pytest.raises(InstrumentInputError, match="do not bracket the close"):
        Underlying.from_arrays([0, H], [100.0, 110.0], high=[100.0, 105.0], low=[99.0, 100.0])
    with pytest.raises(InstrumentInputError, match="not strictly increasing at bar 2"):
        Underlying.from_arrays([0, H, H], [1.0, 2.0, 3.0])
    with pytest.raises(InstrumentInputError, match="price has 3 path columns but the settings give 2"):
        simulate_product(Underlying.from_arrays([0, H], np.ones((2, 3))), ProductSettings(leverage=[-1, -2]))
