"""Pandas-facing wrapper of the perpetual engine: validate, call the kernel, wrap the result."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from backtest.data.timeutil import ms_index
from backtest.engine import nb
from backtest.engine.bars import EngineInputError, PerpBars
from backtest.engine.enums import RECORD_DTYPES, SERIES
from backtest.engine.settings import (Account, CallResponse, Policy, SettingsError, account_arrays,
                                      policy_arrays)
from backtest.market import TIER_MAXLEV, MarketSpec
from backtest.result import REQUIRED_SERIES, LazySeries, SimResult


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
    return (arr.ravel(order="K"), rs if arr.shape[0] > 1 else 0, cs if arr.shape[1] > 1 else 0)


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
        ``equity``, ``position`` and the wanted ones of ``margin_ratio`` and ``liq_price``; the
        others are derived on first access (README, "Outputs and memory"). Large sweeps that only
        need equity and events save memory and time with ``series=("equity",)``.

    Returns
    -------
    SimResult with series ``backtest.engine.enums.SERIES`` (settlement currency
    ``spec.settle``) and records ``fills``, ``funding``, ``margin_calls``, ``liquidations``.
    """
    account = account or Account()
    policy = policy or Policy()
    bars = _bars_from(data)
    n = bars.n
    tgt, tcols = _target_2d(target, n)
    m_candidates = [tgt.shape[1]]
    if columns is not None:
        m_candidates.append(len(columns))
    for f in ("initial_capital", "margin_mode", "leverage", "margin_call_threshold", "margin_call_response",
              "margin_call_target", "reserve", "after_liquidation", "excess", "fee_rate", "slippage"):
        v = getattr(account, f)
        if v is not None and not isinstance(v, str) and np.ndim(v) == 1:
            m_candidates.append(len(v))
    for f in ("kind", "max_drawdown", "floor", "multiplier", "ratchet", "max_exposure"):
        v = getattr(policy, f)
        if not isinstance(v, str) and np.ndim(v) == 1:
            m_candidates.append(len(v))
    m = max(m_candidates)
    if tgt.shape[1] not in (1, m):
        raise EngineInputError(f"target has {tgt.shape[1]} columns but the settings give {m}; give 1 or {m}")
    acc = account_arrays(account, m, spec.taker_fee)
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
    # the kernel writes what needs its state; the rest is derived on first access (_derived)
    # equity and position always (the kernel's fixed rows 0 and 1), then the optional ones wanted
    keep = ["equity", "position"] + [s for s in KERNEL_SERIES[2:] if s in wanted]
    omap = np.array([keep.index(s) if s in keep else -1 for s in SERIES], dtype=np.int64)
    nfe = bars.fe_bar.shape[0]
    out = np.empty((len(keep), m, n), dtype=np.float64)
    lag = int(account.lag)
    tflat, trs, tcs = _flat(tgt)
    caps, first_inf = nb.record_caps_nb(tflat, trs, tcs, tgt.shape[0], lag, n, nfe, acc["call_response"],
                                        acc["after_liq"])
    if (first_inf >= 0).any():  # the first infinite value in row order
        rows = np.where(first_inf >= 0, first_inf, np.iinfo(np.int64).max)
        j = int(np.argmin(rows))
        i = int(rows[j])
        when = pd.Timestamp(int(bars.timestamp[i if tgt.shape[0] > 1 else 0]), unit="ms", tz="UTC")
        raise EngineInputError(
            f"target is infinite at bar {i} ({when.isoformat()}), column {j}; use NaN to keep the position")
    # quiet stretches (the sparse specialisation) pay off when most bars have no order; the
    # target orders per column are the fill bound less the one reduce per bar (record_caps_nb)
    orders = caps[0] - np.where(acc["call_response"] == CallResponse.REDUCE, n, 0)
    sparse = bool(tgt.shape[0] > 1 and orders.sum() <= SPARSE_MAX_ORDER_SHARE * n * m)
    if sparse:
        bits = nb.target_bits_nb(tflat, trs, tcs, tgt.shape[0], tgt.shape[1], min(tgt.shape[0], max(n - lag, 0)))
    else:
        bits = np.zeros((0, 1), dtype=np.uint64)
    starts = np.zeros_like(caps)
    np.cumsum(caps[:, :-1], axis=1, out=starts[:, 1:])
    bufs = [np.empty(int(caps[r].sum()) + 1, dtype=RECORD_DTYPES[name])  # + the spare slot
            for r, name in enumerate(RECORD_DTYPES)]
    counts = (nb.simulate_sparse_nb if sparse else nb.simulate_dense_nb)(
        bars.open, bars.mark_open, bars.mark_high, bars.mark_low, bars.mark_close,
        bars.fe_bar, bars.fe_time, bars.fe_at_open, bars.fe_rate, bars.fe_mark,
        tflat, trs, tcs, lag, bool(spec.inverse), float(spec.contract_size), float(spec.lot_size),
        float(spec.min_notional), float(spec.liquidation_fee_rate),
        tiers, ntiers, tier_ver,
        acc["initial_capital"], acc["margin_mode"], acc["leverage"], acc["call_threshold"],
        acc["call_response"], acc["call_target"], acc["reserve"], acc["after_liq"], acc["excess"],
        acc["fee_rate"], acc["slippage"],
        pol["policy_kind"], pol["max_drawdown"], pol["floor"], pol["multiplier"], pol["ratchet"],
        pol["max_exposure"], omap, out, *bufs, starts, caps, bits,
    )
    over = np.stack(counts) > caps
    if over.any():  # cannot happen while record_caps_nb's bounds hold; never return bad records
        r, j = np.argwhere(over)[0]
        raise RuntimeError(f"engine error: column {j} wrote {counts[r][j]} {list(RECORD_DTYPES)[r]} records, "
                           f"more than the {caps[r, j]} bounded by record_caps_nb; please report this")
    records = {name: _compact(bufs[r], counts[r], caps[r], starts[r]) for r, name in enumerate(RECORD_DTYPES)}
    stored = {name: out[k].T for k, name in enumerate(keep)}
    series = LazySeries(stored, _derived(stored, records, bars, spec, n, m), SERIES)
    price_usd = bars.mark_close.copy() if spec.inverse else np.ones(n)
    index = ms_index(bars.timestamp)
    meta = {
        "instrument": "inverse_perp" if spec.inverse else "linear_perp",
        "symbol": spec.symbol,
        "exchange": spec.exchange,
        "bar_ms": bars.bar_ms,
        "contract_size": spec.contract_size,
        "liquidation_fee_rate": spec.liquidation_fee_rate,
        "lag": int(account.lag),
        "settings": {k: v.tolist() for k, v in {**acc, **pol}.items()},
    }
    return SimResult(kind="perp", currency=spec.settle, index=index, columns=cols, series=series,
                     records=records, price_usd=price_usd, initial_capital=acc["initial_capital"].copy(),
                     meta=meta, underlying=bars.mark_close.copy())


