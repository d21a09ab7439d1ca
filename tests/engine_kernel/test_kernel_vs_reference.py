"""Property tests: the numba kernel equals the slow pure-Python reference simulator on random
bars, funding, tier tables, targets and settings (linear and inverse, isolated and cross)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backtest.engine import Account, PerpBars, Policy, SettingsError, simulate_perp
from backtest.engine import core as engine_core
from backtest.engine.core import raw_outputs
from backtest.engine.enums import RECORD_DTYPES, SERIES
from backtest.engine.reference import simulate_reference
from backtest.market import MarketSpec, TierTable

HOUR = 3_600_000


def make_tiers(rng: np.random.Generator, inverse: bool) -> TierTable:
    k = int(rng.integers(1, 5))
    unit = 5.0 if inverse else 50_000.0
    bounds = np.cumsum(rng.uniform(0.5, 3.0, k)) * unit
    mmr = np.sort(rng.uniform(0.002, 0.05, k))
    maxlev = np.sort(rng.choice([5.0, 10.0, 20.0, 50.0, 100.0, 125.0], k))[::-1]
    mmr = np.minimum(mmr, 0.9 / maxlev)  # a tier's rate is below 1/maxLeverage (else: liquidated at once)
    rows, lo = [], 0.0
    for t in range(k):
        hi = bounds[t] if t < k - 1 else 1e18
        rows.append({"minNotional": lo, "maxNotional": hi, "maintenanceMarginRate": float(mmr[t]),
                     "maxLeverage": float(maxlev[t])})
        lo = hi
    return TierTable.from_ccxt(rows)


def make_case(seed: int, sparse: bool = False):
    """A random case; ``sparse``: the same case with a target order at about 15 % of the bars
    (the kernel's quiet stretches between them)."""
    rng = np.random.default_rng(seed)
    inverse = bool(rng.random() < 0.4)
    n = int(rng.integers(3, 40))
    m = int(rng.integers(1, 4))
    bar_ms = int(rng.choice([60_000, HOUR, 4 * HOUR, 24 * HOUR]))
    vol = float(rng.choice([0.005, 0.03, 0.12]))
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.concatenate([[30_000.0], close[:-1]]) * np.exp(rng.normal(0, vol / 3, n))
    if rng.random() < 0.3:  # occasional gaps at the open
        g = rng.integers(0, n)
        open_[g] *= float(rng.choice([0.7, 1.4]))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, n)))
    dev = np.exp(rng.normal(0, vol / 10, (4, n)))
    m_open, m_close = open_ * dev[0], close * dev[1]
    m_high = np.maximum(np.maximum(m_open, m_close), high * dev[2])
    m_low = np.minimum(np.minimum(m_open, m_close), low * dev[3])
    ts = 1_650_000_000_000 - 1_650_000_000_000 % (24 * HOUR) + np.arange(n, dtype=np.int64) * bar_ms
    # funding every 8h (or 1h/4h) with ms jitter, some inside bars, some with their own mark
    every = int(rng.choice([HOUR, 4 * HOUR, 8 * HOUR]))
    ft = np.arange(ts[0] - 8 * HOUR, ts[-1] + bar_ms + 8 * HOUR, every, dtype=np.int64)
    ft = ft + rng.integers(0, 5, ft.shape)
    fr = rng.normal(1e-4, 5e-4, ft.shape)
    fmark = np.where(rng.random(ft.shape) < 0.3, 30_000.0 * np.exp(rng.normal(0, vol, ft.shape)), np.nan)
    bars = PerpBars.from_arrays(ts, open_, high, low, close, m_open, m_high, m_low, m_close,
                                funding_time=ft, funding_rate=fr, funding_mark=fmark, bar_ms=bar_ms)
    tiers = make_tiers(rng, inverse)
    spec = MarketSpec(
        symbol="T/USD:T" if inverse else "T/USDT:USDT", inverse=inverse,
        contract_size=100.0 if inverse else float(rng.choice([1.0, 0.01])),
        settle="T" if inverse else "USDT", taker_fee=float(rng.choice([0.0, 0.0005])), maker_fee=0.0002,
        lot_size=float(rng.choice([0.0, 1.0])) if inverse else float(rng.choice([0.0, 0.001])),
        min_notional=float(rng.choice([0.0, 5.0, 100.0])),
        liquidation_fee_rate=float(rng.choice([0.0, 0.0125, 0.03])), tiers=tiers)
    maxlev = float(tiers.rows[0, 4])
    thr = rng.uniform(0.3, 1.0, m)
    account = Account(
        initial_capital=list(rng.choice([1.0, 10_000.0], m) if inverse else rng.choice([500.0, 10_000.0], m)),
        margin_mode=list(rng.choice(["isolated", "cross"], m)),
        leverage=list(np.minimum(rng.choice([1.0, 2.0, 5.0, 20.0, 50.0], m), maxlev)),
        margin_call_threshold=list(thr),
        margin_call_response=list(rng.choice(["none", "reduce", "top_up"], m)),
        margin_call_target=list(thr * rng.uniform(0.2, 0.9, m)),
        reserve=list(rng.choice([0.0, 1_000.0, np.inf], m) * (1e-4 if inverse else 1.0)),
        after_liquidation=list(rng.choice(["stop", "continue"], m)),
        excess=list(rng.choice(["clip", "reject"], m)),
        fee_rate=list(rng.choice([0.0, 0.0005, 0.002], m)),
        slippage=list(rng.choice([0.0, 0.001], m)),
        lag=(lag := int(rng.choice([0, 1, 1, 2]))),
        allow_lookahead=lag == 0,  # a random target is known before the open: lag 0 is fine here
    )
    policy = Policy(
        kind=list(rng.choice(["none", "drawdown", "cppi"], m)),
        max_drawdown=list(rng.uniform(0.05, 1.0, m)), floor=list(rng.uniform(0.0, 0.9, m)),
        multiplier=list(rng.uniform(0.5, 5.0, m)), ratchet=list(rng.choice([0.0, 1.0], m) == 1.0),
        max_exposure=list(rng.choice([np.inf, 3.0], m)))
    target = rng.choice([-30.0, -10.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, np.nan], (n, m))
    target = np.where(rng.random((n, m)) < 0.5, target, rng.uniform(-12, 12, (n, m)))
    if sparse:
        target = np.where(rng.random((n, m)) < 0.15, target, np.nan)
    return bars, target, spec, account, policy


