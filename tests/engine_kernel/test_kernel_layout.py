"""How the kernel lays out its work: record buffers sized per column, targets read in any memory
order without a copy, many columns at once, and series derived on first access."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.engine import Account, Policy, simulate_perp
from backtest.engine import core as engine_core
from backtest.engine.core import raw_outputs
from backtest.engine.enums import RECORD_DTYPES, SERIES
from backtest.engine.reference import simulate_reference
from backtest.result import REQUIRED_SERIES, LazyRecords, LazySeries
from tests.engine.scenario_kit import make_bars, make_spec
from tests.engine_kernel.test_kernel_vs_reference import _close, assert_same, make_case


def _same_outputs(a, b) -> None:
    sa, ra = raw_outputs(a)
    sb, rb = raw_outputs(b)
    for k in SERIES:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    for k in RECORD_DTYPES:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)


def _matches_reference(res, bars, target, spec, account) -> None:
    series, records = raw_outputs(res)
    ref_series, ref_records = simulate_reference(bars, target, spec, account, Policy())
    for k in SERIES:
        _close(series[k], ref_series[k], k, res.initial_capital)
    for k in RECORD_DTYPES:
        assert len(records[k]) == len(ref_records[k]), k
        for f in RECORD_DTYPES[k].names:
            _close(records[k][f], ref_records[k][f], f"{k}.{f}")


def _rising(n: int, step: float, gap: float = 1.0) -> list[tuple[float, float, float, float]]:
    """Bars that rise every bar (each opening ``gap`` times above the last close)."""
    rows, close = [], 100.0
    for _ in range(n):
        o = close * gap
        close = o * (1.0 + step)
        rows.append((o, close * 1.002, o * 0.999, close))
    return rows


def test_liquidated_every_bar_fills_the_liquidation_capacity():
    """Continue after liquidation: a 5x short on 50x isolated margin, re-opened every bar into bars
    that rise 5 %, is liquidated at every bar's high and keeps 90 % of the equity to re-open. The
    liquidation records reach the bound (one per target order) and equal the reference."""
    n = 30
    bars = make_bars(_rising(n, 0.05))
    spec = make_spec(lot=0.0)
    account = Account(initial_capital=1_000.0, leverage=50.0, margin_mode="isolated",
                      after_liquidation="continue", margin_call_response="none", lag=1)
    target = np.full((n, 3), -5.0)
    target[::2, 1] = np.nan  # a target every other bar
    res = simulate_perp(bars, target, spec, account)
    liq = res.records["liquidations"]
    per_col = np.bincount(liq["col"], minlength=3)
    assert per_col[0] == n - 1 and per_col[2] == n - 1  # one per target order: the capacity
    assert per_col[1] == np.count_nonzero(~np.isnan(target[: n - 1, 1]))
    np.testing.assert_array_equal(liq["bar"][liq["col"] == 0], np.arange(1, n))  # one per bar
    _matches_reference(res, bars, target, spec, account)


def test_margin_call_reduce_every_bar_stays_within_capacity():
    """The reduce response cuts the position on every rising bar, on top of a target order per
    bar: up to two fills per bar, the bound for a reduce column."""
    n = 40
    bars = make_bars(_rising(n, 0.04))  # 15x on 20x isolated: the call is 3.7 % up, liquidation 4.6 %
    spec = make_spec(lot=0.0)
    account = Account(initial_capital=1_000.0, leverage=20.0, margin_mode="isolated", margin_call_threshold=0.3,
                      margin_call_response="reduce", margin_call_target=0.1, lag=1)
    target = np.full((n, 2), -15.0)
    res = simulate_perp(bars, target, spec, account)
    fills = res.records["fills"]
    reasons = np.bincount(fills["reason"][fills["col"] == 0], minlength=2)
    assert reasons[0] == n - 1 and reasons[1] == n - 1  # a target order and a call reduce every bar
    _matches_reference(res, bars, target, spec, account)


def test_capacity_guard_refuses_to_return_overflowing_records(monkeypatch):
    """Were a capacity bound wrong, the extra records go to a spare slot and the run fails
    loudly instead of returning another column's records or writing past the buffer."""
    n = 20
    bars = make_bars(_rising(n, 0.01))
    real = engine_core.nb.record_caps_nb

    def too_small(*args):
        caps = real(*args).copy()
        caps[0] = 3  # room for 3 fills per column
        return caps

    monkeypatch.setattr(engine_core.nb, "record_caps_nb", too_small)
    with pytest.raises(RuntimeError, match=r"column 0 wrote 19 fills records, more than the 3"):
        simulate_perp(bars, np.full((n, 2), -2.0), make_spec(lot=0.0), Account(lag=1))


