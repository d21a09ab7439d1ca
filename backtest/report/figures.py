"""Plotly figures of a report, as JSON-able dicts (``Plotly.newPlot(div, data, layout)``).

Series longer than ``max_points`` are reduced for plotting only (metrics always use every bar):
the bars are cut into ``max_points // 2`` equal buckets and each bucket keeps its minimum and
maximum, so peaks, troughs and liquidation spikes stay visible.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MAX_POINTS = 5000
GREEK_SERIES = ("delta", "gamma", "vega", "theta")
PALETTE = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3


def color(j: int) -> str:
    """The colour of column j, the same in every figure of a result."""
    return PALETTE[j % len(PALETTE)]


def downsample_index(y: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Positions of the points kept when plotting ``y`` (all of them when ``len(y) <= max_points``).

    The bars are cut into equal buckets (at most ``max_points // 2 - 1``); each keeps the
    positions of its minimum and maximum (NaN ignored); the first and last points are always
    kept, so at most ``max_points`` points remain.
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    size = -(-n // max(max_points // 2 - 1, 1))
    n_b = -(-n // size)
    pad = np.full(n_b * size, np.nan)
    pad[:n] = y
    finite = np.isfinite(pad)
    blocks_lo = np.where(finite, pad, np.inf).reshape(n_b, size)
    blocks_hi = np.where(finite, pad, -np.inf).reshape(n_b, size)
    base = np.arange(n_b) * size
    keep = np.concatenate([[0, n - 1], base + np.argmin(blocks_lo, axis=1), base + np.argmax(blocks_hi, axis=1)])
    return np.unique(keep[keep < n])


def _line(x: np.ndarray, y: np.ndarray, name: str, max_points: int, **kw: Any) -> go.Scatter:
    keep = downsample_index(y, max_points)
    return go.Scatter(x=x[keep].astype(np.float64), y=np.asarray(y, dtype=np.float64)[keep],
                      name=name, mode="lines", **kw)


def _figure() -> go.Figure:
    """An empty figure without plotly's default template (styled in :func:`_layout` instead,
    which keeps each figure's JSON small and building it fast)."""
    return go.Figure(layout={"template": "none"})


def _subplots(**kw: Any) -> go.Figure:
    return make_subplots(figure=_figure(), **kw)


def _layout(fig: go.Figure, title: str, ytitle: str | None = None, *, log_toggle: bool = False,
            n_y: int = 1, yfmt: str | None = None, height: int = 420) -> None:
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


def to_spec(fig: go.Figure) -> dict:
    """A figure as plain JSON (numpy arrays become plotly's typed-array specs)."""
    return json.loads(fig.to_json())


class ResultFrames:
    """One result's stored series pivoted to (bars x columns) frames, plus its events."""

    def __init__(self, name: str, doc: dict, series: pd.DataFrame, events: pd.DataFrame) -> None:
        self.name, self.doc = name, doc
        self.labels: list[str] = list(doc["columns"])
        part = series[series["result"] == name]
        first = part[part["col"] == 0].sort_values("bar")
        self.x = first["timestamp"].to_numpy(dtype=np.int64)
        self.price_usd = first["price_usd"].to_numpy(dtype=np.float64)
        self.price = first["underlying_price"].to_numpy(dtype=np.float64) \
            if "underlying_price" in first.columns else np.full(len(first), np.nan)
        self._part = part
        self.available = set(doc["series"]) | {f"{d}{s}" for d in ("return", "growth", "drawdown")
                                               for s in ("", "_usd")}
        self.events = events[events["result"] == name] if len(events) else events
        self._cache: dict[str, np.ndarray] = {}

    def get(self, key: str) -> np.ndarray | None:
        """Series ``key`` as (n_bars, n_cols), or None when the result does not have it."""
        if key not in self.available or key not in self._part.columns:
            return None
        if key not in self._cache:
            wide = self._part.pivot(index="bar", columns="col", values=key).sort_index()
            self._cache[key] = wide.reindex(columns=range(len(self.labels))).to_numpy(dtype=np.float64)
        return self._cache[key]

    def events_of(self, kind: str) -> pd.DataFrame:
        if not len(self.events):
            return self.events
        return self.events[self.events["kind"] == kind]


