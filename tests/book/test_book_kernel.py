"""The numba book kernel (``simulate_book``) against independent implementations: the book's
slow reference simulator on random books (hypothesis), today's single-instrument engine for a
book of one, and the readable formulas of ``backtest.mechanics`` for the kernel's compiled
restatements."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from numba import njit

from backtest import mechanics as mk
from backtest.book import (BOOK_RECORD_DTYPES, BOOK_SERIES, POSITION_SERIES, BookBars, BookSettings, Leg,
                           simulate_book, simulate_book_reference)
from backtest.book import nb as bnb
from backtest.engine import simulate_perp
from backtest.engine.core import raw_outputs
from backtest.engine.settings import Account, Policy, SettingsError
from backtest.metrics import compute_metrics
from tests.book.test_book_reference import _compare_with_single, _single_case
from tests.engine.scenario_kit import HOUR, INVERSE_TIERS, LINEAR_TIERS, T0, make_bars, make_spec

REL = 1e-9


# ------------------------------------------------------------------------------------------
# Random books
# ------------------------------------------------------------------------------------------

def _walk(rng, n: int, p0: float, t0: int, prints: int = 3):
    """Trade and mark OHLC with jumps (liquidations happen), funding (one print per ``prints``
    bars) at opens, with jitter and strictly inside bars."""
    c = p0 * np.exp(np.cumsum(rng.normal(0, 0.02, n) + rng.choice([0.0, 0.1, -0.1], n, p=[0.9, 0.05, 0.05])))
    o = np.concatenate([[p0], c[:-1]]) * np.exp(rng.normal(0, 0.002, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.012, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.012, n)))
    mo = o * np.exp(rng.normal(0, 0.001, n))
    mc = c * np.exp(rng.normal(0, 0.001, n))
    mh = np.maximum(mo, mc) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    ml = np.minimum(mo, mc) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    ts = t0 + HOUR * np.arange(n)
    fb = np.sort(rng.choice(n, size=max(1, n // prints), replace=False))
    funding = [(int(ts[i]) + int(rng.choice([0, 3, HOUR // 2])), float(rng.normal(1e-4, 5e-4))) for i in fb]
    return make_bars(np.c_[o, h, lo, c, mo, mh, ml, mc], funding=funding, t0=t0)


def random_book(seed: int, n: int = 30, m: int = 4, sparse: bool = False):
    """2-4 instruments (some listed later), all linear or all inverse; per column: cross,
    isolated or mixed legs, every call response, stop/continue, clip/reject, both intrabar
    conventions, no/drawdown/CPPI policy; lag 1. ``sparse``: an order on one row in ten per
    instrument and a funding print every ten bars, so that quiet stretches (bars with nothing
    to do but valuation) occur between the events."""
    rng = np.random.default_rng(seed)
    kk = int(rng.integers(2, 5))
    inverse = bool(rng.random() < 0.25)
    legs, specs = [], []
    for k in range(kk):
        late = int(rng.choice([0, 0, 3, 7])) if k > 0 else 0
        p0 = float(rng.choice([30_000.0, 2_000.0])) if inverse else float(rng.choice([100.0, 20.0, 3.0]))
        legs.append(_walk(rng, n - late, p0, T0 + late * HOUR, prints=10 if sparse else 3))
        base = INVERSE_TIERS if inverse else LINEAR_TIERS
        history = None
        if rng.random() < 0.4:
            stricter = [dict(t, maintenanceMarginRate=t["maintenanceMarginRate"] * 1.75, maintAmt=None) for t in base]
            history = [{"from": 0, "tiers": base}, {"from": int(T0 + HOUR * (n // 2)), "tiers": stricter}]
        lot = 1.0 if inverse else float(rng.choice([0.001, 0.0, 0.1]))
        specs.append(make_spec(inverse=inverse, taker=float(rng.choice([0.0, 0.0005])), lot=lot,
                               min_notional=0.0 if inverse else float(rng.choice([0.0, 5.0])),
                               liquidation_fee=float(rng.choice([0.0125, 0.002])), tier_history=history))
    bars = BookBars.from_legs([f"S{k}" for k in range(kk)], legs)
    tgt = rng.uniform(-5.0, 2.0, (n, kk, m))
    tgt[rng.random((n, kk, m)) < (0.9 if sparse else 0.55)] = np.nan
    tgt[rng.random((n, kk, m)) < 0.04] = 0.0
    for k in range(kk):
        tgt[: max(0, int(bars.first_bar[k]) - 1), k, :] = np.nan  # lag 1: row t reaches bar t + 1
    ic = 1.0 if inverse else 10_000.0
    threshold = rng.choice([0.6, 0.8, 1.0], m)
    acc = Account(
        initial_capital=ic, leverage=10.0,
        margin_call_threshold=list(threshold),
        margin_call_response=list(rng.choice(["none", "reduce", "top_up"], m)),
        margin_call_target=list(threshold * rng.choice([0.4, 0.7], m)),
        reserve=list(rng.choice([0.0, 0.1 * ic, np.inf], m)),
        after_liquidation=list(rng.choice(["stop", "continue"], m)),
        excess=list(rng.choice(["clip", "reject"], m)),
        fee_rate=None if rng.random() < 0.5 else float(rng.choice([0.0, 0.001])),
        slippage=list(rng.choice([0.0, 0.001], m)), lag=1)
    policy = Policy(kind=list(rng.choice(["none", "drawdown", "cppi"], m)),
                    max_drawdown=list(rng.choice([0.2, 0.5], m)), floor=list(rng.choice([0.0, 0.3], m)),
                    multiplier=list(rng.choice([1.0, 3.0], m)), ratchet=list(rng.choice([0.0, 1.0], m) == 1.0),
                    max_exposure=list(rng.choice([np.inf, 4.0], m)))
    mix = rng.choice(["cross", "isolated", "mixed"])
    modes = [list(rng.choice(["cross", "isolated"], m)) if mix == "mixed" else str(mix) for _ in range(kk)]
    leg_s = [Leg(margin_mode=modes[k], leverage=float(rng.choice([2.0, 5.0, 10.0, 20.0]))) for k in range(kk)]
    s = BookSettings(account=acc, policy=policy, legs=leg_s, intrabar=list(rng.choice(["together", "alone"], m)))
    return bars, tgt, specs, s


def _scale(values) -> float:
    a = np.abs(np.asarray(values, dtype=float))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 1.0


def assert_same_book(bars, res, series, records, capital: float) -> None:
    """Every series and record field of the kernel's result equals the reference's to 1e-9
    relative, with an absolute floor of 1e-9 of the quantity's own scale (money: the capital;
    prices: the highest mark; contracts: the largest position), for values that cancel to
    about zero (a closed position's PnL, an equity wiped out)."""
    price = max(_scale(leg.mark_high) for leg in bars.legs)
    floor = {"position": _scale(series["position"]), "liq_price": price, "notional": capital,
             "margin_ratio": 1.0, "margin_ratio_adverse": 1.0, "gross_leverage": 1.0, "liq_distance": 1.0}
    for name in BOOK_SERIES:
        np.testing.assert_allclose(res.series[name], series[name], rtol=REL, atol=REL * floor.get(name, capital),
                                   err_msg=name)
    for name in POSITION_SERIES:
        np.testing.assert_allclose(res.positions[name], series[name], rtol=REL, atol=REL * floor.get(name, capital),
                                   err_msg=name)
    for name, dt in BOOK_RECORD_DTYPES.items():
        a, b = res.records[name], records[name]
        assert a.dtype == dt and len(a) == len(b), (name, len(a), len(b))
        for f in dt.names:
            if f in ("price", "trigger_price", "mark"):
                atol = REL * price
            elif f in ("size", "position"):
                atol = REL * _scale(b[f]) if len(b) else 0.0
            elif f in ("s", "margin_ratio"):
                atol = REL
            else:
                atol = REL * capital
            np.testing.assert_allclose(a[f], b[f], rtol=REL, atol=atol, err_msg=f"{name}.{f}")


def _check(seed: int, n: int = 30, m: int = 4, sparse: bool = False) -> dict[str, int]:
    bars, tgt, specs, s = random_book(seed, n, m, sparse)
    series, records = simulate_book_reference(bars, tgt, specs, s)
    res = simulate_book(bars, tgt, specs, s)
    assert_same_book(bars, res, series, records, float(s.account.initial_capital))
    return {k: len(v) for k, v in records.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
@example(seed=0)
def test_kernel_equals_reference_on_random_books(seed):
    """Random books (2-4 instruments, later listings, cross/isolated mixes, puts excluded: the
    book has perps only), every call response, stop/continue, clip/reject, both intrabar
    conventions, drawdown/CPPI policies, lag 1: the kernel gives the reference's numbers."""
    _check(seed)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
@example(seed=3191)  # a flip to the size of a previous clip: a tie at the margin check (exact sums)
@example(seed=1516)  # a policy scales an unrounded size by the close equity, a far liquidation price amplifies it
def test_kernel_equals_reference_on_random_books_many(seed):
    """The same on more and longer books (slow)."""
    _check(seed, n=60, m=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
@example(seed=0)
def test_kernel_equals_reference_on_sparse_books(seed):
    """The same on books with sparse orders and funding, where the kernel values quiet
    stretches by step 6 alone: the reference (which walks every step of every bar) gives the
    same numbers."""
    _check(seed, n=60, m=4, sparse=True)


def _quiet_bars(bars, tgt, specs, s, no_stretches: bool = False):
    """The kernel's outputs and the bars it valued in quiet stretches per column (with
    ``no_stretches``: every column's threshold made too low for stretches, so none is taken)."""
    from backtest.book import core
    inp = core.check_book_inputs(bars, tgt, specs, s)
    mkt = core._market(bars, inp.specs, inp.paths)
    if no_stretches:
        mkt = mkt._replace(mmr_max=np.inf)
    fe, _ = core._funding(bars)
    prm = core._params(inp)
    caps = core.first_record_caps(inp.target, bars.n, bars.k, inp.lag, prm.resp) * 4
    o, starts = core._run(mkt, fe, prm, bars.n, bars.k, inp.n_cols, np.arange(len(BOOK_SERIES)),
                          np.arange(len(POSITION_SERIES)), caps)
    assert (o.counts <= caps).all()
    records = [core._compact(buf, starts[r], o.counts[r]) for r, buf in enumerate((o.fills, o.calls, o.liqs))]
    return o, records


def test_quiet_stretches_are_taken_and_change_nothing():
    """On the sparse books the kernel does take quiet stretches (a good share of the bars), and
    its every output is bit for bit the one of the same kernel taking none (the stretches only
    skip steps that do nothing)."""
    quiet = total = 0
    for seed in range(6):
        bars, tgt, specs, s = random_book(seed, 60, 4, sparse=True)
        a, ra = _quiet_bars(bars, tgt, specs, s)
        b, rb = _quiet_bars(bars, tgt, specs, s, no_stretches=True)
        assert b.quiet.sum() == 0
        quiet += int(a.quiet.sum())
        total += bars.n * tgt.shape[2]
        # equal_nan: the distance to liquidation is NaN while flat
        assert np.array_equal(a.series, b.series, equal_nan=True) and np.array_equal(a.pseries, b.pseries)
        assert np.array_equal(a.counts, b.counts) and np.array_equal(a.fpos, b.fpos)
        for x, y in zip(ra, rb):
            assert len(x) and np.array_equal(x, y)
    assert quiet > 0.2 * total, (quiet, total)


def test_random_books_exercise_the_rules():
    """The random books do liquidate, call margin and reject orders (the comparison is not
    vacuous): summed over a few seeds."""
    tot = {k: 0 for k in BOOK_RECORD_DTYPES}
    for seed in range(6):
        for k, v in _check(seed).items():
            tot[k] += v
    assert tot["liquidations"] > 0 and tot["margin_calls"] > 0 and tot["funding"] > 0, tot


# ------------------------------------------------------------------------------------------
# A book of one instrument equals today's engine
# ------------------------------------------------------------------------------------------

def _book_of_one_kernel(bars, tgt, spec, account, policy):
    res = simulate_book(BookBars.from_legs(["X"], [bars]), tgt[:, None, :], [spec],
                        BookSettings(account=account, policy=policy))
    return {**res.series, **res.positions}, res.records


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(seed=st.integers(0, 2**31 - 1))
@example(seed=183)
@example(seed=63882170)
@example(seed=540)  # a reduce cut at a lot boundary whose ratio ties the target (the tolerance of the cut rule)
def test_book_of_one_equals_engine(seed):
    """Random bars, funding, tiers and settings (linear and inverse, cross and isolated, every
    call response, stop/continue, clip/reject, lag 1): the book kernel with one instrument
    gives simulate_perp's numbers (series and records, 1e-9). Cases where the book's own rule
    (the reference simulator) decides a float tie otherwise than the engine are set aside
    here; the kernel equals the reference on them too."""
    bars, tgt, spec, account, policy = _single_case(seed)
    series, records = raw_outputs(simulate_perp(bars, tgt, spec, account, policy))
    level = float(bars.mark_high.max())
    r_series, r_records = simulate_book_reference(BookBars.from_legs(["X"], [bars]), tgt[:, None, :], [spec],
                                                  BookSettings(account=account, policy=policy))
    try:
        _compare_with_single(series, records, r_series, r_records, level)
    except AssertionError:
        assume(False)
    b_series, b_records = _book_of_one_kernel(bars, tgt, spec, account, policy)
    _compare_with_single(series, records, b_series, b_records, level)


def test_book_of_one_equals_engine_reduce_tie():
    """A tie of the margin-call reduce at a lot boundary: cutting 352 to 140.8 contracts gives a
    ratio of exactly the target 0.4 (0.4000000000000074 in the book's floats). The engine's
    closed form keeps 140.8; the book's cut rule accepts a ratio within the exchange checks'
    tolerance (CHECK_RTOL), so it keeps 140.8 too (with an exact ``<=`` it kept 140.7 and the
    clearance fee of the liquidation that follows differed: 56.058 vs 56.098)."""
    bars, tgt, spec, account, policy = _single_case(53728)
    series, records = raw_outputs(simulate_perp(bars, tgt, spec, account, policy))
    r_series, r_records = simulate_book_reference(BookBars.from_legs(["X"], [bars]), tgt[:, None, :], [spec],
                                                  BookSettings(account=account, policy=policy))
    _compare_with_single(series, records, r_series, r_records, float(bars.mark_high.max()))
    b_series, b_records = _book_of_one_kernel(bars, tgt, spec, account, policy)
    _compare_with_single(series, records, b_series, b_records, float(bars.mark_high.max()))


def test_book_of_one_reduce_tie_is_the_reference_rule():
    """The seed above: the kernel follows the book's reference simulator exactly."""
    bars, tgt, spec, account, policy = _single_case(53728)
    ref_series, ref_records = simulate_book_reference(BookBars.from_legs(["X"], [bars]), tgt[:, None, :], [spec],
                                                      BookSettings(account=account, policy=policy))
    res = simulate_book(BookBars.from_legs(["X"], [bars]), tgt[:, None, :], [spec],
                        BookSettings(account=account, policy=policy))
    assert_same_book(BookBars.from_legs(["X"], [bars]), res, ref_series, ref_records,
                     float(account.initial_capital))


# ------------------------------------------------------------------------------------------
# The kernel's compiled restatements of backtest.mechanics
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wallet,upnls,fees", [
    (1_000.0, [-700.0, -400.0], [20.0, 10.0]),   # bankrupt: deficit 100 split 7:4
    (1_000.0, [-700.0, 100.0], [20.0, 10.0]),    # fees charged in full
    (1_000.0, [-985.0, 0.0], [20.0, 10.0]),      # 15 left for 30 of fees: half charged
    (-50.0, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),   # a negative wallet: the deficit shared equally
])
def test_cross_liquidation_outcome_nb_is_the_mechanics_formula(wallet, upnls, fees):
    keep, _, charged, shares = mk.cross_liquidation_outcome(wallet, upnls, fees)
    c, s = np.zeros(len(upnls)), np.zeros(len(upnls))
    k_nb = bnb.cross_liquidation_outcome_nb(wallet, np.array(upnls), np.array(fees), c, s, np.zeros((3, 8)))
    assert k_nb == pytest.approx(keep, rel=1e-15, abs=1e-12)
    assert c == pytest.approx(charged, rel=1e-15, abs=1e-12) and s == pytest.approx(shares, rel=1e-15, abs=1e-12)


@pytest.mark.parametrize("balance,upnl,notional,rate", [(1_000.0, -900.0, 8_000.0, 0.0125),
                                                        (1_000.0, -1_200.0, 8_000.0, 0.0125),
                                                        (1_000.0, -980.0, 8_000.0, 0.0125)])
def test_isolated_liquidation_outcome_nb_is_the_mechanics_formula(balance, upnl, notional, rate):
    assert bnb.isolated_liquidation_outcome_nb(balance, upnl, notional, rate) == pytest.approx(
        mk.liquidation_outcome(balance, upnl, notional, rate), rel=1e-15)


@njit
def _fsum(x, p):
    n = 0
    for v in x:
        n = bnb.fsum_add_nb(p, n, v)
    return bnb.fsum_value_nb(p, n)


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(st.floats(-1e12, 1e12, allow_nan=False) | st.sampled_from([1e16, -1e16, 1.0, 0.1, -0.1, 3e-17]),
                   min_size=0, max_size=12))
