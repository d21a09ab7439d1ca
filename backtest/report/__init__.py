"""Reports: metrics.json + equity.parquet + events.parquet + config.json + report.html.

Built in four separate steps: :func:`collect` computes the raw numbers, :func:`build_report`
turns them into a JSON-able report object, :func:`render_html` formats and renders it with a
Jinja2 template, :func:`store_run` writes the folder atomically. :func:`write_report` runs all
four; :func:`load_stored` and :func:`rerender` rebuild a page from a stored folder.
"""

from backtest.report.build import build_report
from backtest.report.collect import RANKABLE, ReportError, RunData, collect
from backtest.report.decimate import decimate, grid_positions
from backtest.report.figures import MAX_POINTS
from backtest.report.render import render_html
from backtest.report.store import load_stored, rerender, store_run, write_report

__all__ = [
    "MAX_POINTS", "RANKABLE", "ReportError", "RunData", "build_report", "collect", "decimate",
    "grid_positions", "load_stored", "render_html", "rerender", "store_run", "write_report",
]
