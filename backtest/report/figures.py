"""Plotly figures of a report, as JSON-able dicts (``Plotly.newPlot(div, data, layout)``).

A report stays light whatever the number of columns:

* **Which columns.** Each result's figures draw the columns it is given (the ``top`` best ranked
  plus the baselines: :func:`backtest.report.build.plotted_columns`); every column stays in
  the tables and in ``equity.parquet``.
* **Decimation.** Series longer than ``max_points`` are reduced for display only, with
  min/max per bucket on one grid (:mod:`backtest.report.decimate`): peaks, troughs and
  one-bar spikes stay visible, the exact data is in Parquet.
* **Single precision.** Line values are drawn as float32 (:func:`display_values`), markers
  and x arrays as float64.
* **One x per figure.** Lines of one result share one x array: a spec holds it once in
  ``spec["x"]`` and ``spec["x_of"][i]`` names the x array of trace ``i`` (``None``: the trace
  carries its own ``x``, as markers do). The page's loader, or :func:`trace_x` in Python,
  puts it back in place before plotting.

Liquidation risk is drawn where a result has the series: the margin ratio at the close and,
dotted, at the bar's adverse extreme (``margin_ratio_adverse``: the value the engine checks),
with the 1.0 liquidation line and the margin-call thresholds; liquidation and margin-call
markers on every equity chart and on the margin-ratio chart; the distance to liquidation
(:func:`liquidation_distance`); liquidation prices on the price chart, where 0 or NaN means
"none" and is never drawn as a price.
"""

from __future__ import annotations

import base64
import json
import re
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backtest.report.decimate import decimate, grid_positions

# Most points per plotted line: about one min/max bucket per pixel of a plot ~1,240 px wide.
MAX_POINTS = 2400
GREEK_SERIES = ("delta", "gamma", "vega", "theta")
PALETTE = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3
LIQ_MARKER = {"symbol": "x", "size": 11, "color": "red", "line": {"width": 1, "color": "darkred"}}
CALL_MARKER = {"symbol": "triangle-up", "size": 9, "color": "orange"}
PRICE_PAD = 0.05  # price axes span the instrument's price range plus 5 % of it on each side


def color(j: int) -> str:
    """The colour of column j (its position in the result), the same in every figure."""
    return PALETTE[j % len(PALETTE)]


def liquidation_distance(liq_price: np.ndarray, price: np.ndarray) -> np.ndarray:
    """The adverse price move that reaches the liquidation price, as a fraction of the price.

    ``|liq_price / price - 1|`` (a short at 40,000 with a liquidation price of 44,000: 0.10, a
    10 % rise liquidates it). NaN where there is no liquidation price (0 or NaN: flat, or a
    position that cannot be liquidated) or no price. Shapes broadcast: ``liq_price`` (n, m),
    ``price`` (n, 1).
    """
    liq = np.asarray(liq_price, dtype=np.float64)
    px = np.asarray(price, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(liq / px - 1.0)
    return np.where((liq > 0) & (px > 0) & np.isfinite(liq) & np.isfinite(px), d, np.nan)


def no_zero_price(liq_price: np.ndarray) -> np.ndarray:
    """Liquidation prices for drawing: 0 (the engines' "none") and negatives become NaN."""
    arr = np.asarray(liq_price, dtype=np.float64)
    return np.where(arr > 0, arr, np.nan)


def display_values(y: np.ndarray) -> np.ndarray:
    """Line values as drawn: single precision (7 significant digits, finer than a pixel), half
    the bytes of float64; the exact values are in ``equity.parquet``."""
    return np.asarray(y, dtype=np.float32)


def _f8(x: np.ndarray) -> dict:
    """A float64 array as plotly's typed-array spec (little-endian base64)."""
    return {"dtype": "f8", "bdata": base64.b64encode(np.ascontiguousarray(x, dtype="<f8").tobytes()).decode()}


def decode_array(arr: Any) -> np.ndarray:
    """A spec array (plotly's typed-array dict or a plain list) as a numpy array."""
    if isinstance(arr, dict):
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]).newbyteorder("<"))
    return np.asarray(arr, dtype=np.float64)