# Record fields computed by cancellation from a larger field of the same record: that field
# sets their absolute scale (what is left after a liquidation is equity_before minus the loss).
MONEY_SERIES = ("equity", "cum_funding", "cum_fees", "capital_added")
SCALE_FIELD = {("liquidations", "equity_after"): "equity_before",
               ("liquidations", "clearance_fee"): "equity_before",
               ("liquidations", "deficit"): "equity_before"}


def _close(a: np.ndarray, b: np.ndarray, what: str, scale_of: np.ndarray | None = None) -> None:
    """Equal to 1e-9 relative, with an absolute floor of 1e-9 times the largest magnitude in the
    same column: two correct implementations that add in a different order differ by
    cancellation error of that size (e.g. a liquidation leaving 0.000147 coin of a 5,344 coin
    balance, then valued at 30,000 USD per coin)."""
    a2 = a.astype(np.float64).reshape(a.shape[0], -1 if a.size else 1)
    b2 = b.astype(np.float64).reshape(b.shape[0], -1 if b.size else 1)
    fin = lambda x: np.where(np.isfinite(x), np.abs(x), 0.0)  # noqa: E731
    scale = np.maximum(fin(a2).max(axis=0, initial=0.0), fin(b2).max(axis=0, initial=0.0))
    if scale_of is not None and scale_of.size:
        scale = np.maximum(scale, fin(scale_of.astype(np.float64)).max())
    with np.errstate(invalid="ignore"):
        bad = ~((a2 == b2) | (np.abs(a2 - b2) <= 1e-9 * np.abs(b2) + 1e-9 * scale))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise AssertionError(f"{what}: row {i}, column {j}: kernel {a2[i, j]!r} != reference {b2[i, j]!r} "
                             f"(column scale {scale[j]:.6g}); {int(bad.sum())} value(s) differ")


