"""Pandas-facing wrapper of the perpetual engine: validate, call the kernel, wrap the result."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from backtest.engine import nb
from backtest.engine.bars import EngineInputError, PerpBars
from backtest.engine.enums import RECORD_DTYPES, SERIES
from backtest.engine.settings import Account, Policy, SettingsError, account_arrays, policy_arrays
from backtest.market import TIER_MAXLEV, MarketSpec
from backtest.result import REQUIRED_SERIES, SimResult


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


def _target_2d(target: Any, n: int, index: np.ndarray) -> tuple[np.ndarray, pd.Index | None]:
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
    bad = np.isinf(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        when = pd.Timestamp(int(index[i if arr.shape[0] > 1 else 0]), unit="ms", tz="UTC")
        raise EngineInputError(f"target is infinite at bar {i} ({when.isoformat()}), column {j}; use NaN to keep the position")
    # column-major: each column's thread reads its target sequentially (pandas frames already are)
    return np.asfortranarray(arr), cols


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
    series : names of the per-bar series to store (default all of ``enums.SERIES``); the
        :data:`backtest.result.REQUIRED_SERIES` are always stored. Large sweeps that only need
        equity and events save memory and time by leaving out ``margin_ratio`` and ``liq_price``.

    Returns
    -------
    SimResult with series ``backtest.engine.enums.SERIES`` (settlement currency
    ``spec.settle``) and records ``fills``, ``funding``, ``margin_calls``, ``liquidations``.
    """
    account = account or Account()
    policy = policy or Policy()
    bars = _bars_from(data)
    n = bars.n
    tgt, tcols = _target_2d(target, n, bars.timestamp)
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
    keep = [s for s in SERIES if s in wanted or s in REQUIRED_SERIES]
    omap = np.array([keep.index(s) if s in keep else -1 for s in SERIES], dtype=np.int64)
    nfe = bars.fe_bar.shape[0]
    out = np.empty((len(keep), m, n), dtype=np.float64)
    fills = np.empty(2 * n * m, dtype=RECORD_DTYPES["fills"])
    fund = np.empty(max(nfe * m, 1), dtype=RECORD_DTYPES["funding"])
    calls = np.empty(n * m, dtype=RECORD_DTYPES["margin_calls"])
    liqs = np.empty(2 * n * m, dtype=RECORD_DTYPES["liquidations"])
    nfl, nfu, nca, nli = nb.simulate_nb(
        bars.open, bars.mark_open, bars.mark_high, bars.mark_low, bars.mark_close,
        bars.fe_bar, bars.fe_time, bars.fe_at_open, bars.fe_rate, bars.fe_mark,
        tgt, int(account.lag), bool(spec.inverse), float(spec.contract_size), float(spec.lot_size),
        float(spec.min_notional), float(spec.liquidation_fee_rate),
        tiers, ntiers, tier_ver,
        acc["initial_capital"], acc["margin_mode"], acc["leverage"], acc["call_threshold"],
        acc["call_response"], acc["call_target"], acc["reserve"], acc["after_liq"], acc["excess"],
        acc["fee_rate"], acc["slippage"],
        pol["policy_kind"], pol["max_drawdown"], pol["floor"], pol["multiplier"], pol["ratchet"],
        pol["max_exposure"], omap, out, fills, fund, calls, liqs,
    )
    records = {
        "fills": _compact(fills, nfl, 2 * n),
        "funding": _compact(fund, nfu, nfe),
        "margin_calls": _compact(calls, nca, n),
        "liquidations": _compact(liqs, nli, 2 * n),
    }
    stored = {name: out[k].T for k, name in enumerate(keep)}
    price_usd = bars.mark_close.copy() if spec.inverse else np.ones(n)
    index = pd.DatetimeIndex(pd.to_datetime(bars.timestamp, unit="ms", utc=True), name="time")
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
    return SimResult(kind="perp", currency=spec.settle, index=index, columns=cols, series=stored,
                     records=records, price_usd=price_usd, initial_capital=acc["initial_capital"].copy(),
                     meta=meta, underlying=bars.mark_close.copy())


def _compact(buf: np.ndarray, counts: np.ndarray, stride: int) -> np.ndarray:
    """Gather the used part of each column's slice (column order, then event order)."""
    if len(counts) == 1:  # one column: its slice is already compact (a view, no copy)
        return buf[: int(counts[0])]
    return nb.compact_nb(buf, counts, int(stride), np.empty(int(counts.sum()), dtype=buf.dtype))


def raw_outputs(result: SimResult) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(series, records) in the reference simulator's format, for comparisons."""
    return {k: result.series[k] for k in SERIES}, {k: result.records[k] for k in RECORD_DTYPES}