def trace_x(spec: dict, i: int) -> np.ndarray:
    """The x values (ms UTC, float) of trace ``i`` of a figure spec, shared or its own."""
    k = spec.get("x_of", [None] * len(spec["data"]))[i]
    return decode_array(spec["x"][k] if k is not None else spec["data"][i]["x"])


class Plot:
    """A plotly figure, as the JSON plotly.js takes, whose lines share x arrays (see the module doc).

    Traces are plain dicts (:func:`scatter`) and the layout updates are merged into the JSON in
    :meth:`spec`: building ``go.Scatter`` objects and plotly's validated updates took most of a
    report's figure time; ``tests/report/test_figures_layout.py`` checks the JSON against plotly's.

    Parameters
    ----------
    fig : a plotly figure to start from (its data and layout as JSON); None: an empty figure
        without plotly's default template.
    rows : the subplot rows of ``fig`` (from ``make_subplots``, one column), 0 without subplots.
    """

    def __init__(self, fig: go.Figure | None = None, rows: int = 0) -> None:
        start = json.loads(fig.to_json() if fig is not None else _empty_json())
        self.data: list[dict] = start.get("data", [])
        self.layout: dict = start.get("layout", {})
        # each subplot row's axis references, as add_trace(row=...) sets them on a trace
        self._axes: dict[int, tuple[str, str]] = {}
        for r in range(1, rows + 1):
            sub = fig.get_subplot(r, 1)  # type: ignore[union-attr]
            self._axes[r] = ("x" + sub.xaxis.plotly_name[len("xaxis"):], "y" + sub.yaxis.plotly_name[len("yaxis"):])
        self._grids: list[np.ndarray] = []
        self._x_of: list[int | None] = [None] * len(self.data)
        self._updates: list[tuple[str, dict]] = []

    def update_layout(self, **props: Any) -> None:
        """Merge ``props`` into the layout (as ``go.Figure.update_layout``: nested dicts merged)."""
        self._updates.append(("layout", props))

    def update_xaxes(self, **props: Any) -> None:
        """Merge ``props`` into every x axis (as ``go.Figure.update_xaxes``)."""
        self._updates.append(("xaxis", props))

    def update_yaxes(self, **props: Any) -> None:
        """Merge ``props`` into every y axis (as ``go.Figure.update_yaxes``)."""
        self._updates.append(("yaxis", props))

    @property
    def n_traces(self) -> int:
        return len(self._x_of)

    def grid(self, x: np.ndarray) -> int:
        """Register a shared x array (the same object once) and return its number."""
        for k, g in enumerate(self._grids):
            if g is x:
                return k
        self._grids.append(x)
        return len(self._grids) - 1

    def add(self, trace: dict, grid: int | None = None, row: int | None = None) -> None:
        """Add ``trace`` (from :func:`scatter`); ``grid``: the number of its shared x array (its
        own ``x`` when None); ``row``: its subplot row."""
        if not isinstance(trace, dict):
            raise TypeError(f"Plot.add takes a trace dict from figures.scatter(...), not {type(trace).__name__}")
        trace = dict(trace)
        if row is not None:
            if row not in self._axes:
                raise ValueError(f"row {row}: this figure has subplot rows {sorted(self._axes) or 'none'}")
            trace["xaxis"], trace["yaxis"] = self._axes[row]
        self.data.append(trace)
        self._x_of.append(grid)

    def spec(self) -> dict:
        """The figure as plain JSON plus its shared x arrays (``x``, ``x_of``)."""
        layout = json.loads(json.dumps(self.layout))  # a copy: spec() can be called again
        for kind, props in self._updates:
            if kind == "layout":
                _merge(layout, props)
                continue
            # every axis of that letter, in plotly's order (xaxis, xaxis2, ...); a figure without
            # subplots has the one axis, created by the update as plotly does
            names = sorted((k for k in layout if re.fullmatch(kind + r"\d*", k)),
                           key=lambda k: int(k[len(kind):] or 1)) or [kind]
            for name in names:
                _merge(layout.setdefault(name, {}), _axis_props(props))
        return {"data": [dict(t) for t in self.data], "layout": layout,
                "x": [_f8(g) for g in self._grids], "x_of": list(self._x_of)}


