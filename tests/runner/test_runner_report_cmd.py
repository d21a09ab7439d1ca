"""`backtest report RUN_DIR`: re-render from the stored files, without data or simulation."""

from __future__ import annotations

import copy
import json
import shutil

from typer.testing import CliRunner

from backtest.cli import app
from backtest.metrics import METRIC_UNITS
from backtest.report.render import fmt_metric
from backtest.runner import execute, parse_config
from runner_kit import TINY
from tests.report.report_html import metric_cells


cells = metric_cells  # the report tests' parser of the metric table cells


def table_cells(html: str) -> dict[tuple, str]:
    """(result, column, basis, key) -> text of the per-result metric tables."""
    out = {}
    for c in cells(html):
        key = (c["result"], c["col"], c["basis"], c["key"])
        if c["basis"] in ("settle", "usd") and key not in out:
            out[key] = c["text"]
    return out


def test_report_rerenders_from_stored_files_only(tmp_path, sample_copy, monkeypatch):
    doc = copy.deepcopy(TINY)
    doc["data"]["root"] = str(sample_copy)
    doc["products"] = [{"name": "inv", "settings": {"leverage": -2.0}}]
    out = execute(parse_config(doc), reports_dir=tmp_path / "reports", log=lambda m: None)
    run_dir = out.out_dir

    # no data any more, and any simulation would fail loudly
    shutil.rmtree(sample_copy)
    import backtest.data
    import backtest.engine
    import backtest.products

    def forbidden(*a, **k):
        raise AssertionError("re-rendering must not load data or simulate")

    for mod, name in ((backtest.engine, "simulate_perp"), (backtest.products, "simulate_product"),
                      (backtest.data, "load_market_data")):
        monkeypatch.setattr(mod, name, forbidden)

    # edit a stored number: the page must show the stored value, not a recomputed one
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    col = metrics["results"]["trend"]["columns"][1]
    metrics["results"]["trend"]["settle"]["columns"][col]["final_equity"] = 12345.67
    metrics_path.write_text(json.dumps(metrics))
    (run_dir / "report.html").unlink()

    res = CliRunner().invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout == f"{run_dir / 'report.html'}\n"
    html = (run_dir / "report.html").read_text()

    # the per-result metric tables (after the summary, periods and comparison sections)
    shown = table_cells(html[html.index('<section id="result-0"'):])
    expected = {}
    for name, r in metrics["results"].items():
        for basis in ("settle", "usd"):
            if basis == "usd" and (r["currency"] == "USD" or r["settle"]["columns"] == r["usd"]["columns"]):
                continue  # one table when the settlement numbers are the USD numbers (USDT at 1 USD)
            for label, m in r[basis]["columns"].items():
                for key, value in m.items():
                    if METRIC_UNITS[key] != "mapping":
                        expected[(name, label, basis, key)] = fmt_metric(value, METRIC_UNITS[key])
    assert shown == expected
    assert shown[("trend", col, "settle", "final_equity")] == "12,345.67"


def test_rerender_of_an_untouched_folder_reproduces_the_tables(tmp_path):
    out = execute(parse_config(TINY), reports_dir=tmp_path, log=lambda m: None)
    page = out.out_dir / "report.html"
    before = table_cells(page.read_text())
    res = CliRunner().invoke(app, ["report", str(out.out_dir)])
    assert res.exit_code == 0
    assert table_cells(page.read_text()) == before
    assert len(before) > 100