# the kernel's two specialisations, forced: 0 = dense always, 2 = sparse (quiet stretches) always
SPECIALISATIONS = pytest.mark.parametrize("share", [0.0, 2.0], ids=["dense", "sparse"])


@SPECIALISATIONS
@pytest.mark.parametrize("seed", [5, 17, 404])
def test_many_columns_equal_each_column_alone(seed, share, monkeypatch):
    """Twelve columns with different settings in one call equal each column simulated on its
    own (the record buffers are shared, each column writing its own slice)."""
    monkeypatch.setattr(engine_core, "SPARSE_MAX_ORDER_SHARE", share)
    bars, _, spec, _, _ = make_case(seed)
    rng = np.random.default_rng(seed)
    n, m = bars.n, 12
    target = rng.choice([-10.0, -3.0, -1.0, 0.0, 2.0, np.nan], (n, m))
    maxlev = float(spec.tiers.rows[0, 4])
    cols = [dict(
        initial_capital=1.0 if spec.inverse else 10_000.0,
        margin_mode=str(rng.choice(["isolated", "cross"])),
        leverage=min(float(rng.choice([2.0, 10.0, 50.0])), maxlev),
        margin_call_threshold=0.6,
        margin_call_response=str(rng.choice(["none", "reduce", "top_up"])),
        margin_call_target=0.3,
        reserve=0.5 if spec.inverse else 5_000.0,
        after_liquidation=str(rng.choice(["stop", "continue"])),
        excess=str(rng.choice(["clip", "reject"])),
        fee_rate=float(rng.choice([0.0, 0.0005])),
    ) for _ in range(m)]
    whole = simulate_perp(bars, target, spec, Account(lag=1, **{k: [c[k] for c in cols] for k in cols[0]}))
    per_col_records: dict[str, list] = {k: [] for k in RECORD_DTYPES}
    for j in range(m):
        one = simulate_perp(bars, target[:, j], spec, Account(lag=1, **cols[j]))
        for k in SERIES:
            np.testing.assert_array_equal(whole.series[k][:, j], one.series[k][:, 0], err_msg=f"{k} column {j}")
        for k in RECORD_DTYPES:
            r = one.records[k].copy()
            r["col"] = j
            per_col_records[k].append(r)
    for k in RECORD_DTYPES:
        np.testing.assert_array_equal(whole.records[k], np.concatenate(per_col_records[k]), err_msg=k)
    assert len(whole.records["fills"]) > 0


@SPECIALISATIONS
def test_target_memory_orders_give_the_same_run(share, monkeypatch):
    """Row-major, column-major, a strided view and broadcast rows or columns: one result."""
    monkeypatch.setattr(engine_core, "SPARSE_MAX_ORDER_SHARE", share)
    bars, _, spec, account, policy = make_case(7)
    n = bars.n
    m = 3
    rng = np.random.default_rng(1)
    full = np.ascontiguousarray(rng.choice([-5.0, -1.0, 0.0, 1.0, np.nan], (n, m)))
    account = Account(lag=1, leverage=min(5.0, float(spec.tiers.rows[0, 4])),
                      initial_capital=1.0 if spec.inverse else 10_000.0)
    base = simulate_perp(bars, full, spec, account)
    _same_outputs(base, simulate_perp(bars, np.asfortranarray(full), spec, account))
    wide = np.empty((n, 2 * m))
    wide[:, ::2] = full
    _same_outputs(base, simulate_perp(bars, wide[:, ::2], spec, account))  # not contiguous
    row = full[3:4]
    _same_outputs(simulate_perp(bars, np.repeat(row, n, axis=0), spec, account),
                  simulate_perp(bars, row, spec, account))  # (1, m) broadcast over bars
    col = full[:, :1]
    _same_outputs(simulate_perp(bars, np.repeat(col, m, axis=1), spec, account),
                  simulate_perp(bars, col, spec, Account(lag=1, leverage=account.leverage,
                                                         initial_capital=[account.initial_capital] * m)))