def assert_same(seed: int, sparse: bool = False) -> None:
    bars, target, spec, account, policy = make_case(seed, sparse)
    res = simulate_perp(bars, target, spec, account, policy)
    series, records = raw_outputs(res)
    ref_series, ref_records = simulate_reference(bars, target, spec, account, policy)
    # money series are measured against the account's size (what cancellation errors scale with)
    money = res.initial_capital.max() * (bars.mark_close.max() if spec.inverse else 1.0)
    for name in SERIES:
        a, b = series[name], ref_series[name]
        assert np.isfinite(a).all(), f"seed {seed}: non-finite values in kernel {name}"
        scale = np.array([res.initial_capital.max()]) if name in MONEY_SERIES else None
        if name == "equity_usd":
            scale = np.array([money])
        if name == "liq_price" and spec.inverse:
            # an inverse contract's liquidation price is the root of a line in 1/P: compare 1/P,
            # the formula's own variable, to 1e-9 of 1/mark (a root far beyond the mark, from a
            # nearly flat line, is ill-conditioned in P: 1.4529624e13 from either order of adding)
            a, b = (np.divide(1.0, x, out=np.zeros_like(x), where=x > 0.0) for x in (a, b))
            scale = np.array([1.0 / bars.mark_close.min()])
        _close(a, b, f"seed {seed}: series {name}", scale)
    for name in RECORD_DTYPES:
        a, b = records[name], ref_records[name]
        assert len(a) == len(b), f"seed {seed}: {name}: kernel {len(a)} records, reference {len(b)}"
        for field in RECORD_DTYPES[name].names:
            ref_field = SCALE_FIELD.get((name, field))
            _close(a[field], b[field], f"seed {seed}: {name}.{field}",
                   None if ref_field is None else b[ref_field])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_kernel_equals_reference(seed):
    assert_same(seed)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
@example(seed=0)
def test_kernel_equals_reference_many(seed):
    assert_same(seed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_kernel_equals_reference_sparse_targets(seed):
    assert_same(seed, sparse=True)


@pytest.mark.slow
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_kernel_equals_reference_sparse_targets_many(seed):
    assert_same(seed, sparse=True)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_sparse_and_dense_kernels_agree_exactly(seed, sparse, monkeypatch):
    """The kernel's two specialisations (quiet stretches or not) on the same case, whichever
    one the target's density would pick: the same numbers to the last bit, every series stored
    and every record."""
    bars, target, spec, account, policy = make_case(seed, sparse)
    runs = []
    for share in (0.0, 2.0):  # 0: dense always; 2: sparse always
        monkeypatch.setattr(engine_core, "SPARSE_MAX_ORDER_SHARE", share)
        runs.append(raw_outputs(simulate_perp(bars, target, spec, account, policy)))
    (s_dense, r_dense), (s_sparse, r_sparse) = runs
    for name in SERIES:
        np.testing.assert_array_equal(s_sparse[name], s_dense[name], err_msg=f"seed {seed}: series {name}")
    for name in RECORD_DTYPES:
        np.testing.assert_array_equal(r_sparse[name], r_dense[name], err_msg=f"seed {seed}: {name}")


# ------------------------------------------------------------------------------------------
# In-loop policies: every setting of drawdown control and CPPI, on both implementations
# ------------------------------------------------------------------------------------------

def make_policy_case(seed: int, sparse: bool = False):
    """A random case in which every column runs an in-loop policy, its settings drawn over their
    whole valid range (drawdown: ``max_drawdown``, ``floor``; CPPI: ``multiplier``, ``floor``,
    ``ratchet``; both: ``max_exposure``), with targets that hold a short (and sometimes a long) for
    many bars, so that equity paths, running peaks and floors move the factor."""
    bars, _, spec, account, _ = make_case(seed, sparse)
    rng = np.random.default_rng([seed, 1])
    n, m = bars.n, len(account.margin_mode)
    kind = list(rng.choice(["drawdown", "cppi"], m))
    policy = Policy(
        kind=kind,
        max_drawdown=list(rng.uniform(0.01, 1.0, m)),
        floor=list(rng.uniform(0.0, 0.99, m)),
        multiplier=list(np.exp(rng.uniform(np.log(0.1), np.log(20.0), m))),
        ratchet=list(rng.random(m) < 0.5),
        max_exposure=list(np.where(rng.random(m) < 0.4, np.inf, rng.uniform(0.2, 6.0, m))),
    )
    # a direction and scale per column, re-sent every few bars (the factor is applied at each order)
    scale = rng.choice([-3.0, -1.0, -0.5, 1.0], m)
    every = rng.integers(1, 4, m)
    target = np.where(np.arange(n)[:, None] % every[None, :] == 0, scale[None, :], np.nan)
    if sparse:
        target = np.where(rng.random((n, m)) < 0.2, scale[None, :], np.nan)
    return bars, target, spec, account, policy


def assert_policy_case_same(seed: int, sparse: bool) -> None:
    bars, target, spec, account, policy = make_policy_case(seed, sparse)
    res = simulate_perp(bars, target, spec, account, policy)
    series, records = raw_outputs(res)
    ref_series, ref_records = simulate_reference(bars, target, spec, account, policy)
    for name in ("equity", "position", "cum_fees"):
        _close(series[name], ref_series[name], f"seed {seed}: series {name}", np.array([res.initial_capital.max()]))
    for name in ("fills", "liquidations"):
        assert len(records[name]) == len(ref_records[name]), f"seed {seed}: {name}"
        for field in ("bar", "size"):
            _close(records[name][field], ref_records[name][field], f"seed {seed}: {name}.{field}")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), sparse=st.booleans())
