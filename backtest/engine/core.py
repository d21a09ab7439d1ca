"""Pandas-facing wrapper of the perpetual engine: validate, call the kernel, wrap the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from backtest.engine import nb
from backtest.engine.bars import EngineInputError, PerpBars
from backtest.engine.buffers import POOL
from backtest.engine.enums import RECORD_DTYPES, SERIES, fill_nb_dt, position_change_dt
from backtest.engine.settings import (Account, CallResponse, Policy, SettingsError, account_arrays,
                                      lookahead_notes, per_column_fields, policy_arrays)
from backtest.market import TIER_MAXLEV, MarketSpec
from backtest.result import LazyRecords, LazySeries, SimResult


def _bars_from(data: Any) -> PerpBars:
    if isinstance(data, PerpBars):
        return data
    to_bars = getattr(data, "to_perp_bars", None)  # the loader's MarketData
    if callable(to_bars):
        return to_bars()
    if isinstance(data, pd.DataFrame):
        return PerpBars.from_frame(data)
    raise EngineInputError(
        f"data must be PerpBars, a loader MarketData or a DataFrame, got {type(data).__name__}")


def _flat(arr: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The target's memory as a 1-D array plus element strides (0 for a broadcast dimension of
    size 1), without a copy for a row- or column-major array."""
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.ascontiguousarray(arr)
    rs, cs = (s // arr.itemsize for s in arr.strides)
    # always a read-only view: numba types a read-only array apart from a writable one, so a target
    # that pandas hands out read-only (copy-on-write) and a writable one would compile the kernel
    # twice (measured: 40 s of the main job's first run); the kernel never writes to it
    flat = arr.ravel(order="K").view()
    flat.flags.writeable = False
    return (flat, rs if arr.shape[0] > 1 else 0, cs if arr.shape[1] > 1 else 0)


def _target_2d(target: Any, n: int) -> tuple[np.ndarray, pd.Index | None]:
    cols = None
    if isinstance(target, pd.DataFrame):
        cols = target.columns
        arr = target.to_numpy(dtype=np.float64)
    elif isinstance(target, pd.Series):
        cols = pd.Index([target.name if target.name is not None else "target"])
        arr = target.to_numpy(dtype=np.float64)[:, None]
    else:
        arr = np.asarray(target, dtype=np.float64)
        if arr.ndim == 0:
            arr = arr.reshape(1, 1)
        elif arr.ndim == 1:
            arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] not in (1, n):
        raise EngineInputError(
            f"target has shape {arr.shape}; expected (n_bars={n}, n_cols) or (1, n_cols): align it to the bars")
    return arr, cols  # either memory order: the kernel reads each column's rows in turn


def call_kernel(sparse: bool, bars: PerpBars, flat: tuple, lag: int, spec: MarketSpec, tier_tables: tuple,
                acc: dict, pol: dict, omap: np.ndarray, out: np.ndarray, bufs: list, fpos: np.ndarray,
                starts: np.ndarray, caps: np.ndarray, bits: np.ndarray) -> tuple:
    """The engine kernel (:func:`nb.simulate_sparse_nb` or :func:`nb.simulate_dense_nb`) on
    prepared inputs: the one place that lays out its arguments (``simulate_perp`` and the Monte
    Carlo paths of ``backtest.stress.paths`` call it).

    ``flat``: (target values, row stride, column stride) of :func:`_flat`; ``tier_tables``:
    ``spec.tier_arrays``'s (tiers, ntiers, tier_ver); ``acc``, ``pol``: :func:`account_arrays`
    and :func:`policy_arrays`; ``bufs``: the fill, margin-call, liquidation and position-change
    record buffers; the rest as :func:`nb.simulate_nb` documents. Returns its record counts."""
    tflat, trs, tcs = flat
    tiers, ntiers, tier_ver = tier_tables
    return (nb.simulate_sparse_nb if sparse else nb.simulate_dense_nb)(
        bars.open, bars.mark_open, bars.mark_high, bars.mark_low, bars.mark_close,
        bars.fe_bar, bars.fe_at_open, bars.fe_rate, bars.fe_mark,
        tflat, trs, tcs, lag, bool(spec.inverse), float(spec.contract_size), float(spec.lot_size),
        float(spec.min_notional), float(spec.liquidation_fee_rate),
        tiers, ntiers, tier_ver,
        acc["initial_capital"], acc["margin_mode"], acc["leverage"], acc["call_threshold"],
        acc["call_response"], acc["call_target"], acc["reserve"], acc["after_liq"], acc["excess"],
        acc["fee_rate"], acc["slippage"],
        pol["policy_kind"], pol["max_drawdown"], pol["floor"], pol["multiplier"], pol["ratchet"],
        pol["max_exposure"], omap, out, bufs[0], fpos, bufs[1], bufs[2], bufs[3], starts, caps, bits,
    )


