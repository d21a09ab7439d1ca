"""Each leverage policy against its formula on hand-made series; expected values are computed
here from first principles (statistics module, explicit sums, exchange worked examples), not
from the library's code."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from backtest.market import MarketSpec
from strategies.policies import (CPPI, Const, Drawdown, Kelly, LiqCap, PolicyError, VolTarget, expand, make,
                                 min_of, names, parse)

NAN = np.nan
LOGR = [0.1, -0.2, 0.05, 0.0, 0.1]  # log returns of bars 1..5
CLOSES = list(100.0 * np.exp(np.cumsum([0.0] + LOGR)))


def test_const(make_bars):
    np.testing.assert_array_equal(Const(leverage=3).compute(make_bars([1.0, 2.0, 3.0])), [3.0, 3.0, 3.0])


@pytest.mark.parametrize("bar_hours", [24.0, 1.0])
def test_voltarget_rolling_window(make_bars, bar_hours):
    frame = make_bars(CLOSES, bar_hours=bar_hours)
    pol = VolTarget(target_vol=0.5, max_leverage=3, estimator="rolling", window_days=3 * bar_hours / 24)
    bars_per_year = 365 * 24 / bar_hours
    expected = [0.0, 0.0, 0.0]  # bars 0-2: fewer than 3 returns
    for t in (3, 4, 5):
        sd = statistics.stdev(LOGR[t - 3: t])
        expected.append(min(3.0, 0.5 / (sd * math.sqrt(bars_per_year))))
    np.testing.assert_allclose(pol.compute(frame), expected, rtol=1e-9)


def test_voltarget_ewma(make_bars):
    frame = make_bars(CLOSES)
    pol = VolTarget(target_vol=0.5, halflife_days=1, warmup_days=0)
    expected = [0.0]
    for t in range(1, 6):
        # half-life 1 day on daily bars: weights 1, 1/2, 1/4, ... newest first
        w = [0.5**i for i in range(t)]
        var = sum(wi * LOGR[t - 1 - i] ** 2 for i, wi in enumerate(w)) / sum(w)
        expected.append(min(3.0, 0.5 / math.sqrt(var * 365)))
    np.testing.assert_allclose(pol.compute(frame), expected, rtol=1e-9)
    # warm-up of 2 days: the first forecast needs two returns.
    got = VolTarget(target_vol=0.5, halflife_days=1, warmup_days=2).compute(frame)
    assert got[1] == 0.0 and got[2] == pytest.approx(expected[2], rel=1e-9)


def test_voltarget_caps_at_max_leverage_when_vol_is_zero(make_bars):
    got = VolTarget(target_vol=0.5, max_leverage=2.5, warmup_days=0).compute(make_bars(np.full(6, 100.0)))
    np.testing.assert_array_equal(got, [0.0, 2.5, 2.5, 2.5, 2.5, 2.5])


def test_voltarget_implied_vol_with_gap_fill(make_bars):
    iv = [0.5, NAN, NAN, NAN, 0.25, NAN]
    frame = make_bars(np.full(6, 100.0), bar_hours=1, iv=iv)
    # Gaps up to 2 bars are bridged: vol 0.5, 0.5, 0.5, none, 0.25, 0.25 -> L = 0.5 / vol.
    got = VolTarget(target_vol=0.5, estimator="iv", iv_fill_days=2 / 24).compute(frame)
    np.testing.assert_allclose(got, [1.0, 1.0, 1.0, 0.0, 2.0, 2.0])
    got = VolTarget(target_vol=0.5, estimator="iv", iv_fill_days=0).compute(frame)
    np.testing.assert_allclose(got, [1.0, 0.0, 0.0, 0.0, 2.0, 0.0])


KCLOSE = [100.0, 110.0, 99.0, 108.9, 103.455]
KFUND = [NAN, 0.001, NAN, 0.002, NAN]


def _kelly_by_hand(t, w=3, c=0.5, side="short", mu=None, phi=None, cost=0.0, cap=5.0):
    ret = [KCLOSE[i] / KCLOSE[i - 1] - 1 for i in range(t - w + 1, t + 1)]
    mu = statistics.mean(ret) * 365 if mu is None else mu
    var = statistics.variance(ret) * 365
    if phi is None:
        phi = sum(0.0 if math.isnan(f) else f for f in KFUND[t - w + 1: t + 1]) * 365 / w
    edge = (phi - mu if side == "short" else mu - phi) - cost
    return min(cap, max(0.0, c * edge / var))


def test_kelly_short_with_funding_carry(make_bars):
    frame = make_bars(KCLOSE, funding=KFUND)
    got = Kelly(fraction=0.5, window_days=3).compute(frame)
    expected = [0, 0, 0, _kelly_by_hand(3), _kelly_by_hand(4)]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # Bar 3: the price rose (mean +3.3 %/day) -> no short; bar 4: 0.5 * 6.327 / 3.954 = 0.8.
    assert got[3] == 0.0 and got[4] == pytest.approx(0.8, abs=1e-3)


def test_kelly_variants(make_bars):
    frame = make_bars(KCLOSE, funding=KFUND)
    got = Kelly(fraction=0.5, window_days=3, side="long").compute(frame)
    np.testing.assert_allclose(got[3:], [_kelly_by_hand(3, side="long"), _kelly_by_hand(4, side="long")], rtol=1e-9)
    assert got[3] > 1.0 and got[4] == 0.0
    got = Kelly(fraction=0.25, window_days=3, expected_return=-0.5, funding=0.1, cost=0.05).compute(frame)
    np.testing.assert_allclose(
        got[3:], [_kelly_by_hand(t, c=0.25, mu=-0.5, phi=0.1, cost=0.05) for t in (3, 4)], rtol=1e-9)
    got = Kelly(fraction=1.0, window_days=3, max_leverage=0.5).compute(frame)
    assert got[4] == 0.5


def _iv_frame(make_bars, x, n=3):
    # liqcap(1, horizon_days=365, estimator=iv) turns an iv of x into an adverse move of exactly x.
    return make_bars(np.full(n, 100.0), iv=np.full(n, x))


def test_liqcap_reproduces_the_research_example(make_bars):
    # sigma_daily 3.5 %, h = 1 day, k = 4 -> x = 14 %; mmr 0.5 % -> L <= 6.86 linear, 7.86 inverse.
    frame = make_bars(np.full(3, 100.0), iv=np.full(3, 0.035 * math.sqrt(365)))
    lin = LiqCap(k=4, horizon_days=1, mmr=0.005, estimator="iv").compute(frame)
    inv = LiqCap(k=4, horizon_days=1, mmr=0.005, estimator="iv", contract="inverse").compute(frame)
    assert lin[0] == pytest.approx(6.86, abs=0.005) and inv[0] == pytest.approx(7.86, abs=0.005)


def test_liqcap_linear_matches_binance_isolated_short_liquidation_price(make_bars):
    # Binance isolated short, no fees: LP = EP (1 + 1/L) / (1 + mmr); worked example: short 5x at
    # 60,000 with tier-1 mmr 0.4 % -> LP = 71,713.15. The cap at that distance must be 5x.
    x = 71_713.15 / 60_000 - 1
    got = LiqCap(k=1, horizon_days=365, mmr=0.004, estimator="iv").compute(_iv_frame(make_bars, x))
    assert got[0] == pytest.approx(5.0, abs=1e-4)
    for lev in (2.0, 10.0, 20.0):
        x = (1 + 1 / lev) / 1.004 - 1
        got = LiqCap(k=1, horizon_days=365, mmr=0.004, estimator="iv").compute(_iv_frame(make_bars, x))
        assert got[0] == pytest.approx(lev, rel=1e-9)


@pytest.mark.parametrize("lev,lp", [(2, 119_520.0), (5, 74_700.0), (10, 66_400.0)])
def test_liqcap_inverse_matches_binance_coin_m_liquidation_price(make_bars, lev, lp):
    # Binance COIN-M isolated short at 60,000, mmr 0.4 %: LP = EP (1 - mmr) / (1 - 1/L).
    x = lp / 60_000 - 1
    got = LiqCap(k=1, horizon_days=365, mmr=0.004, estimator="iv", contract="inverse").compute(
        _iv_frame(make_bars, x))
    assert got[0] == pytest.approx(lev, rel=1e-9)


@pytest.mark.parametrize("bar_hours", [24.0, 1.0])
def test_liqcap_atr(make_bars, bar_hours):
    # Close 100, high 101, low 99 -> true range 2 every bar -> ATR / close = 2 %.
    frame = make_bars(np.full(30, 100.0), np.full(30, 101.0), np.full(30, 99.0), bar_hours=bar_hours)
    got = LiqCap(k=3, horizon_days=1, method="atr", atr_days=5 * bar_hours / 24).compute(frame)
    x = 3 * 0.02 * math.sqrt(24 / bar_hours)  # scaled from one bar to one day
    expected = 1 / (0.004 + x * 1.004)
    assert (got[:4] == 0).all()
    np.testing.assert_allclose(got[4:], expected, rtol=1e-12)


def _spec(tables):
    def rows(t):
        return [{"minNotional": lo, "maxNotional": hi, "maintenanceMarginRate": mmr, "maxLeverage": lev}
                for lo, hi, mmr, lev in t]

    return MarketSpec.from_dict({
        "symbol": "TEST/USDT:USDT", "linear": True, "inverse": False, "settle": "USDT", "contractSize": 1.0,
        "tiers": rows(tables[-1][1]),
        "tier_history": [{"from": start, "tiers": rows(t)} for start, t in tables]})


TABLE_A = [(0, 50_000, 0.004, 125), (50_000, 250_000, 0.005, 100), (250_000, 1_000_000, 0.01, 50),
           (1_000_000, 10_000_000, 0.025, 20)]
TABLE_B = [(0, 10_000, 0.01, 50), (10_000, 1e9, 0.02, 20)]


@pytest.mark.parametrize("equity,cap", [
    (1_000, 100.0),      # 100x -> 100k notional, in tier 2 (max 100x); 125x of tier 1 stops at 50k = 50x
    (10_000, 50.0),      # tier 2 allows up to 250k = 25x; tier 3 allows 50x (500k)
    (100_000, 20.0),     # tier 4: 20x -> 2M
    (1_000_000, 10.0),   # tier 4 ends at 10M = 10x
])
def test_tiercap_hand_cases(make_bars, equity, cap):
    frame = make_bars(np.full(4, 100.0))
    spec = _spec([(0, TABLE_A)])
    np.testing.assert_array_equal(make("tiercap", equity=equity).compute(frame, spec=spec), cap)


def test_tiercap_follows_the_tier_history(make_bars):
    frame = make_bars(np.full(5, 100.0))
    start_b = int(frame.index[3].value // 1_000_000)
    spec = _spec([(0, TABLE_A), (start_b, TABLE_B)])
    # Table B at 1,000 equity: 50x stops at 10k = 10x; tier 2 allows 20x (20k notional).
    np.testing.assert_array_equal(make("tiercap", equity=1_000).compute(frame, spec=spec), [100, 100, 100, 20, 20])


def test_tiercap_on_the_bundled_binance_table_is_the_largest_feasible_leverage(make_bars):
    from backtest.market import load_market

    spec = load_market("binanceusdm", "BTC/USDT:USDT")
    rows = spec.tiers.rows
    frame = make_bars(np.full(2, 100.0), start="2030-01-01")  # after every table change: the current table

    grid = np.linspace(1.0, 130.0, 129_001)  # leverage steps of 0.001
    for equity in (500.0, 10_000.0, 250_000.0, 3_000_000.0):
        # Brute force: the tier holding each notional, and whether it allows that leverage.
        tier = np.searchsorted(rows[:, 1], grid * equity, side="right")
        ok = (tier < len(rows)) & (grid <= rows[np.minimum(tier, len(rows) - 1), 4])
        cap = make("tiercap", equity=equity).compute(frame, spec=spec)[0]
        assert cap == pytest.approx(grid[ok].max(), abs=2e-3)


def test_tiercap_needs_a_spec(make_bars):
    with pytest.raises(PolicyError, match="needs the market spec: pass spec="):
        make("tiercap").compute(make_bars([1.0, 2.0]))


def test_min_of(make_bars):
    frame = make_bars([100.0, 100.0], iv=[0.5, 0.1])
    # voltarget: 0.5 / 0.5 = 1, 0.5 / 0.1 = 5 capped at 3; const 1.5 -> min 1, 1.5
    pol = min_of(VolTarget(target_vol=0.5, estimator="iv"), "const(1.5)")
    np.testing.assert_allclose(pol.compute(frame), [1.0, 1.5])
    assert pol.label() == "min(voltarget(0.5,estimator=iv),const(1.5))"
    with pytest.raises(PolicyError, match="in-loop"):
        min_of("const(2)", "drawdown(0.2)")


def test_in_loop_policies_translate_to_engine_fields():
    d = Drawdown(max_drawdown=0.25, floor=0.1, leverage=2)
    assert d.engine_fields() == {"kind": "drawdown", "max_drawdown": 0.25, "floor": 0.1, "max_exposure": math.inf}
    assert d.target_scale() == 2 and d.in_loop
    c = CPPI(multiplier=4, floor=0.7, ratchet=True, max_exposure=3)
    assert c.engine_fields() == {"kind": "cppi", "multiplier": 4, "floor": 0.7, "ratchet": True, "max_exposure": 3}
    assert c.target_scale() == 1.0


def test_missing_inputs_name_the_column(make_bars):
    frame = make_bars(KCLOSE)
    with pytest.raises(PolicyError, match="kelly.*'funding_rate' has no funding prints.*funding=<annual rate>"):
        Kelly().compute(frame)
    assert Kelly(funding=0.1, window_days=3).compute(frame)[4] > 0  # a given funding rate needs no prints
    with pytest.raises(Exception, match="no column 'iv'"):
        VolTarget(estimator="iv").compute(frame)
    with pytest.raises(PolicyError, match="column 'iv' has no values"):
        VolTarget(estimator="iv").compute(make_bars(KCLOSE, iv=np.full(5, NAN)))


def test_bad_policy_input_names_the_field():
    with pytest.raises(PolicyError, match=r"unknown policy 'voltarge'; did you mean 'voltarget'"):
        make("voltarge")
    with pytest.raises(PolicyError, match=r"unknown parameter 'target_volatility'; did you mean 'target_vol'"):
        make("voltarget", target_volatility=0.5)
    with pytest.raises(PolicyError, match=r"voltarget.target_vol=0.0: Input should be greater than 0"):
        parse("voltarget(0)")
    with pytest.raises(PolicyError, match=r"cppi.floor=-0.1"):
        make("cppi", floor=-0.1)
    with pytest.raises(PolicyError, match=r"drawdown.floor=-0.2"):
        parse("drawdown(0.3,floor=-0.2)")
    with pytest.raises(PolicyError, match=r"kelly.fraction=1.5"):
        make("kelly", fraction=1.5)
    with pytest.raises(PolicyError, match=r"const.leverage=nan"):
        make("const", leverage=float("nan"))
    with pytest.raises(PolicyError, match="duplicate policy variants"):
        expand(["const(2)", {"name": "const", "leverage": [1, 2]}])
    with pytest.raises(PolicyError, match="too many positional"):
        parse("const(2,3)")
    with pytest.raises(PolicyError, match="has no 'name'"):
        expand([{"leverage": 2}])


def _non_default(name):
    return {
        "const": "const(2.5)", "voltarget": "voltarget(0.3,estimator=rolling,window_days=10,max_leverage=4)",
        "kelly": "kelly(0.25,window_days=30,expected_return=-0.2,side=long)",
        "liqcap": "liqcap(4,method=atr,contract=inverse)", "tiercap": "tiercap(2500)",
        "min": "min(const(2),liqcap(3))", "drawdown": "drawdown(0.2,floor=0.1,leverage=3)",
        "cppi": "cppi(5,0.9,ratchet=True)"}[name]


@pytest.mark.parametrize("name", sorted(names()))
def test_labels_parse_back(name):
    label = _non_default(name)
    pol = parse(label)
    assert pol.label() == label and parse(pol.label()) == pol
    if name == "min":
        with pytest.raises(PolicyError, match="min.policies"):
            parse(name)
    else:
        assert parse(name) == type(pol)()
