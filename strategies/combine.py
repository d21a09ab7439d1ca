"""Signals of a strategy, optionally passed through a filter strategy.

A filter is any registered strategy (typically ``bear_regime``). The filtered signal keeps the
base signal only where the filter points the same way:

``out_t = base_t`` if ``filter_t != 0`` and (``base_t`` is NaN or ``sign(base_t) == sign(filter_t)``),
else ``0`` (flat). A NaN filter value counts as 0.

So ``bear_regime`` (-1 in the bear regime, 0 otherwise) lets shorts through only in the bear
regime and blocks longs always.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from strategies.base import StrategyError, get
from strategies.frame import as_market


def apply_filter(signal: np.ndarray, filt: np.ndarray) -> np.ndarray:
    """Filter ``signal`` by ``filt`` (same shape), see the module docstring."""
    signal = np.asarray(signal, dtype=np.float64)
    f = np.nan_to_num(np.asarray(filt, dtype=np.float64), nan=0.0)
    agree = (f != 0) & (np.isnan(signal) | (np.sign(signal) == np.sign(f)))
    return np.where(agree, signal, 0.0)


def signals(data: Any, name: str, params: Any = None, *, filter: str | None = None,
            filter_params: Any = None) -> pd.DataFrame:
    """Signals of strategy ``name`` for every parameter set, optionally filtered.

    Parameters
    ----------
    data : market data (DataFrame, ``MarketData`` or ``MarketFrame``).
    name : registered strategy name.
    params : parameter set, dict grid or list (see :func:`strategies.base.expand_grid`).
    filter : name of a registered strategy used as a filter, or None.
    filter_params : its parameters (a grid multiplies the columns).

    Returns
    -------
    DataFrame (n_bars, n_cols). Columns: the strategy's parameter levels; with a filter also a
    ``filter`` level (its name) and ``filter.<param>`` levels, base columns outer, filter
    columns inner.
    """
    market = as_market(data)
    base = get(name).run(market, params)
    if filter is None:
        if filter_params is not None:
            raise StrategyError("filter_params given without filter; name the filter strategy, e.g. filter='bear_regime'")
        return base
    fstrat = get(filter)
    filt = fstrat.run(market, filter_params)
    b, f = base.to_numpy(), filt.to_numpy()
    kb, kf = b.shape[1], f.shape[1]
    out = apply_filter(np.repeat(b, kf, axis=1), np.tile(f, (1, kb)))
    tuples = [tuple(bt) + (fstrat.name,) + tuple(ft) for bt in base.columns for ft in filt.columns]
    names = list(base.columns.names) + ["filter"] + [f"filter.{n}" for n in filt.columns.names]
    return pd.DataFrame(out, index=market.index, columns=pd.MultiIndex.from_tuples(tuples, names=names))
