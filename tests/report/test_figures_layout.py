"""Plot's deferred layout updates give the JSON plotly's own (validated) updates give.

The report applies ``update_layout``/``update_xaxes``/``update_yaxes`` to the figure's JSON in
``Plot.spec`` instead of through plotly's validators (faster); plotly itself is the reference
here: the same calls on a ``go.Figure`` must give the same layout (the page writes each spec
with sorted keys, jinja's ``tojson``, so the key order is not part of the page).
"""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from backtest.report.figures import Plot, _layout


def _plotly_layout(fig: go.Figure, title: str, ytitle: str | None, *, log_toggle: bool, n_y: int,
                   yfmt: str | None, height: int) -> None:
    """The report's _layout written with plotly's own update calls (the code it replaced)."""
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


def _new(rows: int) -> go.Figure:
    fig = go.Figure(layout={"template": "none"})
    if rows > 1:
        fig = make_subplots(figure=fig, rows=rows, cols=1, shared_xaxes=True, subplot_titles=("a", "b", "c")[:rows])
    for r in range(1, rows + 1):
        tr = go.Scatter(y=np.arange(3.0) * r, name=f"line {r}", mode="lines")
        fig.add_trace(tr) if rows == 1 else fig.add_trace(tr, row=r, col=1)
    return fig


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize("opts", [
    {"ytitle": None, "log_toggle": False, "yfmt": None, "height": 420},
    {"ytitle": "equity", "log_toggle": True, "yfmt": None, "height": 560},
    {"ytitle": "drawdown", "log_toggle": False, "yfmt": ".0%", "height": 420},
])
def test_deferred_layout_serialises_as_plotly(rows: int, opts: dict) -> None:
    ref = _new(rows)
    _plotly_layout(ref, "a title", n_y=rows, **opts)
    ref.update_yaxes(rangemode="tozero")
    ref.update_yaxes(range=[1.5, 2.5])
    p = Plot(_new(rows))
    _layout(p, "a title", opts["ytitle"], log_toggle=opts["log_toggle"], n_y=rows, yfmt=opts["yfmt"],
            height=opts["height"])
    p.update_yaxes(rangemode="tozero")
    p.update_yaxes(range=[1.5, 2.5])
    spec = p.spec()
    expected = json.loads(ref.to_json())
    # the same keys and values (the page writes a spec with sorted keys: jinja's tojson)
    assert spec["layout"] == expected["layout"]
    assert json.dumps(spec["layout"], sort_keys=True) == json.dumps(expected["layout"], sort_keys=True)
    assert spec["data"] == expected["data"]


def test_unknown_shorthand_is_refused() -> None:
    p = Plot(_new(1))
    p.update_yaxes(title_font_size=3)
    with pytest.raises(ValueError, match="title_font_size.*nested dict"):
        p.spec()


def test_trace_dicts_serialise_as_plotly_scatter() -> None:
    """scatter(...) and Plot.add give the data plotly's go.Scatter and add_trace(row=) give."""
    from backtest.report.figures import _subplots, scatter

    line = np.array([1.5, np.nan, -2.25], dtype=np.float32)
    xs = np.array([1.6e12, 1.7e12])
    traces = [
        ({"y": line, "name": "c0", "mode": "lines", "line": {"color": "#636efa", "dash": "dot"},
          "legendgroup": None}, 1),
        ({"x": xs, "y": np.array([0.5, 2.0]), "mode": "markers", "name": "liquidation", "text": ["a", "b"],
          "marker": {"symbol": "x", "size": 11, "line": {"width": 1, "color": "darkred"}},
          "hovertemplate": "%{text}: liquidation<extra></extra>", "legendgroup": "liquidations",
          "showlegend": False}, 2),
        ({"x": [1.6e12, 1.7e12], "y": [1.0, 1.0], "mode": "lines", "name": "liquidation (1.0)"}, 2),
    ]
    kw = {"rows": 2, "cols": 1, "shared_xaxes": True, "vertical_spacing": 0.08, "subplot_titles": ("a", "b")}
    ref = make_subplots(figure=go.Figure(layout={"template": "none"}), **kw)
    p = _subplots(**kw)
    for props, row in traces:
        ref.add_trace(go.Scatter(**props), row=row, col=1)
        p.add(scatter(**props), None, row)
    expected = json.loads(ref.to_json())
    spec = p.spec()
    assert spec["data"] == expected["data"]
    assert spec["layout"] == expected["layout"]
    assert spec["x_of"] == [None, None, None]
    # a figure without subplots: plotly's empty figure, traces without axis references
    flat = go.Figure(layout={"template": "none"})
    flat.add_trace(go.Scatter(**traces[0][0]))
    q = Plot()
    q.add(scatter(**traces[0][0]))
    assert q.spec()["data"] == json.loads(flat.to_json())["data"]
    assert q.spec()["layout"] == json.loads(flat.to_json())["layout"]


def test_bad_traces_and_rows_are_refused() -> None:
    from backtest.report.figures import scatter

    p = Plot()
    with pytest.raises(TypeError, match="trace dict from figures.scatter"):
        p.add(go.Scatter(y=[1.0]))
    with pytest.raises(ValueError, match="row 2: this figure has subplot rows none"):
        p.add(scatter(y=[1.0]), None, 2)
    with pytest.raises(TypeError, match="dtype int64"):
        scatter(y=np.arange(3))