def simulate_perp(
    data: Any,
    target: Any,
    spec: MarketSpec,
    account: Account | None = None,
    policy: Policy | None = None,
    columns: pd.Index | list | None = None,
    series: tuple[str, ...] | None = None,
) -> SimResult:
    """Simulate a perpetual position under a target exposure, for many columns at once.

    Parameters
    ----------
    data : PerpBars, a loader ``MarketData`` (``.frame`` + ``.funding``) or an aligned DataFrame.
    target : (n_bars, n_cols) signed exposure as a multiple of equity (negative = short, NaN =
        keep the position); a 1-D array or Series is one column; row t is filled at bar
        ``t + account.lag``'s open.
    spec : the market spec (contract size, linear/inverse, fees, tiers, clearance fee).
    account : account settings (scalars or one value per column).
    policy : in-loop leverage policy (drawdown control, CPPI), scalars or per column.
    columns : labels of the columns (default: the target's columns, else 0..n_cols-1).
    series : names of the per-bar series wanted (default all of ``enums.SERIES``); the
        :data:`backtest.result.REQUIRED_SERIES` are always available. The kernel stores
        ``equity``, the position (its series, or its changes when few bars have an order) and
        the wanted ones of ``margin_ratio`` and ``liq_price``; the others are derived on first
        access (README, "Outputs and memory"). Large sweeps that only need equity and events
        save memory and time with ``series=("equity",)``.

    Returns
    -------
    SimResult with series ``backtest.engine.enums.SERIES`` (settlement currency
    ``spec.settle``) and records ``fills``, ``funding``, ``margin_calls``, ``liquidations``
    (a :class:`backtest.result.LazyRecords`: fills and funding are built from the kernel's
    compact form when first read).
    """
    account = account or Account()
    policy = policy or Policy()
    bars = _bars_from(data)
    n = bars.n
    if n >= 2**31:  # the kernel's fill records hold the bar as int32
        raise EngineInputError(f"{n} bars is more than the engine's 2**31 - 1; split the run into shorter spans")
    tgt, tcols = _target_2d(target, n)
    m_candidates = [tgt.shape[1]]
    if columns is not None:
        m_candidates.append(len(columns))
    for settings in (account, policy):  # a list in any per-column setting gives the number of columns
        for f in per_column_fields(type(settings)):
            v = getattr(settings, f)
            if v is not None and not isinstance(v, str) and np.ndim(v) == 1:
                m_candidates.append(len(v))
    m = max(m_candidates)
    if tgt.shape[1] not in (1, m):
        raise EngineInputError(f"target has {tgt.shape[1]} columns but the settings give {m}; give 1 or {m}")
    acc = account_arrays(account, m, spec.taker_fee, n_bars=n)
    pol = policy_arrays(policy, m)
    tiers, ntiers, tier_ver = spec.tier_arrays(bars.timestamp)
    first_max = tiers[:, 0, TIER_MAXLEV].min()
    bad = acc["leverage"] > first_max
    if bad.any():
        j = int(np.argmax(bad))
        raise SettingsError(
            f"Account.leverage={acc['leverage'][j]} (column {j}) exceeds the tier maximum {first_max:g} of "
            f"{spec.symbol}; choose a leverage setting <= {first_max:g}")

    if columns is not None:
        cols = columns if isinstance(columns, pd.Index) else pd.Index(columns)
    elif tcols is not None and len(tcols) == m:
        cols = tcols
    else:
        cols = pd.RangeIndex(m)
    if len(cols) != m:
        raise EngineInputError(f"columns has {len(cols)} labels for {m} columns")

    wanted = SERIES if series is None else tuple(series)
    unknown = [s for s in wanted if s not in SERIES]
    if unknown:
        raise EngineInputError(f"unknown series {unknown}; choose from {', '.join(SERIES)}")
    nfe = bars.fe_bar.shape[0]
    lag = int(account.lag)
    tflat, trs, tcs = _flat(tgt)
    rows, last = tgt.shape[0], min(tgt.shape[0], max(n - lag, 0))  # last: the target rows that reach a bar
    bits, has_inf = nb.target_scan_nb(tflat, trs, tcs, rows, tgt.shape[1], last)
    if has_inf.any():  # the first infinite value in row order
        bad = np.isinf(np.broadcast_to(tgt, (rows, m)))
        i = int(np.argmax(bad.any(axis=1)))
        j = int(np.argmax(bad[i]))
        when = pd.Timestamp(int(bars.timestamp[i if rows > 1 else 0]), unit="ms", tz="UTC")
        raise EngineInputError(
            f"target is infinite at bar {i} ({when.isoformat()}), column {j}; use NaN to keep the position")
    caps = nb.record_caps_nb(bits, rows, lag, n, acc["call_response"], acc["after_liq"])
    # quiet stretches (the sparse specialisation) pay off when most bars have no order; the
    # target orders per column are the fill bound less the one reduce per bar (record_caps_nb)
    orders = caps[0] - np.where(acc["call_response"] == CallResponse.REDUCE, n, 0)
    sparse = bool(rows > 1 and orders.sum() <= SPARSE_MAX_ORDER_SHARE * n * m and n * m >= SPARSE_MIN_BAR_COLUMNS)
    if not sparse:
        caps[3] = 0  # the dense specialisation stores the position series, not its changes
    # the kernel writes what needs its state; the rest is derived on first access (_derived):
    # equity always (row 0), the position series in the dense specialisation (the sparse one
    # records its changes), then the optional ones wanted
    keep = ["equity"] + ([] if sparse else ["position"]) + [s for s in KERNEL_SERIES[2:] if s in wanted]
    omap = np.array([keep.index(s) if s in keep else -1 for s in SERIES], dtype=np.int64)
    # the large outputs in memory lent by the pool (a dropped result's buffers are written
    # again instead of fresh pages: buffers.py); margin calls and liquidations are rare, so
    # their buffers stay untouched virtual memory
    out = POOL.empty((len(keep), m, n), np.float64)
    starts = np.zeros_like(caps)
    np.cumsum(caps[:, :-1], axis=1, out=starts[:, 1:])
    bufs = [(POOL.empty if name in POOLED_RECORDS else np.empty)(int(caps[r].sum()) + 1, dt)  # + the spare slot
            for r, (name, dt) in enumerate(KERNEL_RECORD_DTYPES.items())]
    fpos = POOL.empty((m, nfe), np.float64, zero=True)  # the position that paid each print (0: none)
    counts = call_kernel(sparse, bars, (tflat, trs, tcs), lag, spec, (tiers, ntiers, tier_ver), acc, pol, omap, out,
                         bufs, fpos, starts, caps, bits)
    over = np.stack(counts) > caps
    if over.any():  # cannot happen while record_caps_nb's bounds hold; never return bad records
        r, j = np.argwhere(over)[0]
        raise RuntimeError(f"engine error: column {j} wrote {counts[r][j]} {list(KERNEL_RECORD_DTYPES)[r]} "
                           f"records, more than the {caps[r, j]} bounded by record_caps_nb; please report this")
    # the records, compacted (the position changes are read in place, from each column's start)
    kept = {name: _compact(bufs[r], counts[r], caps[r], starts[r]) for r, name in enumerate(KERNEL_RECORD_DTYPES)
            if name != "position_changes"}
    # the column of each compact fill, from the per-column counts (for the records and cum_fees)
    fill_cols = _once(lambda: np.repeat(np.arange(m, dtype=np.int64), counts[0]))

    records = LazyRecords(
        {"margin_calls": kept["margin_calls"], "liquidations": kept["liquidations"]},
        {"fills": lambda: _fill_records(kept["fills"], fill_cols(), spec),
         "funding": lambda: _funding_records(fpos, bars, spec)},
        tuple(RECORD_DTYPES))
    # the compact fills as the kernel wrote them (column order, ``counts[0]`` per column), for
    # reductions that need no records: a sweep's metrics read turnover and the fill counts from
    # them (``backtest.metrics.compute``) instead of building a chunk's million fill records
    records.compact_fills = {"fills": kept["fills"], "counts": counts[0], "contract_size": float(spec.contract_size),
                             "inverse": bool(spec.inverse)}
    stored = {name: out[k].T for k, name in enumerate(keep)}
    if sparse:  # built once, whether read as a series or through the notional (no reference cycle)
        position = _once(lambda: _position_series(bufs[3], starts[3], counts[3], n, m))
    else:
        pos_stored = stored["position"]
        position = lambda: pos_stored  # noqa: E731
    derived = _derived(stored, kept, fill_cols, fpos, bars, spec, n, m, position)
    if sparse:
        derived["position"] = position
    series = LazySeries(stored, derived, SERIES)
    price_usd = bars.mark_close.copy() if spec.inverse else np.ones(n)
    index = bars.index
    meta = {
        "instrument": "inverse_perp" if spec.inverse else "linear_perp",
        "symbol": spec.symbol,
        "exchange": spec.exchange,
        "bar_ms": bars.bar_ms,
        "contract_size": spec.contract_size,
        "liquidation_fee_rate": spec.liquidation_fee_rate,
        "lag": int(account.lag),
        "allow_lookahead": bool(account.allow_lookahead),
        "notes": lookahead_notes(account),
        # the smallest order the market allows (minimum notional, or one lot), in USD at the last
        # bar's mark, over each column's leverage: below this equity the column cannot trade
        # again (metrics: ``ruined``)
        "min_equity_usd": (spec.min_order_usd(float(bars.mark_close[-1])) / acc["leverage"]).tolist(),
        "settings": {k: v.tolist() for k, v in {**acc, **pol}.items()},
    }
    return SimResult(kind="perp", currency=spec.settle, index=index, columns=cols, series=series,
                     records=records, price_usd=price_usd, initial_capital=acc["initial_capital"].copy(),
                     meta=meta, underlying=bars.mark_close.copy())


