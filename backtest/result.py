"""The result every simulation returns, whatever the instrument (perp, put, inverse product).

One container so that metrics and reports treat a short perp, a rolled put and an inverse
product alike: per-bar series of shape (n_bars, n_cols) plus structured event records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# Series every instrument provides (float64, shape (n_bars, n_cols), valued at the bar close).
REQUIRED_SERIES = (
    "equity",         # account equity in the settlement currency
    "equity_usd",     # the same in USD (equity * price_usd)
    "position",       # signed position (contracts for perps, units for options/products), <0 short
    "notional",       # signed position notional in the settlement currency
    "leverage",       # |notional| / equity (0 when flat; inf never leaks: equity<=0 -> nan-free 0)
    "cum_funding",    # cumulative funding cash flow received (+) / paid (-)
    "cum_fees",       # cumulative trading fees + clearance fees paid (positive number)
    "capital_added",  # cumulative capital added (margin-call top-ups), settlement currency
)


class LazyMapping(Mapping):
    """Arrays an engine stored, plus arrays derived from them on first access, then kept.
    Reads like a ``dict``; pickling (and deep-copying) computes every derived array first.
    """

    def __init__(self, stored: dict[str, np.ndarray], derived: dict[str, Callable[[], np.ndarray]],
                 order: tuple[str, ...] | None = None) -> None:
        both = set(stored) & set(derived)
        if both:
            raise ValueError(f"{sorted(both)} are both stored and derived")
        self.stored = dict(stored)
        self._derive = dict(derived)
        names = list(stored) + list(derived)
        self._order = [k for k in (order or ()) if k in names] + [k for k in names if k not in (order or ())]

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.stored:
            return self.stored[name]
        fn = self._derive[name]  # KeyError for an unknown name, as a dict
        arr = fn()
        self.stored[name] = arr
        del self._derive[name]
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self.stored or name in self._derive

    def __reduce__(self):
        """Pickle (and deep-copy) with everything computed: derivations are closures."""
        return (type(self), ({k: self[k] for k in self._order}, {}, tuple(self._order)))

    def derived(self) -> list[str]:
        """Names not computed yet."""
        return [k for k in self._order if k in self._derive]


class LazySeries(LazyMapping):
    """Series an engine stored, plus series derived from them (and from the records) on first
    access. A large sweep then writes only what it cannot derive (equity, the position or its
    changes), and a series nobody reads costs nothing. Reads like a ``dict`` of (n_bars, n_cols) arrays.
    """

    def select(self, cols: np.ndarray) -> "LazySeries":
        """The same series restricted to some columns; derived ones stay lazy."""
        return LazySeries({k: v[:, cols] for k, v in self.stored.items()},
                          {k: (lambda k=k: self[k][:, cols]) for k in self.derived()}, tuple(self._order))


class LazyRecords(LazyMapping):
    """Record arrays, some built from the engine's compact form on first access (the perp
    kernel writes 32-byte fills and one float per funding print and column; the full records
    are built when read). Reads like a ``dict`` of structured arrays.
    """


NO_MARGIN_KINDS = frozenset({"put", "inverse_product"})
"""Result kinds whose holder posts no margin (a long option, a leveraged product's holder): they
are never margin-called or liquidated, so their liquidation metrics are 0, not unknown."""


@dataclass(frozen=True)
class SimResult:
    """Outputs of one simulation.

    Attributes
    ----------
    kind : ``'perp'``, ``'put'`` or ``'inverse_product'``.
    currency : settlement currency of ``equity`` and every money series/record (``USDT``, ``BTC``, ``USD``).
    index : bar open times, tz-aware UTC ``DatetimeIndex`` of length n_bars.
    columns : one label per simulated column (a parameter/policy combination), length n_cols.
    series : name -> float64 array (n_bars, n_cols); at least :data:`REQUIRED_SERIES`. A ``dict``
        or a :class:`LazySeries` (derived series computed on first access).
    records : name -> structured array with at least int64 fields ``bar`` and ``col``
        (for perps: ``fills``, ``funding``, ``margin_calls``, ``liquidations``). A ``dict`` or a
        :class:`LazyRecords` (records built on first access).
    price_usd : float64 (n_bars,), USD value of one unit of ``currency`` at each bar's close
        (ones for USDT/USD settlement, the coin's mark close for inverse contracts).
    initial_capital : float64 (n_cols,), in ``currency``.
    meta : JSON-able description (instrument, market spec summary, settings, notes).
    underlying : float64 (n_bars,) or None, the underlying's price at each bar's close (the mark
        close for perps), in USD/quote; what reports plot events on.
    """

    kind: str
    currency: str
    index: pd.DatetimeIndex
    columns: pd.Index
    series: Mapping[str, np.ndarray]
    records: Mapping[str, np.ndarray]
    price_usd: np.ndarray
    initial_capital: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    underlying: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, m = len(self.index), len(self.columns)
        missing = [s for s in REQUIRED_SERIES if s not in self.series]
        if missing:
            raise ValueError(f"SimResult({self.kind}): missing series {missing}")
        stored = self.series.stored if isinstance(self.series, LazySeries) else self.series
        for name, arr in stored.items():
            if arr.shape != (n, m):
                raise ValueError(
                    f"SimResult({self.kind}): series {name!r} has shape {arr.shape}, expected {(n, m)}")

    @property
    def n_bars(self) -> int:
        return len(self.index)

    @property
    def n_cols(self) -> int:
        return len(self.columns)

    def frame(self, name: str) -> pd.DataFrame:
        """One series as a DataFrame (index = bar open time, columns = parameter columns)."""
        if name not in self.series:
            raise KeyError(f"no series {name!r}; available: {', '.join(sorted(self.series))}")
        return pd.DataFrame(self.series[name], index=self.index, columns=self.columns)

    def events(self, name: str) -> pd.DataFrame:
        """One record array as a DataFrame with ``bar_time`` (the bar's open time) and the column label added."""
        if name not in self.records:
            raise KeyError(f"no records {name!r}; available: {', '.join(sorted(self.records))}")
        rec = self.records[name]
        df = pd.DataFrame.from_records(rec) if len(rec) else pd.DataFrame(
            {k: np.empty(0, dtype=rec.dtype[k]) for k in rec.dtype.names})
        df.insert(0, "bar_time", self.index[df["bar"].to_numpy()] if len(df) else pd.DatetimeIndex([], tz="UTC"))
        from backtest.metrics import column_labels  # the report's labels (slow_days=50|policy=const(2))

        labels = column_labels(self)
        df.insert(1, "column", [labels[c] for c in df["col"].to_numpy()])
        return df

    def select(self, cols: list[int] | np.ndarray) -> "SimResult":
        """A result restricted to some columns (records re-numbered)."""
        cols = np.asarray(cols, dtype=np.int64)
        remap = np.full(self.n_cols, -1, dtype=np.int64)
        remap[cols] = np.arange(len(cols))
        recs = {}
        for k, r in self.records.items():
            keep = r[np.isin(r["col"], cols)].copy()
            keep["col"] = remap[keep["col"]]
            recs[k] = keep
        return SimResult(
            kind=self.kind, currency=self.currency, index=self.index, columns=self.columns[cols],
            series=self.series.select(cols) if isinstance(self.series, LazySeries)
            else {k: v[:, cols] for k, v in self.series.items()}, records=recs,
            price_usd=self.price_usd, initial_capital=self.initial_capital[cols], meta=dict(self.meta),
            underlying=self.underlying)
