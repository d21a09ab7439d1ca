"""Warnings a user needs after simulating: columns that never trade, strategies that place their
first order late in the window (the indicators' warm-up eating it), puts priced from an EWMA
volatility because no implied-vol series covers the bars.

Each warning is one line naming the result, the columns and the fix; ``backtest run`` prints
them on stderr and lists them in the report's notes (``warning: ...``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from backtest.metrics import column_labels
from backtest.result import SimResult

LATE_SHARE = 0.2  # a first order after this share of the window's bars is worth a warning
SHOWN = 3  # column labels named in a warning; the rest are counted


def _names(labels: list[str]) -> str:
    head = ", ".join(labels[:SHOWN])
    return head + (f" and {len(labels) - SHOWN} more" if len(labels) > SHOWN else "")


def first_orders(result: SimResult) -> np.ndarray | None:
    """Per column, the bar of its first executed trade (a fill of non-zero size, or an option
    purchase), -1 when it never trades; None for a result without trade records (products)."""
    if "fills" in result.records:
        from backtest.engine.enums import FillStatus

        rec = result.records["fills"]
        # a rejected fill records the size asked for, not traded
        names = rec.dtype.names or ()
        done = rec[(rec["size"] != 0) & (rec["status"] != FillStatus.REJECTED)] if "status" in names \
            else rec[rec["size"] != 0]
    elif "rolls" in result.records:
        rec = result.records["rolls"]
        done = rec[rec["contracts"] > 0]
    else:
        return None
    first = np.full(result.n_cols, -1, dtype=np.int64)
    if len(done):
        order = np.lexsort((done["bar"], done["col"]))
        cols, at = np.unique(done["col"][order], return_index=True)
        first[cols] = done["bar"][order][at]
    return first


def run_warnings(results: Mapping[str, SimResult], lookback_days: float = 0.0,
                 skip: tuple[str, ...] = ("baselines",)) -> list[str]:
    """The warnings of a run's results (see the module docstring), in result order.

    Parameters
    ----------
    results : simulation name -> result, with the report's column labels.
    lookback_days : the run's ``[data] lookback_days`` (said in the warm-up advice).
    skip : results not warned about (the baselines, which hold by design).
    """
    out: list[str] = []
    for name, res in results.items():
        if name in skip or res.n_bars == 0:
            continue
        labels = column_labels(res)
        first = first_orders(res)
        if first is not None:
            never = [labels[j] for j in np.flatnonzero(first < 0)]
            if never:
                out.append(f"{name}: {len(never)} of {res.n_cols} column(s) never trade ({_names(never)}): their "
                           "target is 0 or NaN on every bar, or every order was below the minimum or rejected; "
                           "check the strategy's parameters and the window")
            late = np.flatnonzero(first >= LATE_SHARE * res.n_bars)
            if len(late):
                j = int(late[np.argmin(first[late])])
                bar = int(first[j])
                bar_days = (res.index[1] - res.index[0]).total_seconds() / 86400 if res.n_bars > 1 else 1.0
                days = math.ceil(bar * bar_days)
                more = f"; lookback_days = {lookback_days:g} now" if lookback_days else ""
                out.append(
                    f"{name}: {len(late)} column(s) place their first order only after {LATE_SHARE:.0%} of the "
                    f"window ({_names([labels[k] for k in late])}; the earliest at bar {bar:,} of {res.n_bars:,}, "
                    f"{res.index[bar]:%Y-%m-%d}): if the strategy or policy is still warming up its indicators, "
                    f"set [data] lookback_days = {days} to load that much data before start for them (trading "
                    f"still starts at start){more}")
        if res.kind == "put":
            out.extend(_put_volatility(name, res))
    return out


def _put_volatility(name: str, res: SimResult) -> list[str]:
    """The puts priced from the EWMA volatility (no implied vol for some or all bars)."""
    settings: Mapping[str, Any] = res.meta.get("settings", {})
    share = float(res.meta.get("iv_used_share", 1.0))
    source = settings.get("vol_source", "auto")
    sources = set(source) if isinstance(source, list) else {source}
    if "ewma" in sources and share == 0.0:
        return []  # asked for: nothing to warn about
    if share >= 1.0:
        return []
    if share == 0.0:
        return [f"{name}: puts priced from an EWMA volatility of the underlying x vrp on every bar: no "
                "implied-vol series was loaded; set [data] iv = \"deribit/BTC-DVOL\" (or the coin's DVOL) to "
                "price them from implied vol, or vol_source = \"ewma\" to say that this is intended"]
    return [f"{name}: puts priced from an EWMA volatility x vrp on {1 - share:.0%} of the bars, where the "
            "implied-vol series has no value (missing or stale); the other bars use implied vol"]