# Above this share of bar-columns with a target order the kernel runs its dense specialisation
# (no quiet stretches: a tighter loop when most bars trade). On W2 (benchmarks/) the two are
# even at an order every 3 bars; the sparse one is 18 % faster every 4 bars, 25 % every 8.
SPARSE_MAX_ORDER_SHARE = 0.3
# ... and the work has at least this many bar-columns. Each specialisation is a separate numba
# compilation of the kernel (about 30 s of CPU on an empty cache, benchmarks/README.md "Start-up"),
# while below a million bar-columns the whole kernel takes milliseconds (W1, 525,600 x 1, runs
# in 3-6 ms), so the sparse one can save no more than that: a small run uses the dense one, and
# a run of small simulations (the main job: a rebalanced and a held short) compiles one kernel,
# not two. Both give the same numbers.
SPARSE_MIN_BAR_COLUMNS = 1_000_000

# The record buffers the kernel writes, in its order (fills in their compact form; funding is
# stored as the position that paid each print, ``fpos``).
KERNEL_RECORD_DTYPES = {"fills": fill_nb_dt, "margin_calls": RECORD_DTYPES["margin_calls"],
                        "liquidations": RECORD_DTYPES["liquidations"], "position_changes": position_change_dt}

POOLED_RECORDS = ("fills", "position_changes")