@SPECIALISATIONS
def test_series_are_derived_on_first_access_and_equal_the_reference(share, monkeypatch):
    """The kernel stores equity, and the position series in the dense specialisation (the sparse
    one records the position's changes); the position then, equity in USD, notional, leverage
    and the running totals are derived when first read, from the bars, the stored series and the
    records, and equal the reference."""
    monkeypatch.setattr(engine_core, "SPARSE_MAX_ORDER_SHARE", share)
    seed = 230  # a kept seed with funding, fees, calls and liquidations
    bars, target, spec, account, policy = make_case(seed)
    res = simulate_perp(bars, target, spec, account, policy, series=("equity",))
    assert isinstance(res.series, LazySeries)
    assert set(res.series) == set(REQUIRED_SERIES) and "liq_price" not in res.series
    stored = {"equity"} if share > 1.0 else {"equity", "position"}
    assert set(res.series.derived()) == set(REQUIRED_SERIES) - stored
    ref_series, _ = simulate_reference(bars, target, spec, account, policy)
    sub = res.select([0])
    for name in REQUIRED_SERIES:
        _close(res.series[name], ref_series[name], name, np.array([res.initial_capital.max() * 1e5]))
        np.testing.assert_array_equal(sub.series[name][:, 0], res.series[name][:, 0])
    assert res.series.derived() == []
    assert_same(seed)  # the default run (all series, margin ratio and liquidation price) too


@SPECIALISATIONS
@pytest.mark.parametrize("sparse_target", [False, True], ids=["orders", "sparse_orders"])
def test_sweep_outputs_equal_the_full_run(sparse_target, share, monkeypatch):
    """Storing fewer series (``series=("equity",)``) takes other code paths in the kernel (no
    liquidation price or margin ratio to write: quiet stretches skip the per-bar checks once the
    stretch's most adverse mark is found safe); equity, position and every record are the same
    numbers as in the full run, which is checked against the reference."""
    monkeypatch.setattr(engine_core, "SPARSE_MAX_ORDER_SHARE", share)
    for seed in range(120):
        bars, target, spec, account, policy = make_case(seed, sparse=sparse_target)
        full = simulate_perp(bars, target, spec, account, policy)
        lean = simulate_perp(bars, target, spec, account, policy, series=("equity",))
        for k in ("equity", "position"):
            np.testing.assert_array_equal(lean.series[k], full.series[k], err_msg=f"seed {seed}: {k}")
        for k in RECORD_DTYPES:
            np.testing.assert_array_equal(lean.records[k], full.records[k], err_msg=f"seed {seed}: {k}")


@pytest.mark.parametrize("kind", [LazySeries, LazyRecords])
def test_lazy_mappings_behave_like_a_dict(kind):
    calls = []

    def make():
        calls.append(1)
        return np.ones((2, 1))

    s = kind({"a": np.zeros((2, 1))}, {"b": make}, order=("b", "a"))
    assert list(s) == ["b", "a"] and len(s) == 2 and "b" in s and "c" not in s
    assert calls == []
    assert s["b"].sum() == 2 and s["b"] is s["b"] and calls == [1]
    with pytest.raises(KeyError):
        s["c"]
    with pytest.raises(ValueError, match="both stored and derived"):
        kind({"a": np.zeros(1)}, {"a": make})


@SPECIALISATIONS
def test_fill_and_funding_records_are_built_from_the_compact_kernel_output(share, monkeypatch):
    """The kernel writes 32-byte fills (no column, no notional) and, per funding print and
    column, the position that paid it; the records are built on first read, with the column
    from each fill's place, ``notional = |size| * v(price)`` and ``amount = -position * v(mark)
    * rate``, and equal the reference's records field by field (linear and inverse cases)."""
    monkeypatch.setattr(engine_core, "SPARSE_MAX_ORDER_SHARE", share)
    assert engine_core.KERNEL_RECORD_DTYPES["fills"].itemsize == 32
    inverse_seen = funded = 0
    for seed in range(40):
        bars, target, spec, account, policy = make_case(seed)
        res = simulate_perp(bars, target, spec, account, policy, series=("equity",))
        assert isinstance(res.records, LazyRecords)
        assert set(res.records.derived()) == {"fills", "funding"}
        _, ref = simulate_reference(bars, target, spec, account, policy)
        for name in ("fills", "funding"):
            got = res.records[name]
            assert got.dtype == RECORD_DTYPES[name]
            assert len(got) == len(ref[name]), (seed, name)
            for f in RECORD_DTYPES[name].names:
                _close(got[f], ref[name][f], f"seed {seed}: {name}.{f}")
        assert res.records.derived() == []
        inverse_seen += bool(spec.inverse)
        funded += len(res.records["funding"]) > 0
    assert inverse_seen and funded  # both contract types, and funding paid, were exercised