def _per_column(fig: go.Figure, rf: ResultFrames, key: str, max_points: int, *, suffix: str = "",
                row: int | None = None, dash: str | None = None, legendgroup: bool = True) -> bool:
    arr = rf.get(key)
    if arr is None:
        return False
    for j, label in enumerate(rf.labels):
        line = {"color": color(j), **({"dash": dash} if dash else {})}
        tr = _line(rf.x, arr[:, j], f"{label}{suffix}", max_points, line=line,
                   legendgroup=label if legendgroup else None)
        if row is None:
            fig.add_trace(tr)
        else:
            fig.add_trace(tr, row=row, col=1)
    return True


def result_figures(rf: ResultFrames, max_points: int = MAX_POINTS, *,
                   same_usd: bool = False) -> list[tuple[str, dict]]:
    """(title, figure spec) pairs for one result; figures whose series are absent are skipped.

    ``same_usd``: the result's settlement-currency numbers are its USD numbers (a USDT result at
    1 USD per USDT), so equity and drawdown are drawn once, labelled ``[USDT = USD]``, instead
    of twice with doubled legends.
    """
    cur = rf.doc["currency"]
    out: list[tuple[str, dict]] = []

    if same_usd:
        both = cur if cur == "USD" else f"{cur} = USD"
        fig = _figure()
        _per_column(fig, rf, "equity", max_points)
        _layout(fig, f"Equity [{both}]", both, log_toggle=True)
        out.append(("equity", to_spec(fig)))
        fig = _figure()
        _per_column(fig, rf, "drawdown", max_points)
        _layout(fig, f"Drawdown of the growth index [{both}]", "drawdown", yfmt=".0%")
        out.append(("drawdown", to_spec(fig)))
    else:
        fig = _subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"equity [{cur}]", "equity [USD]"))
        _per_column(fig, rf, "equity", max_points, row=1)
        _per_column(fig, rf, "equity_usd", max_points, suffix=" (USD)", row=2)
        _layout(fig, f"Equity [{cur}] and [USD]", log_toggle=True, n_y=2, height=560)
        out.append(("equity", to_spec(fig)))

        fig = _figure()
        _per_column(fig, rf, "drawdown", max_points, suffix=f" [{cur}]")
        _per_column(fig, rf, "drawdown_usd", max_points, suffix=" [USD]", dash="dot")
        _layout(fig, f"Drawdown of the growth index [{cur}] and [USD]", "drawdown", yfmt=".0%")
        out.append(("drawdown", to_spec(fig)))

    fig = _figure()
    if _per_column(fig, rf, "leverage", max_points):
        _layout(fig, "Leverage (|notional| / equity)", "x equity")
        out.append(("leverage", to_spec(fig)))

    mr = rf.get("margin_ratio")
    if mr is not None:
        fig = _figure()
        _per_column(fig, rf, "margin_ratio", max_points)
        xs = [float(rf.x[0]), float(rf.x[-1])]
        for t in sorted(set(rf.doc.get("margin_call_threshold") or [])):
            fig.add_trace(go.Scatter(x=xs, y=[t, t], mode="lines", name=f"margin-call threshold {t:g}",
                                     line={"dash": "dash", "color": "orange"}))
        fig.add_trace(go.Scatter(x=xs, y=[1.0, 1.0], mode="lines", name="liquidation (1.0)",
                                 line={"dash": "dash", "color": "red"}))
        _layout(fig, "Margin ratio (maintenance margin / margin balance)", "margin ratio")
        out.append(("margin_ratio", to_spec(fig)))

    price = _price_figure(rf, max_points)
    if price is not None:
        out.append(("price", price))

    fig = _figure()
    has = _per_column(fig, rf, "cum_funding", max_points, suffix=" funding")
    has |= _per_column(fig, rf, "cum_fees", max_points, suffix=" fees", dash="dot")
    added = rf.get("capital_added")
    if added is not None and np.any(np.nan_to_num(added) != 0):
        _per_column(fig, rf, "capital_added", max_points, suffix=" capital added", dash="dash")
    if has:
        _layout(fig, f"Cumulative funding (received +), fees and capital added [{cur}]", cur)
        out.append(("funding_fees", to_spec(fig)))

    greeks = [g for g in GREEK_SERIES if rf.get(g) is not None]
    if greeks:
        fig = _subplots(rows=len(greeks), cols=1, shared_xaxes=True, subplot_titles=greeks,
                            vertical_spacing=0.06)
        for i, g in enumerate(greeks, start=1):
            _per_column(fig, rf, g, max_points, suffix=f" {g}", row=i)
        _layout(fig, "Greeks of the option position", height=220 * len(greeks) + 120)
        out.append(("greeks", to_spec(fig)))
    if rf.get("premium_paid") is not None:
        fig = _figure()
        _per_column(fig, rf, "premium_paid", max_points)
        _layout(fig, f"Cumulative premium paid [{cur}]", cur)
        out.append(("premium", to_spec(fig)))

    ideal = sorted(k for k in rf.doc["series"] if k.startswith("ideal"))
    if rf.doc["kind"] == "inverse_product" or ideal:
        # NAV per unit when the result has it (the ideal path is per unit too), else equity
        nav = "nav" if rf.get("nav") is not None else "equity"
        fig = _figure()
        _per_column(fig, rf, nav, max_points, suffix=f" {nav}")
        if rf.get("nav_gross") is not None:
            _per_column(fig, rf, "nav_gross", max_points, suffix=" nav_gross (no costs)", dash="dash")
        for k in ideal:
            _per_column(fig, rf, k, max_points, suffix=f" {k}", dash="dot")
        _layout(fig, "NAV vs ideal" + ("" if nav == "nav" else f" [{cur}]"), nav, log_toggle=True)
        out.append(("nav_ideal", to_spec(fig)))
    return out