# Above this share of bar-columns with a target order the kernel runs its dense specialisation
# (no quiet stretches: a tighter loop when most bars trade). On W2 (benchmarks/) the two are
# even at an order every 3 bars; the sparse one is 18 % faster every 4 bars, 25 % every 8.
SPARSE_MAX_ORDER_SHARE = 0.3

# Series that need the kernel's state. The others follow from these, the bars and the records.
KERNEL_SERIES = ("equity", "position", "margin_ratio", "liq_price")  # the first two always


def _derived(stored: dict[str, np.ndarray], records: dict[str, np.ndarray], bars: PerpBars, spec: MarketSpec,
             n: int, m: int) -> dict:
    """How to compute the other series from what the kernel stored, with the kernel's own
    formulas (README, "Engine semantics", step 6)."""
    eq, pos, close = stored["equity"], stored["position"], bars.mark_close[:, None]
    cs = float(spec.contract_size)

    def notional() -> np.ndarray:
        return pos * (cs / close if spec.inverse else cs * close)

    def leverage() -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(eq > 0.0, np.abs(notional()) / eq, 0.0)

    def cumulative(*flows: tuple[str, str, Any]) -> np.ndarray:
        """Running total per column of record amounts, valued at each bar's close."""
        tot = np.zeros(n * m)
        for rec_name, field, keep in flows:
            r = records[rec_name]
            if keep is not None:
                r = r[keep(r)]
            if len(r):
                tot += np.bincount(r["bar"] * m + r["col"], weights=r[field], minlength=n * m)
        return np.cumsum(tot.reshape(n, m), axis=0)

    return {
        # linear: USDT counts as USD, so equity_usd is the equity array itself (read-only use)
        "equity_usd": (lambda: eq * close) if spec.inverse else (lambda: eq),
        "notional": notional,
        "leverage": leverage,
        "cum_funding": lambda: cumulative(("funding", "amount", None)),
        "cum_fees": lambda: cumulative(("fills", "fee", None), ("liquidations", "clearance_fee", None)),
        "capital_added": lambda: cumulative(
            ("margin_calls", "amount", lambda r: r["response"] == CallResponse.TOP_UP)),
    }


def _compact(buf: np.ndarray, counts: np.ndarray, caps: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The used records (column order, then event order), compacted in place; copied out when
    they use less than half of the buffer, so that the rest of it is freed."""
    used = int(caps.sum()) if np.array_equal(counts, caps) else nb.compact_nb(buf, counts, starts)
    return buf[:used] if 2 * used >= len(buf) else buf[:used].copy()


def raw_outputs(result: SimResult) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(series, records) in the reference simulator's format, for comparisons."""
    return {k: result.series[k] for k in SERIES}, {k: result.records[k] for k in RECORD_DTYPES}