def test_fsum_nb_is_math_fsum(xs):
    """The kernel's sums are correctly rounded exactly as ``math.fsum`` (bit for bit), which the
    reference uses: cancellations, mixed magnitudes, half-way cases."""
    assert _fsum(np.array(xs, dtype=np.float64), np.zeros(len(xs) + 1)) == math.fsum(xs)


@pytest.mark.parametrize("s", [0.0, 1e-9, 0.25, 0.5, 0.999999, 1.0, 1.5, -0.1])
def test_path_price_nb_is_the_mechanics_formula(s):
    assert bnb.path_price_nb(100.0, 125.0, s) == mk.path_price(100.0, 125.0, s)


# ------------------------------------------------------------------------------------------
# The wrapper: Binance's example, lean outputs, errors, SimResult
# ------------------------------------------------------------------------------------------

def test_kernel_reproduces_binance_two_position_example():
    """The reference's candle table of Binance's two-position cross example, through the kernel:
    liquidation prices 1,153.26 (ETH) and 26,316.89 (BTC)."""
    from tests.book import test_book_reference as ref
    cases = {c["symbol"]: c for c in ref.VECTORS["binance_linear_liq_price"] if c["mode"] == "cross"}
    eth, btc = cases["ETH/USDT:USDT"], cases["BTC/USDT:USDT"]
    wallet = eth["WB"]
    specs = [make_spec(tiers=ref._two_tier(eth["mmr"], eth["cum"], 0.05), liquidation_fee=0.0),
             make_spec(tiers=ref._two_tier(btc["mmr"], btc["cum"], 0.01), liquidation_fee=0.0)]
    bars = BookBars.from_legs(["ETH", "BTC"], [make_bars([(eth["entry"], eth["entry"], 1335.18, 1335.18)]),
                                               make_bars([(btc["entry"], btc["entry"], 31967.27, 31967.27)])])
    target = np.array([[[eth["qty"] * eth["entry"] / wallet], [btc["qty"] * btc["entry"] / wallet]]])
    s = BookSettings(account=Account(initial_capital=wallet, leverage=8.0, fee_rate=0.0, margin_mode="cross",
                                     lag=0, allow_lookahead=True))
    res = simulate_book(bars, target, specs, s)
    assert res.positions["liq_price"][0, 0, 0] == pytest.approx(eth["expected"], abs=0.005)
    assert res.positions["liq_price"][0, 1, 0] == pytest.approx(btc["expected"], abs=0.005)