def _price_figure(rf: ResultFrames, max_points: int) -> dict | None:
    fig = _figure()
    source = rf.doc.get("price_source")
    has_line = source is not None and bool(np.any(np.isfinite(rf.price)))
    if has_line:
        fig.add_trace(_line(rf.x, rf.price, f"price ({source})", max_points, line={"color": "#444"}))
    _per_column(fig, rf, "liq_price", max_points, suffix=" liquidation price", dash="dot")
    markers = False
    liq = rf.events_of("liquidations")
    if len(liq):
        ycol = next((c for c in ("mark_price", "trigger_price", "price") if c in liq.columns), None)
        if ycol is not None:
            fig.add_trace(go.Scatter(
                x=liq["timestamp"].to_numpy(dtype=np.float64), y=liq[ycol].to_numpy(dtype=np.float64),
                mode="markers", name="liquidation", text=liq["column"].astype(str).tolist(),
                marker={"symbol": "x", "size": 11, "color": "red"}))
            markers = True
    calls = rf.events_of("margin_calls")
    if len(calls) and "price" in calls.columns:
        fig.add_trace(go.Scatter(
            x=calls["timestamp"].to_numpy(dtype=np.float64), y=calls["price"].to_numpy(dtype=np.float64),
            mode="markers", name="margin call", text=calls["column"].astype(str).tolist(),
            marker={"symbol": "triangle-up", "size": 9, "color": "orange"}))
        markers = True
    if not (has_line or markers or rf.get("liq_price") is not None):
        return None
    _layout(fig, "Price with liquidations and margin calls", "price")
    if has_line:
        # a far-away liquidation price (a nearly flat position) must not squash the price line:
        # show up to 3x the highest price; the lines beyond stay in the data (zoom out to see)
        top = float(np.nanmax(rf.price))
        fig.update_yaxes(range=[0.0, 3.0 * top])
    return to_spec(fig)


def comparison_figures(frames: list[ResultFrames], max_points: int = MAX_POINTS) -> list[tuple[str, dict]]:
    """Every column of every result overlaid, in USD (the common currency)."""
    eq, dd = _figure(), _figure()
    k = 0
    for rf in frames:
        e, d = rf.get("equity_usd"), rf.get("drawdown_usd")
        for j, label in enumerate(rf.labels):
            name = f"{rf.name}: {label}"
            line = {"color": color(k)}
            eq.add_trace(_line(rf.x, e[:, j], name, max_points, legendgroup=name, line=line))
            dd.add_trace(_line(rf.x, d[:, j], name, max_points, legendgroup=name, line=line))
            k += 1
    _layout(eq, "Equity of every column [USD]", "USD", log_toggle=True, height=520)
    _layout(dd, "Drawdown of every column [USD]", "drawdown", yfmt=".0%")
    return [("cmp_equity", to_spec(eq)), ("cmp_drawdown", to_spec(dd))]
