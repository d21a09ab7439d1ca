"""write_report round trip, re-rendering from stored files, atomic replacement on failure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import backtest.report.store as store
from backtest.metrics import compute_metrics
from backtest.report import ReportError, build_report, collect, load_stored, rerender, write_report
from report_factories import from_equity, inverse_result, perp_result, put_result
from report_html import metric_cells, plot_divs

CONFIG = {"strategy": "short_perp", "leverage": [2, 10], "symbol": "BTC/USDT:USDT"}


@pytest.fixture(scope="module")
def results():
    return {"perp policies": perp_result(), "put": put_result(), "inverse product": inverse_result()}


@pytest.fixture(scope="module")
def stored(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "run-1"
    path = write_report(results, out, title="Bearish <run>", config=CONFIG, notes="n & m")
    return path


def test_files_and_metrics_round_trip(results, stored):
    assert sorted(p.name for p in stored.iterdir()) == sorted(store.FILES)
    doc = json.loads((stored / "metrics.json").read_text())
    for name, res in results.items():
        for basis in ("settle", "usd"):
            assert doc["results"][name][basis] == compute_metrics(res, currency=basis)
        assert doc["results"][name]["kind"] == res.kind
        assert doc["results"][name]["currency"] == res.currency
    assert json.loads((stored / "config.json").read_text()) == CONFIG
    assert doc["title"] == "Bearish <run>"


def test_equity_parquet_holds_every_series(results, stored):
    eq = pd.read_parquet(stored / "equity.parquet")
    assert len(eq) == sum(r.n_bars * r.n_cols for r in results.values())
    for name, res in results.items():
        part = eq[eq["result"] == name]
        for j, label in enumerate(res.columns):
            rows = part[part["column"] == str(label)].sort_values("bar")
            assert rows["timestamp"].tolist() == [int(t.value // 10**6) for t in res.index]
            for key, arr in res.series.items():
                np.testing.assert_array_equal(rows[key].to_numpy(), arr[:, j])
            np.testing.assert_array_equal(rows["price_usd"].to_numpy(), res.price_usd)
        # a series the result lacks is null, not invented
        absent = set(eq.columns) - set(res.series) - {"result", "column", "col", "bar", "timestamp",
                                                      "price_usd", "underlying_price", "return", "growth", "drawdown",
                                                      "return_usd", "growth_usd", "drawdown_usd"}
        for key in absent:
            assert part[key].isna().all(), key


def test_events_parquet_holds_every_record(results, stored):
    ev = pd.read_parquet(stored / "events.parquet")
    expected = {(name, kind): len(rec) for name, res in results.items() for kind, rec in res.records.items()}
    got = ev.groupby(["result", "kind"]).size().to_dict()
    assert got == expected
    liq = ev[ev["kind"] == "liquidations"].iloc[0]
    src = results["perp policies"].records["liquidations"][0]
    assert liq["bar"] == src["bar"] and liq["column"] == "x10"
    assert liq["equity_before"] == src["equity_before"]
    fund = ev[ev["kind"] == "funding"]
    np.testing.assert_array_equal(fund["time"].to_numpy(dtype=np.int64),
                                  results["perp policies"].records["funding"]["time"])


def test_rerender_from_stored_files_gives_the_same_tables(stored):
    before = (stored / "report.html").read_text()
    again = rerender(stored)
    after = again.read_text()
    cells_before, cells_after = metric_cells(before), metric_cells(after)
    assert len(cells_before) > 100
    assert cells_before == cells_after
    assert len(plot_divs(before).plots) == len(plot_divs(after).plots)
    assert [p.name for p in stored.iterdir() if p.name.startswith(".")] == []


def test_stored_run_builds_the_same_report_object(results, stored):
    fresh = build_report(collect(results, title="Bearish <run>", config=CONFIG, notes="n & m"))
    loaded = build_report(load_stored(stored))
    for key in ("title", "notes", "comparison"):
        assert fresh[key] == loaded[key]
    assert [r["tables"] for r in fresh["results"]] == [r["tables"] for r in loaded["results"]]
    assert [f["id"] for f in fresh["figures"]] == [f["id"] for f in loaded["figures"]]


def test_html_escapes_user_text(stored):
    html = (stored / "report.html").read_text()
    assert "Bearish &lt;run&gt;" in html and "Bearish <run>" not in html
    assert "n &amp; m" in html
    # plotly.js is inlined exactly once (gzip + base64), whatever the number of figures, and
    # unpacks to the installed plotly.js byte for byte
    import base64
    import gzip
    import re

    from plotly.offline import get_plotlyjs
    packed = re.findall(r'<script type="application/octet-stream" id="plotly-gz">([^<]*)</script>', html)
    assert len(packed) == 1
    assert gzip.decompress(base64.b64decode(packed[0])).decode("utf-8") == get_plotlyjs()
    assert html.count(get_plotlyjs()[:2000]) == 0
    assert html.count('<div class="plot"') > 10


def _tree(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("target", ["render_html", "_write_events"])
def test_failure_keeps_the_earlier_report_and_no_temp_dir(results, tmp_path, monkeypatch, target):
    out = tmp_path / "run"
    write_report({"perp": results["perp policies"]}, out, title="first", config={})
    before = _tree(out)

    def boom(*a, **k):
        raise RuntimeError("simulated failure while writing")

    monkeypatch.setattr(store, target, boom)
    with pytest.raises(RuntimeError, match="simulated failure"):
        write_report(results, out, title="second", config={})
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failure_without_earlier_report_leaves_nothing(results, tmp_path, monkeypatch):
    monkeypatch.setattr(store, "render_html", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_report(results, tmp_path / "new", title="t", config={})
    assert list(tmp_path.iterdir()) == []


def test_success_replaces_the_earlier_report(results, tmp_path):
    out = tmp_path / "run"
    write_report({"perp": results["perp policies"]}, out, title="first", config={"v": 1})
    write_report({"put": results["put"]}, out, title="second", config={"v": 2})
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["title"] == "second" and list(doc["results"]) == ["put"]
    assert json.loads((out / "config.json").read_text()) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_load_stored_names_missing_files(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ReportError, match="equity.parquet"):
        load_stored(tmp_path)


def test_ranking(results):
    run = collect(results, title="t", rank_by="calmar")
    rows = run.metrics["comparison"]["rows"]
    assert [r["rank"] for r in rows] == list(range(1, 5))
    vals = [r["value"] for r in rows]
    usd = {(n, c): m for n, d in run.metrics["results"].items() for c, m in d["usd"]["columns"].items()}
    assert vals == [usd[(r["result"], r["column"])]["calmar"] for r in rows]
    ruined = [usd[(r["result"], r["column"])]["ruined"] for r in rows]
    assert any(ruined) and ruined == sorted(ruined)  # survivors first, then the ruined columns
    for group in (False, True):
        part = [v for v, x in zip(vals, ruined) if x is group]
        assert part == sorted(part, reverse=True)
    asc = collect(results, title="t", rank_by="max_drawdown").metrics["comparison"]
    assert asc["order"] == "ascending"
    dd = [r["value"] for r in asc["rows"]]
    assert dd == sorted(dd) and dd[-1] == 1.0  # the liquidated column ranks last
    with pytest.raises(ReportError, match="rank_by='sharp'"):
        collect(results, title="t", rank_by="sharp")


def test_ranking_puts_undefined_values_last():
    flat = from_equity(np.full(10, 100.0), columns=["flat"])  # no drawdown: calmar undefined
    down = from_equity(np.linspace(100, 90, 10), columns=["down"])
    rows = collect({"a": flat, "b": down}, title="t", rank_by="calmar").metrics["comparison"]["rows"]
    assert [(r["column"], r["value"] is None) for r in rows] == [("down", False), ("flat", True)]


def test_outputs_get_the_usual_permissions(results, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "f").write_text("x")
    dir_mode = (tmp_path / "plain").stat().st_mode & 0o777
    file_mode = (tmp_path / "plain" / "f").stat().st_mode & 0o777
    out = write_report({"perp": results["perp policies"]}, tmp_path / "run", title="t")
    assert out.stat().st_mode & 0o777 == dir_mode
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {f: file_mode for f in store.FILES}
    html = rerender(out)
    assert html.stat().st_mode & 0o777 == file_mode


def test_failed_rerender_keeps_the_page(results, tmp_path, monkeypatch):
    out = write_report({"perp": results["perp policies"]}, tmp_path / "run", title="t")
    before = _tree(out)
    monkeypatch.setattr(store, "render_html", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        rerender(out)
    assert _tree(out) == before


def test_minimal_result_without_records_or_optional_series(tmp_path):
    from report_factories import FILL, LIQ
    bare = from_equity(np.linspace(100, 120, 30), columns=["only"], position=np.zeros(30))
    empty = from_equity(np.linspace(100, 90, 30), columns=["empty"],
                        records={"fills": np.zeros(0, dtype=FILL), "liquidations": np.zeros(0, dtype=LIQ)})
    out = write_report({"bare": bare}, tmp_path / "a", title="t")
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["results"]["bare"]["records"] == []
    assert len(pd.read_parquet(out / "events.parquet")) == 0
    report = build_report(load_stored(out))
    assert report["comparison"]["figures"] == []  # one column: nothing to overlay
    slugs = {f["id"].split("-", 2)[2] for f in report["figures"]}
    assert slugs == {"equity", "drawdown", "leverage", "funding_fees"}
    out2 = write_report({"empty": empty}, tmp_path / "b", title="t")
    m = json.loads((out2 / "metrics.json").read_text())["results"]["empty"]["settle"]["columns"]["empty"]
    assert m["liquidations"] == 0 and m["first_liquidation_ms"] is None and m["turnover"] == 0.0
    assert m["event_counts"] == {"fills": 0, "liquidations": 0}