@lru_cache(maxsize=1)
def _empty_json() -> str:
    """plotly's JSON of an empty figure without its default template (the same for every figure)."""
    return go.Figure(layout={"template": "none"}).to_json()


def _typed(v: np.ndarray) -> Any:
    """A numpy array as plotly serialises a trace's array: a typed-array spec (little-endian
    base64), an empty array as an empty list."""
    if v.size == 0:
        return []
    if v.dtype == np.float32:
        return {"dtype": "f4", "bdata": base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode()}
    if v.dtype == np.float64:
        return _f8(v)
    raise TypeError(f"trace array of dtype {v.dtype}: pass float32 (lines) or float64 values")


def scatter(**props: Any) -> dict:
    """A scatter trace as the JSON ``go.Scatter(**props)`` serialises to: properties that are
    None left out, numpy arrays as typed arrays (:func:`_typed`), ``type`` set."""
    out = {k: (_typed(v) if isinstance(v, np.ndarray) else v) for k, v in props.items() if v is not None}
    out["type"] = "scatter"
    return out


def _merge(dst: dict, src: dict) -> None:
    """Merge ``src`` into ``dst`` in place: dicts key by key (recursively), anything else replaced."""
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def _axis_props(props: dict) -> dict:
    """Axis properties with plotly's ``title_text`` shorthand spelled out (the one this module uses)."""
    out: dict = {}
    for k, v in props.items():
        if "_" in k:
            if k != "title_text":
                raise ValueError(f"axis property {k!r}: only 'title_text' is spelled out; pass a nested dict")
            out["title"] = {"text": v}
        else:
            out[k] = v
    return out


def _figure() -> Plot:
    """An empty figure without plotly's default template (styled in :func:`_layout` instead,
    which keeps each figure's JSON small and building it fast)."""
    return Plot()


def _subplots(**kw: Any) -> Plot:
    """Subplots in one column (``make_subplots`` keywords, ``rows`` among them)."""
    if kw.get("cols", 1) != 1:
        raise ValueError(f"cols={kw['cols']}: the report's subplots are one column")
    return Plot(make_subplots(figure=go.Figure(layout={"template": "none"}), **kw), rows=int(kw.get("rows", 1)))


def _layout(p: Plot, title: str, ytitle: str | None = None, *, log_toggle: bool = False,
            n_y: int = 1, yfmt: str | None = None, height: int = 420) -> None:
    fig = p
    fig.update_layout(
        title={"text": title}, height=height, hovermode="x unified", plot_bgcolor="white",
        paper_bgcolor="white", font={"family": "system-ui, sans-serif", "size": 12, "color": "#2a3f5f"},
        margin={"l": 70, "r": 20, "t": 60, "b": 40}, legend={"orientation": "h", "y": -0.15})
    fig.update_xaxes(type="date", gridcolor="#ebf0f8", linecolor="#ebf0f8", zeroline=False)
    fig.update_yaxes(gridcolor="#ebf0f8", zerolinecolor="#ebf0f8", linecolor="#ebf0f8")
    if ytitle:
        fig.update_yaxes(title_text=ytitle)
    if yfmt:
        fig.update_yaxes(tickformat=yfmt)
    if log_toggle:
        axes = ["yaxis"] + [f"yaxis{i}" for i in range(2, n_y + 1)]
        fig.update_layout(updatemenus=[{
            "type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.12,
            "buttons": [
                {"label": "linear", "method": "relayout", "args": [{f"{a}.type": "linear" for a in axes}]},
                {"label": "log", "method": "relayout", "args": [{f"{a}.type": "log" for a in axes}]},
            ]}])