@example(seed=25630, sparse=False)  # an order at the minimum notional up to the last bits (a tie of the rule)
def test_kernel_equals_reference_under_every_in_loop_policy_setting(seed, sparse):
    assert_policy_case_same(seed, sparse)


# (kind, setting, per-column values): columns differ only in that setting
ONE_SETTING = [
    ("drawdown", "max_drawdown", [0.05, 0.2, 1.0]),
    ("drawdown", "floor", [0.0, 0.5, 0.9]),
    ("drawdown", "max_exposure", [np.inf, 1.5, 0.5]),
    ("cppi", "multiplier", [0.5, 2.0, 6.0]),
    ("cppi", "floor", [0.0, 0.5, 0.9]),
    ("cppi", "ratchet", [False, True]),
    ("cppi", "max_exposure", [np.inf, 1.5, 0.5]),
]


@pytest.mark.parametrize("kind, setting, values", ONE_SETTING, ids=[f"{k}-{s}" for k, s, _ in ONE_SETTING])
def test_each_policy_setting_changes_the_result_the_same_way_in_both(kind, setting, values):
    """A falling-then-rising path under a -2 target re-sent every bar: each setting changes the
    positions (it is read), and the kernel and the reference read it the same way."""
    n = 48
    t = np.arange(n)
    close = 100.0 * np.exp(np.concatenate([np.linspace(0.0, -0.3, n // 2), np.linspace(-0.3, 0.1, n - n // 2)]))
    close *= np.exp(0.01 * np.sin(t))
    open_ = np.concatenate([[100.0], close[:-1]])
    high, low = np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998
    ts = 1_650_000_000_000 - 1_650_000_000_000 % HOUR + t.astype(np.int64) * HOUR
    bars = PerpBars.from_arrays(ts, open_, high, low, close, open_, high, low, close, bar_ms=HOUR)
    spec = MarketSpec(symbol="T/USDT:USDT", inverse=False, contract_size=1.0, settle="USDT", taker_fee=0.0,
                      maker_fee=0.0, lot_size=0.0, min_notional=0.0, liquidation_fee_rate=0.0125,
                      tiers=TierTable.from_ccxt([{"minNotional": 0.0, "maxNotional": 1e18,
                                                  "maintenanceMarginRate": 0.004, "maxLeverage": 125.0}]))
    base = {"kind": kind, "max_drawdown": 0.3, "floor": 0.5, "multiplier": 3.0, "ratchet": True,
            "max_exposure": np.inf}
    policy = Policy(**(base | {setting: values}))
    target = np.full((n, len(values)), -2.0)
    account = Account(initial_capital=10_000.0, leverage=10.0)
    res = simulate_perp(bars, target, spec, account, policy)
    series, _ = raw_outputs(res)
    ref_series, _ = simulate_reference(bars, target, spec, account, policy)
    for name in ("equity", "position"):
        _close(series[name], ref_series[name], f"{kind}.{setting}: {name}", np.array([10_000.0]))
    pos = series["position"]
    for a in range(len(values)):
        for b in range(a + 1, len(values)):
            assert not np.allclose(pos[:, a], pos[:, b]), f"{kind}.{setting}={values[a]!r} and {values[b]!r} agree"


@pytest.mark.parametrize("seed", range(60))
def test_non_bool_ratchet_is_refused_by_both(seed):
    """Once the kernel read ``ratchet > 0.5`` and the reference ``ratchet != 0``: 50 of 60 such
    cases disagreed. Now a number is no ratchet value at all, in either implementation."""
    bars, target, spec, account, policy = make_case(seed)
    m = len(policy.kind)
    bad = list(np.random.default_rng(seed).uniform(0.0, 1.0, m))
    policy = Policy(kind="cppi", floor=policy.floor, multiplier=policy.multiplier, ratchet=bad)
    for run in (simulate_perp, simulate_reference):
        with pytest.raises(SettingsError, match=r"Policy\.ratchet=.* must be True or False"):
            run(bars, target, spec, account, policy)


# Seeds that once failed are kept here so they run on every build.
REGRESSION_SEEDS: list[int] = [0, 2, 3, 11, 33, 216, 230, 318, 409, 1482, 4528, 228546, 5373, 301887, 12733573,
                              112676]


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_kept_seeds(seed):
    assert_same(seed)
