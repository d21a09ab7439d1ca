"""Sweep summary: a ranked table and a heatmap of a metric by two grid levels.

Both are built from the metrics the report stores (USD basis, the basis of the report's
comparison), so ``sweep.csv`` and ``metrics.json`` never disagree.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping

import pandas as pd

from backtest.runner.checks import sweep_target
from backtest.runner.config import ConfigError, RunConfig
from backtest.runner.labels import format_value

SHOWN = ("total_return", "max_drawdown", "sharpe", "calmar")  # printed next to the ranked metric


def _check_metric(metric: str) -> None:
    from backtest.report import RANKABLE

    if metric not in RANKABLE:
        close = difflib.get_close_matches(metric, RANKABLE, n=1)
        raise ConfigError(f"sweep.metric: {metric!r} is not a rankable metric"
                          + (f" (did you mean {close[0]!r}?)" if close else f"; choose one of {', '.join(RANKABLE)}"))


def sweep_table(metrics: Mapping[str, Any], name: str, levels: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every column of result ``name`` with its grid levels and USD metrics, best first.

    Parameters
    ----------
    metrics : the ``metrics.json`` document of the run.
    name : the swept simulation.
    levels : its level frame (index = column labels, one column per grid level).
    metric : rankable USD metric; order as in the report (``LOWER_IS_BETTER`` keys ascending),
        null values last, ties by total return, then column order.

    Returns
    -------
    DataFrame with ``rank``, ``column`` (the label), ``col`` (its position in the simulation, as
    in ``equity.parquet``), one column per level, then every scalar metric.
    """
    from backtest.report.collect import rank

    _check_metric(metric)
    doc = metrics["results"][name]
    order = rank({name: doc}, metric)
    cols = doc["usd"]["columns"]
    position = {lab: i for i, lab in enumerate(levels.index)}
    rows = []
    for r in order:
        label = r["column"]
        scalars = {k: v for k, v in cols[label].items() if not isinstance(v, (dict, list))}
        rows.append({"rank": r["rank"], "column": label, "col": position[label], **levels.loc[label].to_dict(),
                     **scalars})
    return pd.DataFrame(rows)


def heatmap_grid(table: pd.DataFrame, x: str, y: str, metric: str) -> pd.DataFrame:
    """``metric`` by ``y`` (rows) and ``x`` (columns), one cell per (x, y) pair in the table,
    in the order the values first appear in the grid. When other levels vary too, a cell holds
    the best value over them (max, or min for metrics where lower is better)."""
    from backtest.report.collect import LOWER_IS_BETTER

    for axis, level in (("x", x), ("y", y)):
        if level not in table.columns:
            raise ConfigError(f"sweep.{axis}: {level!r} is not a column of the sweep table")
    grid_order = table.sort_values("col", kind="stable")
    vals = pd.to_numeric(grid_order[metric], errors="coerce").astype(float)
    frame = pd.DataFrame({"x": grid_order[x].to_numpy(), "y": grid_order[y].to_numpy(), "v": vals.to_numpy()})
    best = frame.groupby(["y", "x"], sort=False, dropna=False)["v"]
    agg = best.min() if metric in LOWER_IS_BETTER else best.max()
    xs = list(dict.fromkeys(frame["x"]))
    ys = list(dict.fromkeys(frame["y"]))
    return agg.unstack("x").reindex(index=ys, columns=xs)


def heatmap_html(grid: pd.DataFrame, x: str, y: str, metric: str, title: str) -> str:
    """A self-contained HTML page with one plotly heatmap of ``grid`` (from :func:`heatmap_grid`)."""
    import plotly.graph_objects as go

    # nested lists (not arrays) so the page holds plain JSON numbers; NaN -> null (an empty cell)
    z = [[None if math.isnan(v) else float(v) for v in row] for row in grid.to_numpy(dtype=float)]
    fig = go.Figure(go.Heatmap(z=z, x=[format_value(c) for c in grid.columns],
                               y=[format_value(i) for i in grid.index],
                               colorscale="RdYlGn", reversescale=_lower_is_better(metric),  # green = good
                               colorbar={"title": {"text": metric}}, texttemplate="%{z:.3g}",
                               hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric}=%{{z:.4g}}<extra></extra>"))
    # first grid value at the top, as in the ranked table and the config
    fig.update_layout(title=f"{title}: {metric} (USD) by {x} and {y}", xaxis_title=x, yaxis_title=y,
                      xaxis={"type": "category"}, yaxis={"type": "category", "autorange": "reversed"})
    return fig.to_html(full_html=True, include_plotlyjs=True)


def _lower_is_better(metric: str) -> bool:
    from backtest.report.collect import LOWER_IS_BETTER

    return metric in LOWER_IS_BETTER


class SweepFiles:
    """The ``extras`` of :func:`backtest.runner.run.execute` for a sweep: ``sweep.csv`` (the
    ranked table) and ``heatmap.html``, built before anything is written. After the run,
    :attr:`table` holds the ranked table (for printing). ``html=False`` (``--no-html``) leaves
    ``heatmap.html`` out."""

    def __init__(self, cfg: RunConfig, html: bool = True) -> None:
        if cfg.sweep is None:
            raise ConfigError("a sweep needs a [sweep] table: x (a column level), y (default 'policy'), "
                              "metric (default 'sharpe')")
        self.cfg = cfg
        self.sweep = cfg.sweep
        self.target = sweep_target(cfg)
        self.table: pd.DataFrame | None = None
        self.html = html

    def __call__(self, run: Any, levels: dict[str, pd.DataFrame]) -> dict[str, str]:
        sw, name = self.sweep, self.target.name
        lv = levels[name]
        for axis, level in (("x", sw.x), ("y", sw.y)):
            if level not in lv.columns:
                raise ConfigError(f"sweep.{axis}: {level!r} is not a column level of [[perp]] {name!r}; "
                                  f"levels: {', '.join(lv.columns)}")
        table = sweep_table(run.metrics, name, lv, sw.metric)
        grid = heatmap_grid(table, sw.x, sw.y, sw.metric)
        self.table = table
        files = {"sweep.csv": table.to_csv(index=False)}
        if self.html:
            files["heatmap.html"] = heatmap_html(grid, sw.x, sw.y, sw.metric, self.cfg.title)
        return files


def sweep_files(cfg: RunConfig, html: bool = True) -> SweepFiles:
    """:class:`SweepFiles` of ``cfg`` (:class:`ConfigError` without a ``[sweep]`` table)."""
    return SweepFiles(cfg, html)


def format_table(table: pd.DataFrame, metric: str, top: int) -> str:
    """The first ``top`` rows: rank, column label, the ranked metric and a few others."""
    keys = [metric] + [k for k in SHOWN if k != metric]
    return table[["rank", "column", *keys]].head(top).to_string(index=False)
