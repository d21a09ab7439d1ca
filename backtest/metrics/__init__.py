"""Performance metrics of simulation results.

:func:`compute_metrics` turns a :class:`~backtest.result.SimResult` into raw, JSON-able numbers
per column; :data:`METRIC_DOCS` defines every key (with its unit). Return conventions (capital
added as a start-of-bar flow, equity at zero) are in :mod:`backtest.metrics.returns`.
"""

from backtest.metrics.compute import basis_arrays, column_labels, compute_metrics, returns_and_drawdown
from backtest.metrics.docs import (
    BLOCK_KEYS,
    COLUMN_KEYS,
    LOWER_IS_BETTER,
    METRIC_DOCS,
    METRIC_UNITS,
    documented_metric_keys,
)
from backtest.metrics.returns import (
    MetricsInputError,
    bars_per_year,
    drawdown,
    flow_returns,
    growth_index,
    index_ms,
    infer_bar_ms,
)

__all__ = [
    "BLOCK_KEYS", "COLUMN_KEYS", "LOWER_IS_BETTER", "METRIC_DOCS", "METRIC_UNITS", "MetricsInputError",
    "bars_per_year", "basis_arrays", "column_labels", "compute_metrics", "documented_metric_keys",
    "drawdown", "flow_returns", "growth_index", "index_ms", "infer_bar_ms", "returns_and_drawdown",
]
