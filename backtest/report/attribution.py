"""Per-instrument attribution of a book (step 1 of a report: raw numbers, JSON-able).

A book result (one account, K instruments) is reported like any other result from its
:class:`~backtest.result.SimResult`; what only a book has is the split of its PnL and exposure
by instrument, read from its per-position series (``backtest.book.POSITION_SERIES``). A report
takes a book as any object with ``to_sim_result()``, ``positions`` and ``symbols``: the book
kernel's ``BookResult``, or the runner's :class:`~backtest.runner.book.BookRun`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

PNL_KEYS = ("pnl_price", "pnl_funding", "pnl_fees", "pnl_liquidation")
NEEDED = PNL_KEYS + ("notional",)

# The attribution's fields per (column, instrument), in the order of the report's table, with
# their meaning (docs/reports.md, "Book attribution"); money in the settlement currency.
FIELDS = {
    "pnl_price": "price PnL: realised on fills plus unrealised at the last close",
    "pnl_funding": "funding received (+) or paid (-)",
    "pnl_fees": "trading fees paid (a cost, >= 0)",
    "pnl_liquidation": "PnL realised by liquidations less the clearance fees, plus the share of an insurance-fund cover",
    "pnl_total": "pnl_price + pnl_funding - pnl_fees + pnl_liquidation",
    "avg_notional": "time-average signed notional over every bar of the run (0 while flat or unlisted)",
    "avg_abs_notional": "time-average |notional| (gross exposure)",
    "final_notional": "signed notional at the last close",
}


def is_book(obj: Any) -> bool:
    """True for a book as a report takes it: ``to_sim_result()``, ``positions``, ``symbols``."""
    return callable(getattr(obj, "to_sim_result", None)) and hasattr(obj, "positions") and hasattr(obj, "symbols")


def attribution(positions: Any, symbols: Sequence[str], labels: Sequence[str], currency: str) -> dict:
    """The ``attribution`` block of a book result in ``metrics.json``.

    Parameters
    ----------
    positions : name -> float64 (n_bars, K, n_cols) per-position series; needs ``notional``,
        ``pnl_price``, ``pnl_funding``, ``pnl_fees``, ``pnl_liquidation`` (cumulative, settlement currency).
    symbols : the K instruments, in the order of axis 1.
    labels : the n_cols column labels, in the order of axis 2.
    currency : the settlement currency.

    Returns
    -------
    dict: ``currency``, ``instruments`` (the symbols), ``fields`` (:data:`FIELDS`) and
    ``columns``: label -> symbol -> field -> value, plus ``total`` -> field -> the sum over the
    instruments (for the PnL fields, the account's equity change less capital added).

    Raises
    ------
    ValueError
        A series is missing, or its shape is not (n_bars, K, n_cols) of ``symbols`` and ``labels``.
    """
    from backtest.report.collect import ReportError, jsonable

    missing = [s for s in NEEDED if s not in positions]
    if missing:
        raise ReportError(f"a book's attribution needs the position series {missing}; simulate the book with them")
    k, m = len(symbols), len(labels)
    arrays = {s: np.asarray(positions[s], dtype=np.float64) for s in NEEDED}
    for s, a in arrays.items():
        if a.ndim != 3 or a.shape[1:] != (k, m) or a.shape[0] == 0:
            raise ReportError(f"position series {s!r} has shape {a.shape}; expected (n_bars, {k} instruments, "
                              f"{m} columns) of a book with bars")
    last = {s: arrays[s][-1] for s in PNL_KEYS}  # (K, m): the cumulative values at the last close
    total = last["pnl_price"] + last["pnl_funding"] - last["pnl_fees"] + last["pnl_liquidation"]
    notional = arrays["notional"]
    per = {
        **last, "pnl_total": total,
        "avg_notional": notional.mean(axis=0), "avg_abs_notional": np.abs(notional).mean(axis=0),
        "final_notional": notional[-1],
    }
    columns: dict[str, Any] = {}
    for j, label in enumerate(labels):
        col = {sym: {f: per[f][i, j] for f in FIELDS} for i, sym in enumerate(symbols)}
        col["total"] = {f: per[f][:, j].sum() for f in FIELDS}
        columns[str(label)] = col
    return jsonable({"currency": currency, "instruments": list(symbols), "fields": FIELDS, "columns": columns})