def test_lean_series_are_the_full_ones():
    """Storing only some series changes nothing in them (nor in the records)."""
    bars, tgt, specs, s = random_book(11)
    full = simulate_book(bars, tgt, specs, s)
    lean = simulate_book(bars, tgt, specs, s, series=("equity", "position"))
    assert set(lean.series) == {"equity"} and set(lean.positions) == {"position"}
    assert np.array_equal(lean.series["equity"], full.series["equity"])
    assert np.array_equal(lean.positions["position"], full.positions["position"])
    for name in BOOK_RECORD_DTYPES:
        assert np.array_equal(lean.records[name], full.records[name]), name


@pytest.mark.parametrize("seed", range(4))
def test_equity_only_sweep_is_the_full_run(seed):
    """A sweep storing the account's equity-type series alone (quiet stretches then value the
    bars of columns without a policy in a tight loop): the same numbers, bit for bit, and the
    same records, as a run storing everything."""
    bars, tgt, specs, s = random_book(seed, 60, 4, sparse=True)
    keep = ("equity", "equity_usd", "cum_funding", "cum_fees", "capital_added")
    full = simulate_book(bars, tgt, specs, s)
    lean = simulate_book(bars, tgt, specs, s, series=keep)
    for name in keep:
        assert np.array_equal(lean.series[name], full.series[name]), name
    for name in BOOK_RECORD_DTYPES:
        assert np.array_equal(lean.records[name], full.records[name]), name