class ResultFrames:
    """One result's stored series pivoted to (bars x plotted columns) frames, plus its events.

    Parameters
    ----------
    name, doc : the result's name and its ``metrics.json`` entry.
    series, events : the long tables (``equity.parquet``, ``events.parquet``).
    cols : positions of the columns to plot, in drawing order (default: every column).
    max_points : most points per plotted line.
    """

    def __init__(self, name: str, doc: dict, series: pd.DataFrame, events: pd.DataFrame,
                 cols: Sequence[int] | None = None, max_points: int = MAX_POINTS) -> None:
        self.name, self.doc = name, doc
        self.all_labels: list[str] = list(doc["columns"])
        self.cols: list[int] = list(range(len(self.all_labels))) if cols is None else [int(c) for c in cols]
        self.labels = [self.all_labels[c] for c in self.cols]
        # row positions of this result in the long table: only the columns a figure asks for
        # are gathered (copying the whole result's rows, every column, cost more than the figures)
        rows = np.flatnonzero((series["result"] == name).to_numpy(dtype=bool, na_value=False))
        col = series["col"].to_numpy()[rows]
        bar = series["bar"].to_numpy()[rows]
        first = rows[col == 0]
        first = first[np.argsort(series["bar"].to_numpy()[first], kind="stable")]
        self.x = series["timestamp"].to_numpy(dtype=np.int64)[first]
        self.price_usd = series["price_usd"].to_numpy(dtype=np.float64)[first]
        self.price = series["underlying_price"].to_numpy(dtype=np.float64)[first] \
            if "underlying_price" in series.columns else np.full(len(first), np.nan)
        # the plotted columns' rows, their bar and their position among the distinct plotted
        # columns (bars past column 0's are not drawn, as a pivot reindexed on its bars)
        self._ucols, self._col_of = np.unique(np.asarray(self.cols, dtype=np.int64), return_inverse=True)
        keep = np.isin(col, self._ucols) & (bar < len(first))
        self._rows, self._bar = rows[keep], bar[keep].astype(np.int64)
        self._upos = np.searchsorted(self._ucols, col[keep])
        flat = self._bar * len(self._ucols) + self._upos
        if len(flat) and np.bincount(flat).max() > 1:
            raise ValueError(f"equity series of result {name!r}: a (bar, col) pair is stored twice; "
                             "write the report again")
        self._series = series
        self.available = set(doc["series"]) | {f"{d}{s}" for d in ("return", "growth", "drawdown")
                                               for s in ("", "_usd")}
        ev = events[events["result"] == name] if len(events) else events
        self.events = ev[ev["col"].isin(self.cols)] if len(ev) else ev
        self.max_points = max_points
        self.positions = grid_positions(len(self.x), max_points)
        # the shared x of every line of this result (ms UTC as float64, plotly's date numbers)
        self.grid_x = self.x[self.positions].astype(np.float64)
        self._cache: dict[str, np.ndarray] = {}

    @property
    def n_bars(self) -> int:
        return len(self.x)

    def get(self, key: str) -> np.ndarray | None:
        """Series ``key`` as (n_bars, len(cols)), every bar, or None when the result lacks it."""
        if key not in self.available or key not in self._series.columns:
            return None
        if key not in self._cache:
            # scattered into (bars x distinct plotted columns), NaN where a bar has no row: what
            # pivot(bar, col) reindexed on every bar and the plotted columns gives, without pandas
            wide = np.full((self.n_bars, len(self._ucols)), np.nan)
            wide[self._bar, self._upos] = self._series[key].to_numpy(dtype=np.float64)[self._rows]
            self._cache[key] = wide[:, self._col_of]
        return self._cache[key]

    def events_of(self, kind: str) -> pd.DataFrame:
        if not len(self.events):
            return self.events
        return self.events[self.events["kind"] == kind]

    def at_events(self, kind: str, key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(x ms, value of series ``key`` at the record's bar and column, column label) of the
        records of ``kind`` in the plotted columns; empty when there are none."""
        ev = self.events_of(kind)
        arr = self.get(key)
        if not len(ev) or arr is None:
            return np.empty(0), np.empty(0), []
        pos = {c: i for i, c in enumerate(self.cols)}
        bars = ev["bar"].to_numpy(dtype=np.int64)
        cols = np.array([pos[int(c)] for c in ev["col"]], dtype=np.int64)
        return ev["timestamp"].to_numpy(dtype=np.float64), arr[bars, cols], ev["column"].astype(str).tolist()


def _per_column(p: Plot, rf: ResultFrames, key: str, *, suffix: str = "", row: int | None = None,
                dash: str | None = None, legendgroup: bool = True, values: np.ndarray | None = None,
                width: float | None = None) -> bool:
    """One line per plotted column of series ``key`` (or of ``values``, (n_bars, len(cols))),
    decimated on the result's shared grid; False when the result lacks the series."""
    arr = rf.get(key) if values is None else values
    if arr is None:
        return False
    grid = p.grid(rf.grid_x)
    dec = decimate(arr, rf.max_points)
    for i, (j, label) in enumerate(zip(rf.cols, rf.labels)):
        line = {"color": color(j), **({"dash": dash} if dash else {}), **({"width": width} if width else {})}
        p.add(scatter(y=display_values(dec[:, i]), name=f"{label}{suffix}", mode="lines", line=line,
                         legendgroup=label if legendgroup else None), grid, row)
    return True


def _markers(p: Plot, x: np.ndarray, y: np.ndarray, labels: list[str], name: str, marker: dict,
             row: int | None = None, legendgroup: str | None = None, showlegend: bool = True) -> bool:
    if not len(x):
        return False
    p.add(scatter(x=x, y=y, mode="markers", name=name, text=labels, marker=marker,
                     hovertemplate="%{text}: " + name + "<extra></extra>", legendgroup=legendgroup,
                     showlegend=showlegend), None, row)
    return True


def _event_markers(p: Plot, rf: ResultFrames, key: str, row: int | None = None, first: bool = True) -> None:
    """Liquidation and margin-call markers on the line of series ``key`` (an equity chart)."""
    for kind, name, marker in (("liquidations", "liquidation", LIQ_MARKER), ("margin_calls", "margin call", CALL_MARKER)):
        x, y, labels = rf.at_events(kind, key)
        _markers(p, x, y, labels, name, marker, row, legendgroup=kind, showlegend=first)


def result_figures(rf: ResultFrames, *, same_usd: bool = False) -> list[tuple[str, dict]]:
    """(slug, figure spec) pairs for one result; figures whose series are absent are skipped.

    ``same_usd``: the result's settlement-currency numbers are its USD numbers (a USDT result at
    1 USD per USDT), so equity and drawdown are drawn once, labelled ``[USDT = USD]``, instead
    of twice with doubled legends.
    """
    if not rf.cols:
        return []
    cur = rf.doc["currency"]
    out: list[tuple[str, dict]] = []

    if same_usd:
        both = cur if cur == "USD" else f"{cur} = USD"
        p = _figure()
        _per_column(p, rf, "equity")
        _event_markers(p, rf, "equity")
        _layout(p, f"Equity [{both}] with liquidations and margin calls", both, log_toggle=True)
        out.append(("equity", p.spec()))
        p = _figure()
        _per_column(p, rf, "drawdown")
        _layout(p, f"Drawdown of the growth index [{both}]", "drawdown", yfmt=".0%")
        out.append(("drawdown", p.spec()))
    else:
        p = _subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                      subplot_titles=(f"equity [{cur}]", "equity [USD]"))
        _per_column(p, rf, "equity", row=1)
        _event_markers(p, rf, "equity", row=1)
        _per_column(p, rf, "equity_usd", suffix=" (USD)", row=2)
        _event_markers(p, rf, "equity_usd", row=2, first=False)
        _layout(p, f"Equity [{cur}] and [USD] with liquidations and margin calls", log_toggle=True, n_y=2,
                height=560)
        out.append(("equity", p.spec()))

        p = _figure()
        _per_column(p, rf, "drawdown", suffix=f" [{cur}]")
        _per_column(p, rf, "drawdown_usd", suffix=" [USD]", dash="dot")
        _layout(p, f"Drawdown of the growth index [{cur}] and [USD]", "drawdown", yfmt=".0%")
        out.append(("drawdown", p.spec()))

    p = _figure()
    if _per_column(p, rf, "leverage"):
        _layout(p, "Leverage (|notional| / equity)", "x equity")
        out.append(("leverage", p.spec()))

    p = _figure()
    if _per_column(p, rf, "beta_exposure"):  # a book run with betas
        _layout(p, "Beta-weighted (BTC-equivalent) exposure: sum of beta x signed notional / equity", "x equity")
        out.append(("beta_exposure", p.spec()))

    mr = _margin_ratio_figure(rf)
    if mr is not None:
        out.append(("margin_ratio", mr))

    dist = _distance_figure(rf)
    if dist is not None:
        out.append(("liq_distance", dist))

    price = _price_figure(rf)
    if price is not None:
        out.append(("price", price))

    p = _figure()
    has = _per_column(p, rf, "cum_funding", suffix=" funding")
    has |= _per_column(p, rf, "cum_fees", suffix=" fees", dash="dot")
    added = rf.get("capital_added")
    if added is not None and np.any(np.nan_to_num(added) != 0):
        _per_column(p, rf, "capital_added", suffix=" capital added", dash="dash")
    if has:
        _layout(p, f"Cumulative funding (received +), fees and capital added [{cur}]", cur)
        out.append(("funding_fees", p.spec()))

    greeks = [g for g in GREEK_SERIES if rf.get(g) is not None]
    if greeks:
        p = _subplots(rows=len(greeks), cols=1, shared_xaxes=True, subplot_titles=greeks, vertical_spacing=0.06)
        for i, g in enumerate(greeks, start=1):
            _per_column(p, rf, g, suffix=f" {g}", row=i)
        _layout(p, "Greeks of the option position", height=220 * len(greeks) + 120)
        out.append(("greeks", p.spec()))
    if rf.get("premium_paid") is not None:
        p = _figure()
        _per_column(p, rf, "premium_paid")
        _layout(p, f"Cumulative premium paid [{cur}]", cur)
        out.append(("premium", p.spec()))

    ideal = sorted(k for k in rf.doc["series"] if k.startswith("ideal"))
    if rf.doc["kind"] == "inverse_product" or ideal:
        # NAV per unit when the result has it (the ideal path is per unit too), else equity
        nav = "nav" if rf.get("nav") is not None else "equity"
        p = _figure()
        _per_column(p, rf, nav, suffix=f" {nav}")
        if rf.get("nav_gross") is not None:
            _per_column(p, rf, "nav_gross", suffix=" nav_gross (no costs)", dash="dash")
        for k in ideal:
            _per_column(p, rf, k, suffix=f" {k}", dash="dot")
        _layout(p, "NAV vs ideal" + ("" if nav == "nav" else f" [{cur}]"), nav, log_toggle=True)
        out.append(("nav_ideal", p.spec()))
    return out


def _margin_ratio_figure(rf: ResultFrames) -> dict | None:
    """Margin ratio at the close (solid) and at the bar's adverse extreme (dotted), the 1.0
    liquidation line, the margin-call thresholds, and the records as markers."""
    if rf.get("margin_ratio") is None and rf.get("margin_ratio_adverse") is None:
        return None
    p = _figure()
    _per_column(p, rf, "margin_ratio", suffix=" (close)")
    adverse = _per_column(p, rf, "margin_ratio_adverse", suffix=" (adverse extreme)", dash="dot")
    xs = [float(rf.x[0]), float(rf.x[-1])]
    for t in sorted(set(rf.doc.get("margin_call_threshold") or [])):
        p.add(scatter(x=xs, y=[t, t], mode="lines", name=f"margin-call threshold {t:g}",
                         line={"dash": "dash", "color": "orange"}))
    p.add(scatter(x=xs, y=[1.0, 1.0], mode="lines", name="liquidation (1.0)", line={"dash": "dash", "color": "red"}))
    # a liquidation is where the ratio checked (at the adverse extreme) reached 1.0: drawn at
    # the adverse ratio of its bar where the result has it, else on the 1.0 line
    x, y, labels = rf.at_events("liquidations", "margin_ratio_adverse")
    if not len(x):
        liq = rf.events_of("liquidations")
        x, labels = liq["timestamp"].to_numpy(dtype=np.float64), liq["column"].astype(str).tolist()
        y = np.ones(len(x))
    _markers(p, x, y, labels, "liquidation", LIQ_MARKER)
    calls = rf.events_of("margin_calls")
    if len(calls):
        if "margin_ratio" in calls.columns:
            cy = calls["margin_ratio"].to_numpy(dtype=np.float64)
        else:
            _, cy, _ = rf.at_events("margin_calls", "margin_ratio_adverse" if adverse else "margin_ratio")
        _markers(p, calls["timestamp"].to_numpy(dtype=np.float64), cy, calls["column"].astype(str).tolist(),
                 "margin call", CALL_MARKER)
    what = "close (solid) and adverse extreme of the bar (dotted)" if adverse else "close"
    _layout(p, f"Margin ratio (maintenance margin / margin balance) at the {what}", "margin ratio")
    return p.spec()


def _distance_figure(rf: ResultFrames) -> dict | None:
    """Distance to liquidation per column: a book's own account series ``liq_distance`` (the
    smallest common adverse move that liquidates the account), else from the result's
    liquidation prices and a price."""
    acct = rf.get("liq_distance")  # a book: one account, several positions
    if acct is not None:
        dist = np.where(np.isfinite(acct), acct, np.nan)  # inf: no move liquidates it, nothing to draw
        title = ("Distance to liquidation of the account: the smallest common adverse move (every position's "
                 "mark against it at once) that liquidates it (none while flat)")
    else:
        liq = rf.get("liq_price")
        if liq is None or not np.any(np.isfinite(rf.price)):
            return None
        dist = liquidation_distance(liq, rf.price[:, None])
        src = rf.doc.get("price_source") or "price"
        title = f"Distance to liquidation: |liquidation price / price - 1| (price: {src}; none while flat)"
    if not np.any(np.isfinite(dist)):
        return None
    p = _figure()
    _per_column(p, rf, "liq_distance", values=dist)
    _event_markers_at(p, rf, "liquidations", "liquidation", LIQ_MARKER, 0.0)
    _layout(p, title, "adverse move", yfmt=".0%")
    p.update_yaxes(rangemode="tozero")
    return p.spec()


def _event_markers_at(p: Plot, rf: ResultFrames, kind: str, name: str, marker: dict, y: float) -> None:
    ev = rf.events_of(kind)
    if len(ev):
        _markers(p, ev["timestamp"].to_numpy(dtype=np.float64), np.full(len(ev), y),
                 ev["column"].astype(str).tolist(), name, marker)


def _price_figure(rf: ResultFrames) -> dict | None:
    p = _figure()
    source = rf.doc.get("price_source")
    has_line = source is not None and bool(np.any(np.isfinite(rf.price)))
    if has_line:
        grid = p.grid(rf.grid_x)
        p.add(scatter(y=display_values(decimate(rf.price, rf.max_points)), name=f"price ({source})", mode="lines",
                         line={"color": "#444"}), grid)
    liq = rf.get("liq_price")
    has_liq = liq is not None and bool(np.any(liq > 0))
    if has_liq:
        _per_column(p, rf, "liq_price", suffix=" liquidation price", dash="dot", values=no_zero_price(liq))
    marker_y: list[np.ndarray] = []
    liqs = rf.events_of("liquidations")
    if len(liqs):
        ycol = next((c for c in ("mark_price", "trigger_price", "price") if c in liqs.columns), None)
        if ycol is not None:
            y = liqs[ycol].to_numpy(dtype=np.float64)
            _markers(p, liqs["timestamp"].to_numpy(dtype=np.float64), y, liqs["column"].astype(str).tolist(),
                     "liquidation", LIQ_MARKER)
            marker_y.append(y)
    calls = rf.events_of("margin_calls")
    if len(calls) and "price" in calls.columns:
        y = calls["price"].to_numpy(dtype=np.float64)
        _markers(p, calls["timestamp"].to_numpy(dtype=np.float64), y, calls["column"].astype(str).tolist(),
                 "margin call", CALL_MARKER)
        marker_y.append(y)
    if not (has_line or marker_y or has_liq):
        return None
    _layout(p, "Price with liquidation prices, liquidations and margin calls", "price")
    rng = price_range(rf.price if has_line else np.empty(0), *marker_y)
    if rng is not None:
        # fitted to the instrument's price: a far-away liquidation price (a nearly flat position)
        # must not squash the price line; the lines beyond stay in the figure (autoscale shows them)
        p.update_yaxes(range=[float(v) for v in rng])
    return p.spec()


def price_range(*prices: np.ndarray) -> tuple[float, float] | None:
    """The y range of a price axis: the finite positive prices given, padded by
    :data:`PRICE_PAD` of their span (of the price when the span is 0); None when there are none."""
    vals = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in prices]) if prices else np.empty(0)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if not len(vals):
        return None
    lo, hi = float(vals.min()), float(vals.max())
    pad = PRICE_PAD * ((hi - lo) or hi)
    return max(lo - pad, 0.0), hi + pad


