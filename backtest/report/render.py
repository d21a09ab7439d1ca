"""Step 3 of a report: render the report object to one self-contained HTML page.

Jinja2 with autoescaping; every number is formatted here, in template filters, and nowhere
else. plotly.js (from the installed plotly package) is inlined once, gzip-compressed and
base64-encoded (4.8 MB become 2.0 MB, the largest part of a page): the page unpacks it with the
browser's ``DecompressionStream`` (Chrome 80, Firefox 113, Safari 16.4 and later) before
plotting. Each figure is a JSON block that one script hands to ``Plotly.newPlot`` after putting
its shared x arrays in place (``backtest.report.figures``), so the page works offline.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"
MISSING = "—"


def _money_decimals(v: float) -> int:
    a = abs(v)
    return 2 if a >= 100 or a == 0 else 4 if a >= 1 else 6


def fmt_time(ms: Any) -> str:
    """int ms UTC -> ``YYYY-MM-DD HH:MM UTC``."""
    if ms is None:
        return MISSING
    return dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def fmt_metric(value: Any, unit: str) -> str:
    """Format one metric value by its unit (see ``backtest.metrics.METRIC_UNITS``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if unit == "bool":
        return "yes" if value else "no"
    if unit in ("text", "mapping"):
        return str(value)
    if unit == "time":
        return fmt_time(value)
    v = float(value)
    if unit == "fraction":
        return f"{v * 100:,.2f}%"
    if unit == "ratio":
        return f"{v:,.3f}"
    if unit == "leverage":
        return f"{v:,.2f}x"
    if unit == "money":
        return f"{v:,.{_money_decimals(v)}f}"
    if unit in ("count", "bars", "ms"):
        return f"{int(round(v))}"
    if unit == "days":
        return f"{v:,.2f}"
    if unit == "factor":
        return f"{v:,.4f}".rstrip("0").rstrip(".")
    if unit == "greek":
        return f"{v:.4g}"
    raise ValueError(f"unknown metric unit {unit!r}")


def fmt_period_return(value: Any) -> str:
    """A period's return in a heatmap cell: a percentage with 1 decimal (``-12.3%``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    text = f"{float(value) * 100:,.1f}%"
    return "0.0%" if text == "-0.0%" else text  # a loss that rounds to nothing is not shown as -0.0


def heat(value: Any, scale: Any) -> str:
    """CSS background of a heatmap cell, centred on 0: green for gains, red for losses, the
    strength ``|value| / scale`` (capped at 1); no colour for 0, a missing value or a zero scale."""
    if value is None or not scale or not math.isfinite(float(value)) or float(value) == 0.0:
        return ""
    a = min(abs(float(value)) / float(scale), 1.0)
    rgb = (26, 152, 80) if value > 0 else (215, 48, 39)
    return f"background-color: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {0.08 + 0.62 * a:.3f})"


def sort_value(value: Any) -> str:
    """The raw value a sortable cell is sorted by (``data-value``): numbers in full precision,
    booleans as 1/0, empty for a missing value (sorted last whatever the direction)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    return str(value)


def fmt_duration(ms: Any) -> str:
    """A bar size in ms as ``1h``, ``15m``, ``1d`` (largest whole unit)."""
    ms = int(ms)
    for size, suffix in ((86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")):
        if ms % size == 0:
            return f"{ms // size}{suffix}"
    return f"{ms}ms"


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.min.js bundled with the installed plotly package (inlined once per page)."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    if "</script" in js.lower():
        raise RuntimeError("plotly.js contains '</script' and cannot be inlined safely")
    return js


@lru_cache(maxsize=1)
def plotly_js_packed() -> str:
    """:func:`plotly_js` gzip-compressed (level 9, no timestamp, so a page is reproducible) and
    base64-encoded: inlined once per page and unpacked by the page's loader."""
    return base64.b64encode(gzip.compress(plotly_js().encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["metric"] = fmt_metric
    env.filters["time_ms"] = fmt_time
    env.filters["duration"] = fmt_duration
    env.filters["period_return"] = fmt_period_return
    env.filters["heat"] = heat
    env.filters["sort_value"] = sort_value
    return env


def render_html(report: dict, *, template: str = "report.html.j2") -> str:
    """Render a report object (from :func:`~backtest.report.build.build_report`) to HTML (step 3 of 4)."""
    tpl = environment().get_template(template)
    return tpl.render(report=report, plotly_packed=plotly_js_packed(), missing=MISSING)