# Series that need the kernel's state. The others follow from these, the bars and the records.
KERNEL_SERIES = ("equity", "position", "margin_ratio", "liq_price")  # equity always; position: dense


def _derived(stored: dict[str, np.ndarray], kept: dict[str, np.ndarray], fill_cols: Callable[[], np.ndarray],
             fpos: np.ndarray, bars: PerpBars, spec: MarketSpec, n: int, m: int,
             position: Callable[[], np.ndarray]) -> dict:
    """How to compute the other series from what the kernel stored (the series, the compact
    fills, the position that paid each funding print; ``position()`` reads the position series,
    stored or derived), with the kernel's own formulas (README, "Engine semantics", step 6)."""
    eq, close = stored["equity"], bars.mark_close[:, None]

    def notional() -> np.ndarray:
        return position() * _value(close, spec)

    def leverage() -> np.ndarray:
        # np.where(eq > 0, |notional| / eq, 0) computed in one array, stored column by column, in
        # memory the pool lends (a dropped sweep chunk's): no temporaries of new pages chunk after chunk
        lev = POOL.empty((m, n)).T
        np.multiply(position(), _value(close, spec), out=lev)  # notional()
        np.abs(lev, out=lev)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(lev, eq, out=lev)
        lev[~(eq > 0.0)] = 0.0
        return lev

    # The cumulative series are stored column by column, as the kernel's (an (n_cols, n_bars)
    # array, transposed): the metrics read each column in place instead of copying it out of a
    # bar-by-bar array (benchmarks/README.md, "Sweeps"). The sums are the same in either layout.

    def cumulative(*flows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """Running total per column of (bar, column, amount) flows, valued at each bar's close."""
        tot = None
        for bar, col, amount in flows:
            if len(amount):
                if tot is None:
                    # the first flow summed per bar into zeroed pool memory, record after record
                    # (as np.bincount sums them: the same bits)
                    tot = POOL.empty(m * n, zero=True)
                    np.add.at(tot, col * n + bar, amount)
                else:
                    # a later flow (clearance fees: a few records) summed per bar it touches,
                    # then added there (elsewhere it adds 0: the same bits, no array of n x m)
                    bins, where = np.unique(col * n + bar, return_inverse=True)
                    tot[bins] += np.bincount(where, weights=amount)
        if tot is None:
            return np.zeros((m, n)).T  # no flow (no top-up in most runs): zeros, left untouched
        tot = tot.reshape(m, n)
        return np.cumsum(tot, axis=1, out=tot).T

    def cum_funding() -> np.ndarray:
        tot = POOL.empty((m, n), zero=True)
        if fpos.shape[1]:
            # per bar, the prints' amounts in print order (the order of the records' running total)
            amount = _funding_amounts(fpos, bars.fe_mark, bars.fe_rate, spec)
            first = np.flatnonzero(np.r_[True, bars.fe_bar[1:] != bars.fe_bar[:-1]])
            tot[:, bars.fe_bar[first]] = np.add.reduceat(amount, first, axis=1)
        return np.cumsum(tot, axis=1, out=tot).T

    def cum_fees() -> np.ndarray:
        fills, liqs = kept["fills"], kept["liquidations"]
        return cumulative((fills["bar"].astype(np.int64), fill_cols(), fills["fee"]),
                          (liqs["bar"], liqs["col"], liqs["clearance_fee"]))

    def capital_added() -> np.ndarray:
        calls = kept["margin_calls"]
        calls = calls[calls["response"] == CallResponse.TOP_UP]
        return cumulative((calls["bar"], calls["col"], calls["amount"]))

    return {
        # linear: USDT counts as USD, so equity_usd is the equity array itself (read-only use)
        "equity_usd": (lambda: eq * close) if spec.inverse else (lambda: eq),
        "notional": notional,
        "leverage": leverage,
        "cum_funding": cum_funding,
        "cum_fees": cum_fees,
        "capital_added": capital_added,
    }


def _once(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """``fn`` computed on the first call only."""
    memo: list[np.ndarray] = []

    def get() -> np.ndarray:
        if not memo:
            memo.append(fn())
        return memo[0]
    return get


def _position_series(changes: np.ndarray, starts: np.ndarray, counts: np.ndarray, n: int, m: int) -> np.ndarray:
    """(n_bars, n_cols) position at each bar's close from the sparse kernel's changes (column
    ``j``'s ``counts[j]`` from ``starts[j]``, in bar order), in the dense kernel's layout (each
    column's bars contiguous)."""
    out = np.empty((m, n), dtype=np.float64)
    nb.expand_changes_nb(changes["bar"], changes["position"], starts, counts, out)
    return out.T


def _value(price: np.ndarray, spec: MarketSpec) -> np.ndarray:
    """Value of one contract at ``price`` (the kernel's ``cval_nb``)."""
    cs = float(spec.contract_size)
    return cs / price if spec.inverse else cs * price


def _funding_amounts(fpos: np.ndarray, mark: np.ndarray, rate: np.ndarray, spec: MarketSpec) -> np.ndarray:
    """Funding cash flows ``-position * v(mark) * rate`` (positions per print, broadcast against
    the prints' marks and rates) in the kernel's order of operations (``nb.funding_amount_nb``),
    hence the kernel's amounts bit for bit."""
    return -fpos * _value(mark, spec) * rate


def _fill_records(compact: np.ndarray, cols: np.ndarray, spec: MarketSpec) -> np.ndarray:
    """Fill records (``enums.fill_dt``) from the kernel's compact fills: the column from each
    record's place, the notional ``abs(size) * v(price)`` as the kernel computes it."""
    out = POOL.empty(len(compact), RECORD_DTYPES["fills"])  # a sweep chunk's million fills: lent memory
    for f in ("bar", "price", "size", "fee", "status", "reason"):
        out[f] = compact[f]
    out["col"] = cols
    out["notional"] = np.abs(compact["size"]) * _value(compact["price"], spec)
    return out


def _funding_records(fpos: np.ndarray, bars: PerpBars, spec: MarketSpec) -> np.ndarray:
    """Funding records (``enums.funding_dt``), one per print and column with a position, in
    column order, then print order: the kernel stored the position that paid each print."""
    col, p = np.nonzero(fpos)
    out = np.empty(len(col), dtype=RECORD_DTYPES["funding"])
    out["bar"] = bars.fe_bar[p]
    out["col"] = col
    out["time"] = bars.fe_time[p]
    out["rate"] = bars.fe_rate[p]
    out["mark"] = bars.fe_mark[p]
    out["position"] = fpos[col, p]
    out["amount"] = _funding_amounts(out["position"], out["mark"], out["rate"], spec)
    return out


def _compact(buf: np.ndarray, counts: np.ndarray, caps: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The used records (column order, then event order), compacted in place; copied out when
    they use less than half of the buffer, so that the rest of it is freed."""
    used = int(caps.sum()) if np.array_equal(counts, caps) else nb.compact_nb(buf, counts, starts)
    return buf[:used] if 2 * used >= len(buf) else buf[:used].copy()


def raw_outputs(result: SimResult) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(series, records) in the reference simulator's format, for comparisons."""
    return {k: result.series[k] for k in SERIES}, {k: result.records[k] for k in RECORD_DTYPES}
