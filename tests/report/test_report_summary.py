"""The page's summary layer: headline tables, period tables and heatmaps, one table per
currency that differs (structure and numbers read from the HTML; the browser tests render it)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from backtest.metrics import COLUMN_KEYS
from backtest.report import build_report, collect, render_html, write_report
from backtest.report.render import fmt_metric, fmt_period_return, heat
from report_factories import from_equity, inverse_result, perp_result, put_result
from report_html import cells_with, metric_cells, section

DECISIVE = ["total_return", "cagr", "max_drawdown", "sharpe", "sortino", "calmar", "liquidations",
            "funding_net", "fees", "exposure_time"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    rng = np.random.default_rng(4)
    # three columns over 14 months of 4h bars: Dec 2021 .. Jan 2023 (both years partial)
    n = 6 * (31 + 365 + 31)
    eq = 100 * np.cumprod(1 + rng.normal(0.0001, 0.006, (n, 3)), axis=0)
    policies = from_equity(eq, bar_ms=4 * 3_600_000, start="2021-12-01", columns=["const(1)", "const(3)", "cppi"])
    results = {"policies": policies, "perp": perp_result(), "put": put_result(), "inverse": inverse_result()}
    out = write_report(results, tmp_path_factory.mktemp("summary") / "run", title="Summary")
    html = (out / "report.html").read_text()
    import json
    return out, html, json.loads((out / "metrics.json").read_text())


def test_sections_come_summary_first(page):
    _, html, _ = page
    order = [html.index(f'<section id="{s}"') for s in ("summary", "periods", "comparison", "result-0", "config")]
    assert order == sorted(order)


def test_headline_table_per_result_in_ranking_order_equals_metrics_json(page):
    _, html, doc = page
    summary = section(html, "summary")
    cells = metric_cells(summary)
    for name, res in doc["results"].items():
        mine = [c for c in cells if c["result"] == name]
        assert {c["basis"] for c in mine} == {"usd"}
        # rows in the stored ranking's order, restricted to the result; each row the decisive keys in order
        ranked = [r["column"] for r in doc["comparison"]["rows"] if r["result"] == name]
        assert [c["col"] for c in mine] == [col for col in ranked for _ in DECISIVE]
        assert [c["key"] for c in mine] == DECISIVE * len(ranked)
        for c in mine:
            value = res["usd"]["columns"][c["col"]][c["key"]]
            assert c["text"] == fmt_metric(value, c["unit"])
            assert c["value"] == ("" if value is None else repr(value))  # what the sorter reads
    # every headline key is also in the full tables
    assert set(DECISIVE) <= set(COLUMN_KEYS)


def test_headline_headers_are_readable_with_units(page):
    _, html, _ = page
    table = section(html, "summary").split("</thead>")[0]
    headers = [re.sub(r"<[^>]+>", " ", h).split() for h in re.findall(r"<th[^>]*data-metric[^>]*>(.*?)</th>", table,
                                                                        re.S)]
    assert [" ".join(h) for h in headers] == [
        "Total return [%]", "CAGR [% / year]", "Max drawdown [%]", "Sharpe [annualised]", "Sortino [annualised]",
        "Calmar [CAGR / max DD]", "Liquidations [count]", "Funding net [USD]", "Fees [USD]", "Time in market [%]"]


def test_sorting_is_inline_and_the_page_loads_nothing(page):
    _, html, _ = page
    assert 'class="metrics headline sortable"' in html and "function sortBy(" in html
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import", html)


def test_year_and_month_cells_equal_periods_parquet(page):
    out, html, doc = page
    stored = pd.read_parquet(out / "periods.parquet")
    usd = stored[stored["basis"] == "usd"].set_index(["result", "column", "freq", "period"]).sort_index()
    cells = cells_with(section(html, "periods"), "freq")
    years = [c for c in cells if c["freq"] == "year"]
    months = [c for c in cells if c["freq"] == "month"]
    # every column of every result has its years; 'policies' spans 2021 (Dec only), 2022, 2023 (Jan only)
    assert len(years) == len(usd.xs("year", level="freq"))
    assert [c["period"] for c in years if c["result"] == "policies" and c["col"] == "cppi"] == ["2021", "2022", "2023"]
    for c in years + months:
        row = usd.loc[(c["result"], c["col"], c["freq"], c["period"])]
        shown = fmt_period_return(row["return"]) + ("*" if c["freq"] == "month" and row["partial"] else "")
        assert c["text"] == shown
        assert c["style"] == heat(row["return"], _scale(c, cells, usd))
    # monthly heatmaps for the (at most 5) best-ranked columns: all three 'policies' columns, 14 months each
    assert sorted({c["col"] for c in months if c["result"] == "policies"}) == ["const(1)", "const(3)", "cppi"]
    assert sum(c["result"] == "policies" for c in months) == 3 * 14
    # the growth index compounds: Dec 2021 is the whole of 2021
    dec = usd.loc[("policies", "cppi", "month", "2021-12"), "return"]
    assert dec == usd.loc[("policies", "cppi", "year", "2021"), "return"]


def _scale(cell, cells, usd):
    """The heatmap scale the page should use: the largest |return| of the cell's table."""
    if cell["freq"] == "year":
        table = usd.xs("year", level="freq").loc[cell["result"]]
        return float(np.max(np.abs(table["return"])))
    table = usd.xs("month", level="freq").loc[(cell["result"], cell["col"])]
    return float(np.max(np.abs(table["return"])))