def test_record_capacity_rerun(monkeypatch):
    """A run whose records outnumber the first guess of the buffers is run again with the
    exact counts: with a first guess of one record per column, every record is still there and
    equal to the reference's."""
    from backtest.book import core
    bars, tgt, specs, s = random_book(5)
    series, records = simulate_book_reference(bars, tgt, specs, s)
    assert len(records["fills"]) > 4 and len(records["liquidations"]) > 4 and len(records["margin_calls"]) > 4
    monkeypatch.setattr(core, "first_record_caps", lambda target, *a: np.ones((3, target.shape[2]), dtype=np.int64))
    res = simulate_book(bars, tgt, specs, s)
    assert_same_book(bars, res, series, records, float(s.account.initial_capital))


def test_input_errors_name_the_fix():
    bars = BookBars.from_legs(["A", "B"], [make_bars([(100, 101, 99, 100)] * 3)] * 2)
    with pytest.raises(ValueError, match="n_instruments"):
        simulate_book(bars, np.zeros((3, 3)), [make_spec()] * 2)
    with pytest.raises(ValueError, match="one MarketSpec per instrument"):
        simulate_book(bars, np.zeros((3, 2)), [make_spec()])
    with pytest.raises(ValueError, match="infinite"):
        simulate_book(bars, np.array([[np.inf, 0.0]] * 3), [make_spec()] * 2)
    with pytest.raises(ValueError, match="unknown series"):
        simulate_book(bars, np.zeros((3, 2)), [make_spec()] * 2, series=("equity", "sharpe"))
    with pytest.raises(ValueError, match="labels"):
        simulate_book(bars, np.zeros((3, 2)), [make_spec()] * 2, columns=["a", "b"])
    with pytest.raises(SettingsError, match="one settlement currency"):
        simulate_book(bars, np.zeros((3, 2)), [make_spec(), make_spec(inverse=True)])