def comparison_figures(frames: list[ResultFrames]) -> list[tuple[str, dict]]:
    """The plotted columns of every result overlaid, in USD (the common currency), with the
    liquidation and margin-call markers on the equity chart."""
    eq, dd = _figure(), _figure()
    k = 0
    for rf in frames:
        if not rf.cols:
            continue
        ge, gd = eq.grid(rf.grid_x), dd.grid(rf.grid_x)
        e = decimate(rf.get("equity_usd"), rf.max_points)
        d = decimate(rf.get("drawdown_usd"), rf.max_points)
        for i, label in enumerate(rf.labels):
            name = f"{rf.name}: {label}"
            line = {"color": color(k)}
            eq.add(scatter(y=display_values(e[:, i]), name=name, mode="lines", legendgroup=name, line=line), ge)
            dd.add(scatter(y=display_values(d[:, i]), name=name, mode="lines", legendgroup=name, line=line), gd)
            k += 1
    for kind, name, marker in (("liquidations", "liquidation", LIQ_MARKER), ("margin_calls", "margin call", CALL_MARKER)):
        xs, ys, labels = [], [], []
        for rf in frames:
            if rf.cols:
                x, y, lab = rf.at_events(kind, "equity_usd")
                xs.append(x)
                ys.append(y)
                labels += [f"{rf.name}: {c}" for c in lab]
        if labels:
            _markers(eq, np.concatenate(xs), np.concatenate(ys), labels, name, marker, legendgroup=kind)
    _layout(eq, "Equity [USD] with liquidations and margin calls", "USD", log_toggle=True, height=520)
    _layout(dd, "Drawdown [USD]", "drawdown", yfmt=".0%")
    return [("cmp_equity", eq.spec()), ("cmp_drawdown", dd.spec())]