def test_results_pickle_with_their_derived_series():
    """A result crosses process boundaries (multiprocessing, joblib, caches): the derived
    series are computed on the way."""
    import pickle

    bars, target, spec, account, policy = make_case(230)
    res = simulate_perp(bars, target, spec, account, policy, series=("equity",))
    back = pickle.loads(pickle.dumps(res))
    assert back.series.derived() == []
    for name in res.series:
        np.testing.assert_array_equal(back.series[name], res.series[name], err_msg=name)
    for name in RECORD_DTYPES:
        np.testing.assert_array_equal(back.records[name], res.records[name], err_msg=name)


@SPECIALISATIONS
def test_a_dropped_result_frees_its_buffers_at_once(share, monkeypatch):
    """A result holds no reference cycle (the lazy series and records refer to the kernel's
    buffers, never back to the result), so a sweep loop that drops each result gives its
    memory back at once instead of at the next garbage collection."""
    import gc
    import weakref

    monkeypatch.setattr(engine_core, "SPARSE_MAX_ORDER_SHARE", share)
    bars, target, spec, account, policy = make_case(230)
    res = simulate_perp(bars, target, spec, account, policy, series=("equity",))
    res.series["notional"]  # a derived series that reads the position
    refs = [weakref.ref(res), weakref.ref(res.series), weakref.ref(res.records)]
    was = gc.isenabled()
    gc.disable()
    try:
        del res
        assert [r() is None for r in refs] == [True] * 3
    finally:
        if was:
            gc.enable()