def test_sim_result_feeds_the_metrics():
    """``to_sim_result``: gross leverage as ``leverage``, net notional, the number of open
    positions as ``position``, one liquidation record per account event; compute_metrics runs
    on it unchanged."""
    bars, tgt, specs, s = random_book(5)
    res = simulate_book(bars, tgt, specs, s)
    sim = res.to_sim_result()
    assert sim.kind == "book" and sim.currency == specs[0].settle
    assert np.array_equal(sim.series["leverage"], res.series["gross_leverage"])
    assert np.allclose(sim.series["notional"], res.positions["notional"].sum(axis=1))
    assert np.array_equal(sim.series["position"], (res.positions["position"] != 0).sum(axis=1))
    liq = res.records["liquidations"]
    events = {(int(r["col"]), int(r["bar"]), float(r["equity_after"])) for r in liq}
    assert len(sim.records["liquidations"]) == len(events)
    assert sim.records["liquidations"]["clearance_fee"].sum() == pytest.approx(liq["clearance_fee"].sum(), rel=1e-12)
    metrics = compute_metrics(sim)
    for j, col in enumerate(metrics["columns"].values()):
        assert col["final_equity"] == pytest.approx(res.series["equity"][-1, j], rel=1e-12)
        assert col["max_leverage"] == pytest.approx(res.series["gross_leverage"][:, j].max(), rel=1e-12)
    # per-instrument attribution adds up to the account's PnL
    att = res.attribution()
    for j in range(tgt.shape[2]):
        total = att.loc[j, "total"].sum()
        expected = res.series["equity"][-1, j] - float(s.account.initial_capital) - res.series["capital_added"][-1, j]
        assert total == pytest.approx(expected, rel=1e-9, abs=1e-7)


