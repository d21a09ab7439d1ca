"""The build step: figures per result kind, downsampling, the price line, formatting filters."""

from __future__ import annotations

import base64
import dataclasses
import json

import numpy as np
import pytest

from backtest.metrics import index_ms
from backtest.report import build_report, collect, decimate, grid_positions
from backtest.report.collect import price_line
from backtest.report.figures import trace_x
from backtest.report.render import fmt_metric
from report_factories import from_equity, inverse_result, perp_result, put_result


@pytest.fixture(scope="module")
def results():
    return {"perp policies": perp_result(), "put": put_result(), "inverse product": inverse_result()}


def _decode(arr):
    if isinstance(arr, dict):
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]).newbyteorder("<"))
    return np.asarray(arr, dtype=np.float64)


def test_long_series_are_downsampled_for_plots_only(tmp_path):
    n = 12_000
    rng = np.random.default_rng(5)
    eq = 100 * np.cumprod(1 + rng.normal(0, 0.002, n))
    eq[7_777] *= 0.5  # a one-bar spike the plot must keep
    res = from_equity(eq, columns=["long"])
    run = collect({"long": res}, title="t")
    report = build_report(run, max_points=5000)
    assert report["downsampled"] is True
    assert run.metrics["results"]["long"]["settle"]["n_bars"] == n
    eq_fig = next(f for f in report["figures"] if f["id"].endswith("-equity"))
    spec = eq_fig["spec"]
    y = _decode(spec["data"][0]["y"])
    assert 1000 < len(y) <= 5000
    e32 = eq.astype(np.float32)  # lines are drawn in single precision
    assert y.dtype == np.float32
    assert y.min() == e32.min() and y.max() == e32.max() and e32[7_777] in y
    assert y[0] == e32[0] and y[-1] == e32[-1]
    np.testing.assert_array_equal(y, decimate(eq, 5000).astype(np.float32))
    # the line's x is the figure's shared grid: bar open times at the grid positions
    ts = index_ms(res.index)
    np.testing.assert_array_equal(trace_x(spec, 0), ts[grid_positions(n, 5000)].astype(float))
    assert "x" not in spec["data"][0] and len(spec["x"]) == 1
    # a short series is drawn whole
    short = build_report(collect({"s": from_equity(eq[:100], columns=["s"])}, title="t"), max_points=5000)
    sfig = next(f for f in short["figures"] if f["id"].endswith("-equity"))["spec"]
    np.testing.assert_array_equal(_decode(sfig["data"][0]["y"]), e32[:100])
    assert short["downsampled"] is False


def test_figures_follow_what_the_result_has(results):
    report = build_report(collect(results, title="t"))
    ids = [f["id"] for f in report["figures"]]
    perp_ids = {i.split("-", 2)[2] for i in ids if i.startswith("fig-0-")}
    assert {"equity", "drawdown", "leverage", "margin_ratio", "price", "funding_fees"} <= perp_ids
    assert "greeks" not in perp_ids and "nav_ideal" not in perp_ids
    put_ids = {i.split("-", 2)[2] for i in ids if i.startswith("fig-1-")}
    assert {"greeks", "premium"} <= put_ids and "margin_ratio" not in put_ids
    inv_ids = {i.split("-", 2)[2] for i in ids if i.startswith("fig-2-")}
    assert "nav_ideal" in inv_ids
    assert {"fig-cmp_equity", "fig-cmp_drawdown"} <= set(ids)
    mr = next(f for f in report["figures"] if f["id"] == "fig-0-margin_ratio")["spec"]
    names = [t.get("name") for t in mr["data"]]
    assert "margin-call threshold 0.8" in names and "liquidation (1.0)" in names
    price = next(f for f in report["figures"] if f["id"] == "fig-0-price")["spec"]
    liq = next(t for t in price["data"] if t.get("name") == "liquidation")
    assert _decode(liq["y"]).tolist() == [results["perp policies"].records["liquidations"]["mark_price"][0]]
    calls = next(t for t in price["data"] if t.get("name") == "margin call")
    assert len(_decode(calls["y"])) == 2
    # the report object is plain JSON
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_price_line_sources():
    perp = perp_result()
    px, src = price_line(perp)
    assert src == "series 'price'" and np.array_equal(px, perp.series["price"][:, 0])
    # without a price series a linear perp's price is |notional / position| / contract_size
    series = {k: v for k, v in perp.series.items() if k != "price"}
    bare = dataclasses.replace(perp, series=series, meta={**perp.meta, "contract_size": 1.0})
    px2, src2 = price_line(bare)
    assert src2 == "|notional / position| / contract_size"
    np.testing.assert_allclose(px2, perp.series["price"][:, 0], rtol=1e-12)
    flat = dataclasses.replace(bare, series={**series, "position": np.zeros_like(series["position"])})
    assert price_line(flat) == (None, None)
    coin = put_result()
    px3, src3 = price_line(coin)
    assert src3 == "price_usd" and np.array_equal(px3, coin.price_usd)


@pytest.mark.parametrize("value, unit, text", [
    (0.123456, "fraction", "12.35%"),
    (-1.0, "fraction", "-100.00%"),
    (1.23456, "ratio", "1.235"),
    (2.5, "leverage", "2.50x"),
    (12345.678, "money", "12,345.68"),
    (1.23456789, "money", "1.2346"),
    (0.0123456789, "money", "0.012346"),
    (0.0, "money", "0.00"),
    (63, "bars", "63"),
    (2.625, "days", "2.62"),
    (True, "bool", "yes"),
    (None, "ratio", "—"),
    (1646236800000, "time", "2022-03-02 16:00 UTC"),
    (8760.0, "factor", "8,760"),
    (52.142857142857146, "factor", "52.1429"),
    (1e-05, "greek", "1e-05"),
])
def test_number_formats(value, unit, text):
    assert fmt_metric(value, unit) == text


def test_unknown_unit_raises():
    with pytest.raises(ValueError, match="'furlong'"):
        fmt_metric(1.0, "furlong")


@pytest.mark.parametrize("meta, expected", [
    ({"account": {"margin_call_threshold": 0.8}}, [0.8, 0.8]),
    ({"settings": {"call_threshold": [0.7, 0.9]}}, [0.7, 0.9]),
    ({"settings": {"call_threshold": [0.7, 0.9, 0.5]}}, None),  # not one per column
    ({}, None),
])
def test_margin_call_threshold_from_meta(meta, expected):
    from backtest.report.collect import margin_call_threshold
    res = dataclasses.replace(perp_result(), meta={"bar_ms": 3_600_000, **meta})
    assert margin_call_threshold(res) == expected
