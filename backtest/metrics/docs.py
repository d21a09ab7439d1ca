"""Definitions and units of every key :func:`backtest.metrics.compute_metrics` emits.

``METRIC_DOCS`` is the single source of the definitions; the README ("Metrics") lists the same keys
(a test checks that every emitted key is documented there). ``METRIC_UNITS`` tells the report
template how to format a value; the numbers themselves are never formatted in Python.
"""

from __future__ import annotations

import re
from pathlib import Path

# key -> (unit, definition). Units: text, ms, time (int ms UTC), factor, count, bars, days,
# money (the ``currency`` of the metrics block), fraction (0.25 = 25 %), ratio, leverage
# (multiple of equity), bool, greek (the unit of the result's Greek series), mapping.
_DEFS: dict[str, tuple[str, str]] = {
    # block level
    "kind": ("text", "instrument kind of the result: `perp`, `put` or `inverse_product`."),
    "currency": ("text", "currency of every money value in the block: the settlement currency "
                 "(`USDT`, `BTC`, ...) for basis `settle`, `USD` for basis `usd`."),
    "basis": ("text", "`settle` (equity in the settlement currency) or `usd` (equity valued in USD "
              "at each bar's close, flows converted at the bar's USD price)."),
    "bar_ms": ("ms", "bar size in milliseconds."),
    "bars_per_year": ("factor", "annualisation factor: bars in a 365-day year, `365 * 86400000 / bar_ms`."),
    "year_days": ("count", "days in the year used for annualising (365)."),
    "n_bars": ("count", "bars measured (all bars of the result)."),
    "start_ms": ("time", "open time of the first bar, int ms UTC."),
    "end_ms": ("time", "close time of the last bar (its open time + `bar_ms`), int ms UTC."),
    "columns": ("mapping", "column label -> the per-column metrics below."),
    # per column: money
    "initial_capital": ("money", "equity before the first bar (USD basis: valued at the first bar's USD price)."),
    "capital_added": ("money", "capital added by margin-call top-ups over the run (USD basis: each "
                      "addition valued at its bar's USD price)."),
    "final_equity": ("money", "equity at the last bar's close (negative equity is reported as is)."),
    "pnl": ("money", "profit: `final_equity - initial_capital - capital_added`."),
    # returns and risk
    "total_return": ("fraction", "time-weighted total return `prod(1 + r_t) - 1`, with "
                     "`r_t = E_t / (E_{t-1} + F_t) - 1` (F_t = capital added in bar t, a start-of-bar flow)."),
    "cagr": ("fraction", "compound annual growth rate `(1 + total_return) ** (bars_per_year / n_bars) - 1`."),
    "volatility": ("fraction", "annualised volatility `std(r, ddof=1) * sqrt(bars_per_year)`."),
    "sharpe": ("ratio", "Sharpe ratio, risk-free rate 0: `mean(r) / std(r, ddof=1) * sqrt(bars_per_year)`; "
               "null when the returns are constant (zero standard deviation) or there is one bar."),
    "sortino": ("ratio", "Sortino ratio, target 0: `mean(r) * bars_per_year / (sqrt(mean(min(r, 0)^2)) * "
                "sqrt(bars_per_year))`; null when no bar lost."),
    "calmar": ("ratio", "`cagr / max_drawdown`; null when there is no drawdown."),
    "max_drawdown": ("fraction", "largest fall of the growth index from its running peak (the start counts "
                     "as a peak): `max(1 - G_t / max(1, max_{s<=t} G_s))`; 1 = everything lost."),
    "max_drawdown_duration_bars": ("bars", "bars from the peak before the deepest trough to the recovery "
                                   "of that peak, or to the last bar when not recovered; 0 without drawdown."),
    "max_drawdown_duration_days": ("days", "`max_drawdown_duration_bars * bar_ms / 86400000`."),
    "max_drawdown_recovered": ("bool", "whether the growth index regained the peak before the deepest trough."),
    "longest_drawdown_bars": ("bars", "longest time below a previous peak (peak to recovery, or to the last bar)."),
    "longest_drawdown_days": ("days", "`longest_drawdown_bars * bar_ms / 86400000`."),
    "ulcer_index": ("fraction", "root mean square of the per-bar drawdown, `sqrt(mean(dd_t^2))`."),
    "worst_bar_return": ("fraction", "lowest single-bar return `min(r_t)`."),
    "worst_day_return": ("fraction", "lowest return over a UTC calendar day (bars grouped by the day of "
                         "their open time; growth at the day's last bar over the previous day's last bar)."),
    "ruined": ("bool", "whether the account was ruined: its growth index fell to 0.001 or below at some bar "
               "(99.9 % or more of the capital lost; at equity 0 the returns are 0 afterwards and the drawdown "
               "stays 100 %), or the final equity (in USD) can no longer hold the smallest "
               "order the market allows (minimum notional, or one lot at the last mark) at the column's "
               "leverage setting (perps; the engine states it as `meta['min_equity_usd']`)."),
    # relative to the underlying (null when the result has no `underlying` price series)
    "beta": ("ratio", "beta of the column's bar returns `r_t` to the underlying's bar returns "
             "`u_t = P_t / P_{t-1} - 1` (P: the result's `underlying` price, the mark close for perps), "
             "`cov(r, u) / var(u)` over bars 1..n-1 (bar 0 has no underlying return); 0 for a flat column; "
             "null when the underlying's returns are constant or the result has no underlying."),
    "correlation": ("ratio", "Pearson correlation of the column's bar returns to the underlying's (as for `beta`), "
                    "`cov(r, u) / (std(r) * std(u))`; null when either is constant or the result has no "
                    "underlying."),
    "excess_return": ("fraction", "`total_return` minus the underlying's total return on the same window "
                      "(`P_last / P_first - 1`: spot buy-and-hold from the first close, without costs); "
                      "null when the result has no underlying."),
    # exposure
    "exposure_time": ("fraction", "fraction of bars that end with a non-zero position."),
    "avg_leverage": ("leverage", "mean of the `leverage` series (|notional| / equity) over all bars, flat bars count as 0."),
    "max_leverage": ("leverage", "maximum of the `leverage` series."),
    # costs and carry
    "funding_paid": ("money", "funding paid, a positive number: sum of the negative per-bar changes "
                     "of `cum_funding`."),
    "funding_received": ("money", "funding received: sum of the positive per-bar changes of `cum_funding`."),
    "funding_net": ("money", "`funding_received - funding_paid` (positive = the strategy earned carry)."),
    "fees": ("money", "trading and clearance fees paid (increase of `cum_fees`)."),
    "turnover": ("money", "traded notional: sum of |notional| over the executed `fills` records (rejected "
                 "orders and clips to size 0 traded nothing and are left out); null when the result has no "
                 "`fills` records."),
    "rejected_orders": ("count", "orders refused whole by the exchange checks (`fills` records with status "
                        "`rejected`, `excess='reject'`); null when the result has no `fills` records."),
    # margin events
    "liquidations": ("count", "number of `liquidations` records; 0 for results that post no margin (puts, inverse products: never margin-called or liquidated); null when a result that "
                     "posts margin does not record them."),
    "first_liquidation_ms": ("time", "open time of the bar of the first liquidation, int ms UTC; null when none."),
    "liquidation_equity_lost": ("money", "what the liquidations cost the account: sum over `liquidations` "
                                "records of `max(0, equity_start - equity_after)`, where `equity_start` is the "
                                "account's equity just before the adverse move that triggered the liquidation "
                                "(the state after the bar's funding and fill valued at the bar's mark open; for "
                                "a gap at the open, at the previous bar's mark close) and `equity_after` what "
                                "is left: the lost margin and the clearance fee, never negative; 0 for results that "
                                "post no margin (puts, inverse products: never margin-called or liquidated); null "
                                "when a result that posts margin does not record them."),
    "liquidation_deficit": ("money", "shortfall of the liquidations absorbed by the insurance fund (sum of the "
                            "records' `deficit`: the backing balance below zero at the execution price), not "
                            "a loss of the account; 0 for results that post no margin (puts, inverse products: "
                            "never margin-called or liquidated); null when a result that posts margin does not "
                            "record liquidations."),
    "margin_calls": ("count", "number of `margin_calls` records; 0 for results that post no margin (puts, inverse products: never margin-called or liquidated); null when a result that "
                     "posts margin does not record them."),
    "event_counts": ("mapping", "record kind -> number of records in this column (every record kind "
                     "the result has, e.g. fills, funding, rolls, settlements, rebalances); `fills` counts "
                     "the executed fills only (rejected orders are `rejected_orders`)."),
    # puts (present only when the result has the series)
    "premium_spent": ("money", "option premium paid over the run: increase of the cumulative "
                      "`premium_paid` series (puts only)."),
    "avg_delta": ("greek", "mean of the `delta` series over bars holding a position (puts only)."),
    "avg_gamma": ("greek", "mean of the `gamma` series over bars holding a position (puts only)."),
    "avg_vega": ("greek", "mean of the `vega` series over bars holding a position (puts only)."),
    "avg_theta": ("greek", "mean of the `theta` series over bars holding a position (puts only)."),
}