def test_drawdown_tables_equal_drawdowns_parquet(page):
    out, html, _ = page
    d = pd.read_parquet(out / "drawdowns.parquet")
    cells = cells_with(section(html, "periods"), "dd")
    depths = {}
    for block in re.findall(r'<table class="metrics drawdowns" data-result="([^"]*)" data-col="([^"]*)">(.*?)</table>',
                            section(html, "periods"), re.S):
        name, col, body = block
        depths[(name, col)] = [c["text"] for c in cells_with(body, "dd")]
    assert len(cells) == sum(len(v) for v in depths.values())
    for (name, col), texts in depths.items():
        want = d[(d["result"] == name) & (d["column"] == col) & (d["basis"] == "usd")].sort_values("rank").head(5)
        assert texts == [fmt_metric(v, "fraction") for v in want["depth"]], (name, col)


def _result_tables(html: str, i: int) -> list[str]:
    return re.findall(r"<h3>Metrics \[([^\]]+)\]</h3>", section(html, f"result-{i}"))


def test_one_table_per_currency_that_differs(page):
    _, html, doc = page
    names = list(doc["results"])
    # perp: USDT at 1 USD, identical numbers: one table, labelled, with the assumption stated
    perp = names.index("perp")
    assert _result_tables(html, perp) == ["USDT = USD"]
    assert "1 USDT is valued at 1 USD at every bar" in section(html, f"result-{perp}")
    assert {c["basis"] for c in metric_cells(section(html, f"result-{perp}"))} == {"settle"}
    # put: settles in BTC, whose USD price moves: two tables, no assumption
    put = names.index("put")
    assert _result_tables(html, put) == ["BTC", "USD"]
    assert "valued at 1 USD" not in section(html, f"result-{put}")
    # inverse product: settles in USD: one table
    assert _result_tables(html, names.index("inverse")) == ["USD"]


def test_a_usdt_result_off_its_peg_keeps_two_tables():
    """USDT at 0.97 USD for part of the run: the USD numbers differ, so both tables stay."""
    pu = np.ones(48)
    pu[20:30] = 0.97
    res = from_equity(100 * np.linspace(1, 1.1, 48), price_usd=pu)
    report = build_report(collect({"depeg": res}, title="t"))
    (r,) = report["results"]
    assert [t["currency"] for t in r["tables"]] == ["USDT", "USD"]
    assert r["usd_note"] is None
    html = render_html(report)
    assert "valued at 1 USD" not in html


def test_single_currency_results_draw_equity_once():
    report = build_report(collect({"perp": perp_result(), "put": put_result()}, title="t"))
    specs = {f["id"]: f["spec"] for f in report["figures"]}
    perp_names = [t["name"] for t in specs["fig-0-equity"]["data"] if t["mode"] == "lines"]
    assert perp_names == ["x2", "x10"]  # not doubled with "(USD)" copies
    assert specs["fig-0-equity"]["layout"]["title"]["text"].startswith("Equity [USDT = USD]")
    assert len(specs["fig-0-drawdown"]["data"]) == 2
    put_names = [t["name"] for t in specs["fig-1-equity"]["data"] if t["mode"] == "lines"]
    assert put_names == ["put-25d", "put-25d (USD)"]


def test_top_limits_the_heatmaps_not_the_tables():
    rng = np.random.default_rng(2)
    eq = 100 * np.cumprod(1 + rng.normal(0, 0.01, (100, 4)), axis=0)
    run = collect({"r": from_equity(eq)}, title="t")
    report = build_report(run, top=2)
    periods = report["results"][0]["periods"]
    ranked = [r["column"] for r in run.metrics["comparison"]["rows"]]
    assert [h["column"] for h in periods["heatmaps"]] == ranked[:2]
    assert [d["column"] for d in periods["drawdowns"]] == ranked[:2]
    assert [row["column"] for row in periods["year_rows"]] == ranked
    assert build_report(run, top=0)["results"][0]["periods"]["heatmaps"] == []
    with pytest.raises(ValueError, match="top=-1"):
        build_report(run, top=-1)


@pytest.mark.parametrize("value, scale, css", [
    (0.5, 0.5, "background-color: rgba(26, 152, 80, 0.700)"),
    (-0.25, 0.5, "background-color: rgba(215, 48, 39, 0.390)"),
    (2.0, 0.5, "background-color: rgba(26, 152, 80, 0.700)"),  # capped at the full colour
    (0.0, 0.5, ""),
    (None, 0.5, ""),
    (0.1, 0.0, ""),
])
def test_heat_colours_are_centred_on_zero(value, scale, css):
    assert heat(value, scale) == css


@pytest.mark.parametrize("value, text", [(0.1234, "12.3%"), (-0.0004, "0.0%"), (-0.0006, "-0.1%"), (None, "—"),
                                         (-1.0, "-100.0%")])
def test_period_return_format(value, text):
    assert fmt_period_return(value) == text
