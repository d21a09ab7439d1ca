"""Liquidation risk in the report's figures, and which columns are plotted (read from the
figure JSON): markers at the liquidation and margin-call bars on every equity chart, the margin
ratio at the adverse extreme, the distance to liquidation, no liquidation price 0.0 drawn, price
axes fitted to the price; the top columns and the baselines plotted, every column in the tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backtest.metrics import index_ms
from backtest.report import build_report, collect, render_html
from backtest.report.figures import PRICE_PAD, decode_array, trace_x
from report_factories import LIQ, from_equity, perp_result
from report_html import metric_cells, section


def _figs(report: dict) -> dict:
    return {f["id"]: f["spec"] for f in report["figures"]}


def _trace(spec: dict, name: str) -> tuple[int, dict]:
    return next((i, t) for i, t in enumerate(spec["data"]) if t.get("name") == name)


def _xy(spec: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    i, t = _trace(spec, name)
    return trace_x(spec, i), decode_array(t["y"])


@pytest.fixture(scope="module")
def perp():
    res = perp_result()
    liq = res.series["liq_price"].copy()
    liq[40:, 1] = 0.0  # the engines write 0.0 = "no liquidation price" once flat
    return dataclasses.replace(res, series={**res.series, "liq_price": liq})


@pytest.fixture(scope="module")
def perp_report(perp):
    return build_report(collect({"perp": perp}, title="t"))


def test_liquidation_and_margin_call_markers_on_every_equity_chart(perp, perp_report):
    ts = index_ms(perp.index).astype(float)
    eq = perp.series["equity"]
    figs = _figs(perp_report)
    for fid in ("fig-0-equity", "fig-cmp_equity"):
        spec = figs[fid]
        x, y = _xy(spec, "liquidation")
        assert x.tolist() == [ts[40]] and y.tolist() == [eq[40, 1]], fid  # x10 liquidated at bar 40
        x, y = _xy(spec, "margin call")
        assert x.tolist() == [ts[37], ts[39]] and y.tolist() == [eq[37, 1], eq[39, 1]], fid
        _, t = _trace(spec, "liquidation")
        assert t["mode"] == "markers" and t["text"][0].endswith("x10")


def test_margin_ratio_chart_marks_the_liquidation_on_the_1_line(perp, perp_report):
    ts = index_ms(perp.index).astype(float)
    spec = _figs(perp_report)["fig-0-margin_ratio"]
    # no adverse series in this result: the liquidation is drawn where the engine's check fired, 1.0
    assert _xy(spec, "liquidation")[1].tolist() == [1.0] and _xy(spec, "liquidation")[0].tolist() == [ts[40]]
    # margin calls at the ratio their records state
    assert _xy(spec, "margin call")[1].tolist() == [0.85, 0.95]
    assert _xy(spec, "liquidation (1.0)")[1].tolist() == [1.0, 1.0]
    assert not any("adverse" in (t.get("name") or "") for t in spec["data"])


def test_no_liquidation_price_zero_is_drawn(perp, perp_report):
    spec = _figs(perp_report)["fig-0-price"]
    x, y = _xy(spec, "x10 liquidation price")
    assert len(y) == perp.n_bars and not np.any(y == 0.0)
    assert np.all(np.isnan(y[40:])) and np.all(np.isfinite(y[:40]))
    # the other column's line is drawn whole (float32 on the display)
    np.testing.assert_array_equal(_xy(spec, "x2 liquidation price")[1], perp.series["liq_price"][:, 0].astype(np.float32))


def test_distance_to_liquidation_closed_form(perp, perp_report):
    spec = _figs(perp_report)["fig-0-liq_distance"]
    price = perp.series["price"][:, 0]
    liq = perp.series["liq_price"]
    for j, label in enumerate(("x2", "x10")):
        _, y = _xy(spec, label)
        want = np.abs(liq[:, j] / price - 1.0)
        want[liq[:, j] == 0] = np.nan  # no liquidation price: no distance
        np.testing.assert_array_equal(y, want.astype(np.float32))
    # x2: short at 2x from price[0], liquidation price price[0] * 1.5: 50 % away at the start
    assert _xy(spec, "x2")[1][0] == np.float32(0.5)
    assert _xy(spec, "liquidation")[1].tolist() == [0.0]


def test_price_axis_is_fitted_to_the_price(perp, perp_report):
    spec = _figs(perp_report)["fig-0-price"]
    price = perp.series["price"][:, 0]
    marks = np.concatenate([perp.records["liquidations"]["mark_price"], perp.records["margin_calls"]["price"]])
    lo, hi = min(price.min(), marks.min()), max(price.max(), marks.max())
    pad = PRICE_PAD * (hi - lo)
    assert spec["layout"]["yaxis"]["range"] == pytest.approx([lo - pad, hi + pad], rel=1e-12)
    assert spec["layout"]["yaxis"]["range"][0] > 0.5 * price.min()  # not from 0


def test_adverse_margin_ratio_drawn_next_to_the_close_and_the_liquidation_on_it():
    n = 30
    mr = np.linspace(0.2, 0.6, n)[:, None]
    adverse = mr + 0.1
    adverse[20, 0] = 1.03  # the bar's adverse extreme crossed 1.0: liquidated at bar 20
    liqs = np.zeros(1, dtype=LIQ)
    liqs["bar"], liqs["col"], liqs["mark_price"] = 20, 0, 123.0
    res = from_equity(100 * np.ones((n, 1)), kind="book", columns=["basket"],
                      extra={"margin_ratio": mr, "margin_ratio_adverse": adverse},
                      records={"liquidations": liqs})
    spec = _figs(build_report(collect({"book": res}, title="t")))["fig-0-margin_ratio"]
    np.testing.assert_array_equal(_xy(spec, "basket (close)")[1], mr[:, 0].astype(np.float32))
    i, t = _trace(spec, "basket (adverse extreme)")
    np.testing.assert_array_equal(decode_array(t["y"]), adverse[:, 0].astype(np.float32))
    assert t["line"]["dash"] == "dot"
    # the marker sits on the adverse ratio of its bar, above the 1.0 line
    x, y = _xy(spec, "liquidation")
    assert y.tolist() == [1.03] and x.tolist() == [float(index_ms(res.index)[20])]
    assert "adverse extreme" in spec["layout"]["title"]["text"]


def test_lines_of_a_figure_share_one_x_array(perp_report):
    spec = _figs(perp_report)["fig-0-equity"]
    lines = [i for i, t in enumerate(spec["data"]) if t["mode"] == "lines"]
    assert len(lines) == 2 and len(spec["x"]) == 1
    assert all(spec["x_of"][i] == 0 and "x" not in spec["data"][i] for i in lines)
    markers = [i for i, t in enumerate(spec["data"]) if t["mode"] == "markers"]
    assert markers and all(spec["x_of"][i] is None and "x" in spec["data"][i] for i in markers)


def _ranked_result(m: int = 8, baseline=None):
    rng = np.random.default_rng(4)
    # column j drifts by j: the last columns rank best by calmar
    eq = 100 * np.cumprod(1 + 0.001 * np.arange(m) / m + rng.normal(0, 0.004, (200, m)), axis=0)
    meta = {} if baseline is None else {"baseline": baseline}
    return from_equity(eq, columns=[f"c{j}" for j in range(m)], meta=meta)


def test_plots_show_the_top_columns_and_the_baselines_tables_show_all():
    res = _ranked_result(baseline=["c0"])
    run = collect({"grid": res, "hold": _ranked_result(2, baseline=True)}, title="t")
    report = build_report(run, top=2)
    ranked = [r["column"] for r in run.metrics["comparison"]["rows"] if r["result"] == "grid"]
    assert ranked[0] != "c0" and ranked.index("c0") >= 2  # the baseline is not among the best
    figs = _figs(report)
    lines = [t["name"] for t in figs["fig-0-equity"]["data"] if t["mode"] == "lines"]
    assert lines == [c for c in ranked if c in ranked[:2] or c == "c0"]
    assert report["results"][0]["plotted"]["columns"] == lines
    assert report["results"][0]["plotted"]["baselines"] == ["c0"]
    # the comparison: the run's 2 best, the baseline column of 'grid' and every column of 'hold'
    rows = run.metrics["comparison"]["rows"]
    best = [f"{r['result']}: {r['column']}" for r in rows[:2]]
    cmp_lines = {t["name"] for t in figs["fig-cmp_equity"]["data"] if t["mode"] == "lines"}
    assert cmp_lines == set(best) | {"grid: c0", "hold: c0", "hold: c1"}
    # every column of every result in the tables
    html = render_html(report)
    assert {c["col"] for c in metric_cells(section(html, "result-0"))} == {f"c{j}" for j in range(8)}
    assert {c["col"] for c in metric_cells(section(html, "summary")) if c["result"] == "grid"} == {
        f"c{j}" for j in range(8)}
    assert "Plotted: 3 of\n    8 columns, the 2 best ranked and the baselines (c0)" in section(html, "result-0")


def test_top_zero_plots_only_the_baselines():
    run = collect({"grid": _ranked_result(4)}, title="t")
    report = build_report(run, top=0)
    assert report["figures"] == [] and report["results"][0]["plotted"]["columns"] == []
    with pytest.raises(ValueError, match="top=-1"):
        build_report(run, top=-1)