def test_book_states_the_smallest_tradable_equity():
    """``ruined`` reads ``min_equity_usd``: a book of one states the engine's (the market's
    smallest order at the last mark over each column's leverage); a book of several, the
    cheapest instrument's; and a book whose equity fell below it is ruined although it lost
    less than 99.9 %."""
    bars, tgt, spec, account, policy = _single_case(5)
    one = simulate_book(BookBars.from_legs(["X"], [bars]), tgt[:, None, :], [spec],
                        BookSettings(account=account, policy=policy))
    eng = simulate_perp(bars, tgt, spec, account, policy)
    assert one.meta["min_equity_usd"] == eng.meta["min_equity_usd"]
    seed = next(i for i in range(100) if all(sp.min_order_usd(1.0) > 0.0 for sp in random_book(i)[2]))
    b2, t2, specs, s = random_book(seed)   # every instrument with a lot or a minimum notional
    res = simulate_book(b2, t2, specs, s)
    lev = [np.broadcast_to(np.asarray(leg.leverage, float), (t2.shape[2],)) for leg in s.legs]
    want = np.min([[sp.min_order_usd(float(b2.legs[k].mark_close[-1])) / lev[k][j] for j in range(t2.shape[2])]
                   for k, sp in enumerate(specs)], axis=0)
    np.testing.assert_array_equal(res.meta["min_equity_usd"], want)
    # the rule itself: an account that started at twice the minimum and halved is ruined (it
    # cannot trade again), 1 % above the minimum it is not (a 49.5 % loss)
    sim = res.to_sim_result()
    floor = np.asarray(res.meta["min_equity_usd"])
    for scale, ruined in ((1.0, True), (1.01, False)):
        eq = np.linspace(2.0 * floor, floor * scale, sim.n_bars)
        fake = type(sim)(kind=sim.kind, currency="USD", index=sim.index, columns=sim.columns,
                         series={**sim.series, "equity": eq, "equity_usd": eq, "capital_added": np.zeros_like(eq)},
                         records=sim.records, price_usd=np.ones(sim.n_bars), initial_capital=2.0 * floor,
                         meta=sim.meta, underlying=None)
        cols = compute_metrics(fake)["columns"]
        got = [cols[label]["ruined"] for label in cols]
        assert (floor > 0.0).all() and all(bool(g) == ruined for g in got), (scale, got)
