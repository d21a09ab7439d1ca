"""report.html in a real headless Chromium: no console errors, every plot rendered, and the
metrics tables in the DOM equal metrics.json at the displayed precision."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from backtest.metrics import METRIC_UNITS
from backtest.report import write_report
from report_factories import inverse_result, perp_result, put_result
from report_html import metric_cells, plot_divs

pytestmark = pytest.mark.browser

NASTY = ['x2 <b>&"quoted"', "</script><script>alert(1)</script>"]
CONSOLE = re.compile(r"CONSOLE|Uncaught")


def _chromium() -> str:
    for cand in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    pytest.skip("Chromium not found (/usr/bin/chromium or on PATH): the browser test did NOT run; "
                "install it with `apt-get install -y chromium`")


def _run(page: Path, profile: Path) -> tuple[str, list[str]]:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, [ln for ln in proc.stderr.splitlines() if CONSOLE.search(ln)]


def test_console_error_detection_works(tmp_path):
    """The stderr parser sees both an uncaught exception and console.error (else the real check
    below could pass while the page is broken)."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('canary-logged');"
                    "throw new Error('canary-thrown');</script></body></html>")
    _, console = _run(page, tmp_path / "profile")
    text = "\n".join(console)
    assert "canary-logged" in text and "canary-thrown" in text


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    perp = perp_result()
    perp = dataclasses.replace(perp, columns=pd.Index(NASTY))
    out = write_report({"perp <policies>": perp, "put": put_result(), "inverse": inverse_result()},
                       tmp_path_factory.mktemp("browser") / "run", title="Browser check",
                       config={"k": "v"}, notes="offline test")
    dom, console = _run(out / "report.html", tmp_path_factory.mktemp("profile"))
    return out, dom, console


def test_no_console_errors(report):
    _, _, console = report
    assert console == []


def test_every_plot_is_rendered(report):
    out, dom, _ = report
    source = plot_divs((out / "report.html").read_text())
    rendered = plot_divs(dom)
    assert len(source.plots) >= 15
    assert [p["id"] for p in rendered.plots] == [p["id"] for p in source.plots]
    for p in rendered.plots:
        assert "js-plotly-plot" in p["classes"], p["id"]
        assert p["main_svg"], p["id"]
    assert rendered.body.get("data-plots-rendered") == str(len(source.plots))


def _parse_time(text: str) -> int:
    t = dt.datetime.strptime(text, "%Y-%m-%d %H:%M UTC").replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def _check(text: str, value, unit: str) -> None:
    """Displayed text equals the raw value at the precision the text shows."""
    if value is None:
        assert text == "—"
        return
    if unit == "bool":
        assert text == ("yes" if value else "no")
        return
    if unit == "time":
        assert _parse_time(text) == value - value % 60_000
        return
    if unit in ("count", "bars"):
        assert int(text) == value
        return
    scale = 100.0 if unit == "fraction" else 1.0
    num = text.rstrip("%x").replace(",", "")
    mant, _, exp = num.partition("e")
    decimals = len(mant.partition(".")[2])
    tol = 0.5 * 10.0 ** (int(exp or 0) - decimals)
    assert abs(float(num) - value * scale) <= tol * (1 + 1e-9) + 1e-12, (text, value, unit)


def test_metric_tables_match_metrics_json(report):
    out, dom, _ = report
    doc = json.loads((out / "metrics.json").read_text())
    cells = metric_cells(dom)
    seen = set()
    for c in cells:
        res = doc["results"][c["result"]]
        value = res[c["basis"]]["columns"][c["col"]][c["key"]]
        assert c["unit"] == METRIC_UNITS[c["key"]]
        _check(c["text"], value, c["unit"])
        seen.add((c["result"], c["basis"], c["col"], c["key"]))
    expected = set()
    for name, res in doc["results"].items():
        for basis in (["settle"] if res["currency"] == "USD" else ["settle", "usd"]):
            for col, m in res[basis]["columns"].items():
                expected |= {(name, basis, col, k) for k, v in m.items() if METRIC_UNITS[k] != "mapping"}
    assert expected <= seen
    assert {c["col"] for c in cells if c["result"] == "perp <policies>"} == set(NASTY)
    # the ranked table lists every column once, in the stored rank order, rank key first
    start = dom.index('id="ranking"')
    ranking = metric_cells(dom[start:dom.index("</table>", start)])
    rank_by = doc["comparison"]["rank_by"]
    order = [(c["result"], c["col"]) for c in ranking if c["key"] == rank_by]
    assert order == [(r["result"], r["column"]) for r in doc["comparison"]["rows"]]
    assert len(ranking) == len(order) * len({c["key"] for c in ranking}) and all(
        c["basis"] == "usd" for c in ranking)