def test_sparse_records_do_not_hold_the_whole_buffer():
    """Records using under half of their buffer are copied out, so the buffer is freed."""
    bars, target, spec, account, policy = make_case(230)
    sparse = np.full_like(target, np.nan)
    sparse[0] = -1.0
    res = simulate_perp(bars, sparse, spec, account, policy)
    for name in RECORD_DTYPES:
        rec = res.records[name]
        assert rec.base is None or rec.base.nbytes <= 2 * rec.nbytes + rec.dtype.itemsize, name


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", [(50, 7), (50, 1), (1, 7), (1, 1), (200, 130)])
@pytest.mark.parametrize("lag", [0, 1, 3])
def test_record_bounds_count_the_target_in_any_layout(order, shape, lag):
    """The target scan reads the target in its own memory order (row chunks or whole columns);
    the record bounds counted from its bitmap equal numpy's counts on the broadcast (bars,
    columns) view, and it flags the columns holding an infinite value (in any row), whatever the
    layout, the lag and where the infinite values are."""
    rng = np.random.default_rng(sum(shape) + lag)
    n, m = 50 if shape[0] == 1 else shape[0], 7 if shape[1] == 1 else shape[1]
    tgt = rng.normal(size=shape)
    tgt[rng.random(shape) < 0.4] = np.nan
    if shape[0] > 1:
        tgt[-1, 0] = np.inf  # a row the lag may push past the last bar: still an error
    if shape[0] > 2 and shape[1] > 1:
        tgt[[2, 1], [shape[1] - 1, shape[1] - 1]] = [-np.inf, np.inf]  # first in row order: row 1
    tgt = np.asarray(tgt, order=order)
    flat, rs, cs = engine_core._flat(tgt)
    resp = np.array([1, 0] * m)[:m]  # reduce on even columns
    after = np.array([0, 1, 1] * m)[:m]  # stop after a liquidation on every third column
    bits, has_inf = engine_core.nb.target_scan_nb(flat, rs, cs, tgt.shape[0], tgt.shape[1],
                                                  min(tgt.shape[0], max(n - lag, 0)))
    caps = engine_core.nb.record_caps_nb(bits, tgt.shape[0], lag, n, resp, after)

    full = np.broadcast_to(tgt, (tgt.shape[0], m))
    reach = full[: max(n - lag, 0)]  # target rows that reach a bar
    orders = (~np.isnan(reach)).sum(axis=0) * (max(n - lag, 0) if tgt.shape[0] == 1 else 1)
    np.testing.assert_array_equal(caps[0], orders + np.where(resp == 1, n, 0))  # fills
    np.testing.assert_array_equal(caps[1], np.full(m, n))  # margin calls
    np.testing.assert_array_equal(caps[2], np.where(after == 0, np.minimum(orders, 1), orders))  # liquidations
    np.testing.assert_array_equal(caps[3], caps[0] + caps[2])  # position changes: a fill or a liquidation
    np.testing.assert_array_equal(has_inf, np.isinf(tgt).any(axis=0))


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("shape", [(50, 7), (50, 1), (64, 3), (65, 2), (200, 130)])
@pytest.mark.parametrize("lag", [0, 1, 3])
def test_target_bitmap_marks_the_rows_with_a_value_in_any_layout(order, shape, lag):
    """Bit t % 64 of word t // 64 is set exactly for the target rows holding a value that reach
    a bar (row + lag < bars), whatever the memory order; word boundaries included."""
    rng = np.random.default_rng(sum(shape) + lag)
    n = shape[0]
    tgt = rng.normal(size=shape)
    tgt[rng.random(shape) < 0.7] = np.nan
    tgt = np.asarray(tgt, order=order)
    flat, rs, cs = engine_core._flat(tgt)
    last = max(n - lag, 0)
    bits, has_inf = engine_core.nb.target_scan_nb(flat, rs, cs, n, shape[1], last)
    assert not has_inf.any()
    assert bits.shape == ((last + 63) // 64, shape[1])
    rows = np.arange(bits.shape[0] * 64)
    got = (bits[rows // 64] >> (rows % 64)[:, None].astype(np.uint64)) & np.uint64(1)
    want = np.zeros_like(got)
    want[:last] = ~np.isnan(tgt[:last])
    np.testing.assert_array_equal(got, want)


def test_stretch_extremes_equal_numpy_on_every_range():
    """The four-chain running extreme of a stretch (``range_max_nb``) is numpy's max (sg = 1)
    or min (sg = -1) for every range of every length, the unrolled part and the tail."""
    rng = np.random.default_rng(7)
    a = 30_000.0 * np.exp(rng.normal(0, 0.01, 41))
    a[17] = a[18] = a.max() * 1.5  # a tie at the top
    for i in range(len(a)):
        for end in range(i + 1, len(a) + 1):
            assert engine_core.nb.range_max_nb(a, i, end, 1.0) == a[i:end].max()
            assert engine_core.nb.range_max_nb(a, i, end, -1.0) == a[i:end].min()


def test_without_funding_prints_a_held_position_is_valued_in_one_stretch(monkeypatch):
    """With no funding print and one tier table, nothing ends a held position's quiet stretch
    but its next order: the sparse kernel values the bars after the order in one stretch up to
    the last bar (or the first mark that reaches the call level), and gives the dense kernel's
    numbers bit for bit, which equal the reference's; a rising mark then reaches the call
    level inside the stretch and the general bar takes over (calls, then the liquidation)."""
    n = 200
    rows, close = [], 100.0
    for t in range(n):
        o = close
        close = o * (1.0 + (0.002 if t < 150 else 0.03) * np.sin(t) ** 2)
        rows.append((o, max(o, close) * 1.001, min(o, close) * 0.999, close))
    bars = make_bars(rows)
    assert bars.fe_bar.shape[0] == 0
    spec = make_spec(lot=0.0)
    account = Account(initial_capital=1_000.0, leverage=20.0, margin_mode="isolated", lag=1)
    target = np.full((n, 2), np.nan)
    target[0] = [-2.0, -8.0]
    runs = {}
    for share in (0.0, 2.0):
        monkeypatch.setattr(engine_core, "SPARSE_MAX_ORDER_SHARE", share)
        runs[share] = simulate_perp(bars, target, spec, account)
    _same_outputs(runs[0.0], runs[2.0])
    _matches_reference(runs[2.0], bars, target, spec, account)
    assert len(runs[2.0].records["margin_calls"]) and len(runs[2.0].records["liquidations"])
