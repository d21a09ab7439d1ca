"""Reports: metrics.json + equity.parquet + events.parquet + config.json + report.html.

Built in four separate steps: :func:`collect` computes the raw numbers, :func:`build_report`
turns them into a JSON-able report object, :func:`render_html` formats and renders it with a
Jinja2 template, :func:`store_run` writes the folder atomically. :func:`write_report` runs all
four; :func:`load_stored` and :func:`rerender` rebuild a page from a stored folder.
"""

from backtest.report.build import build_report
from backtest.report.collect import RANKABLE, ReportError, RunData, collect
from backtest.report.figures import MAX_POINTS, downsample_index
from backtest.report.render import render_html
from backtest.report.store import load_stored, rerender, store_run, write_report

__all__ = [
    "MAX_POINTS", "RANKABLE", "ReportError", "RunData", "build_report", "collect", "downsample_index",
    "load_stored", "render_html", "rerender", "store_run", "write_report",
]
