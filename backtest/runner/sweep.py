"""Sweep summary: a ranked table and a heatmap of a metric by two grid levels."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from backtest.runner.config import ConfigError, RunConfig
from backtest.runner.run import RunOutcome, sweep_table


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def heatmap_html(table: pd.DataFrame, x: str, y: str, metric: str, title: str) -> str:
    import plotly.graph_objects as go

    grid = table.pivot_table(index=y, columns=x, values=metric, aggfunc="max")
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index],
                               colorscale="RdYlGn", colorbar={"title": metric},
                               hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric}=%{{z:.4g}}<extra></extra>"))
    fig.update_layout(title=f"{title}: {metric} (USD) by {x} and {y}", xaxis_title=x, yaxis_title=y)
    return fig.to_html(full_html=True, include_plotlyjs=True)


def write_sweep(out: RunOutcome, cfg: RunConfig) -> pd.DataFrame:
    """Rank the first perp simulation's columns and write sweep.csv and heatmap.html."""
    sw = cfg.sweep
    result = out.results[cfg.perp[0].name]
    table = sweep_table(result, sw.metric)
    levels = list(result.columns.names) if isinstance(result.columns, pd.MultiIndex) else [result.columns.name]
    for axis, name in (("x", sw.x), ("y", sw.y)):
        if name not in levels:
            raise ConfigError(f"sweep.{axis}={name!r} is not a column level of {cfg.perp[0].name}; levels: {levels}")
    _atomic_text(out.out_dir / "sweep.csv", table.to_csv(index=False))
    _atomic_text(out.out_dir / "heatmap.html", heatmap_html(table, sw.x, sw.y, sw.metric, cfg.title))
    return table