METRIC_DOCS: dict[str, str] = {k: f"{d} [{u}]" for k, (u, d) in _DEFS.items()}
"""Metric key -> definition with its unit in brackets."""

METRIC_UNITS: dict[str, str] = {k: u for k, (u, _) in _DEFS.items()}
"""Metric key -> unit name (drives the template's number formatting)."""

LOWER_IS_BETTER = frozenset({
    "volatility", "max_drawdown", "max_drawdown_duration_bars", "max_drawdown_duration_days",
    "longest_drawdown_bars", "longest_drawdown_days", "ulcer_index", "fees", "funding_paid",
    "liquidations", "liquidation_equity_lost", "liquidation_deficit", "margin_calls", "rejected_orders",
    "turnover", "avg_leverage", "max_leverage", "capital_added", "premium_spent",
})
"""Keys where a smaller value is better (they rank ascending); every other key ranks larger first."""

BLOCK_KEYS = ("kind", "currency", "basis", "bar_ms", "bars_per_year", "year_days", "n_bars",
              "start_ms", "end_ms", "columns")
"""Keys of a metrics block; every other key of ``METRIC_DOCS`` is a per-column key."""

COLUMN_KEYS = tuple(k for k in _DEFS if k not in BLOCK_KEYS)
"""Per-column keys in display order."""

_ROW = re.compile(r"^\s*(?:\|\s*|[-*]\s+)`([A-Za-z0-9_]+)`")


def documented_metric_keys(path: str | Path) -> set[str]:
    """Keys documented in a Markdown file: rows ``| `key` | ...`` of a table or list items
    ``- `key` - ...`` (the key in backticks first on the line)."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines()
    # In a file with a "## Metrics" section (the README), only that section counts.
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Metrics"), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[start:end]
    return {m.group(1) for line in lines if (m := _ROW.match(line))}
