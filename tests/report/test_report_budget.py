"""Page budgets (issue 16, "Scale"): the main job's page under 6 MB; a 1,000-column sweep's page
under 10 MB that headless Chromium renders in under 5 s, with every column in its tables.

Measured sizes and render times are printed (``pytest -s``) and attached to the test report
(``record_property``). The render time is the page's own ``data-render-ms``: milliseconds from the
start of navigation to the last figure drawn (``performance.now()``, which runs in real time
under ``--virtual-time-budget``; idle virtual time can only make it longer)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from backtest.report import write_report
from report_factories import from_equity
from report_html import metric_cells, plot_divs, section

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MB = 1_000_000
CONSOLE = re.compile(r"CONSOLE|Uncaught")


def _chromium() -> str:
    for cand in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    pytest.skip("Chromium not found (/usr/bin/chromium or on PATH): the page-budget test did NOT run; "
                "install it with `apt-get install -y chromium`")


def _render(page: Path, profile: Path) -> tuple[str, list[str], int]:
    """(DOM after the figures are drawn, console errors, render ms from the page)."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--window-size=1440,900", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=30000", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r'<body[^>]*data-render-ms="(\d+)"', proc.stdout)
    assert m, "the figures were not all drawn (no data-render-ms on <body>)"
    return proc.stdout, [ln for ln in proc.stderr.splitlines() if CONSOLE.search(ln)], int(m.group(1))


def _check_page(page: Path, profile: Path, max_mb: float, max_ms: int, record_property, what: str) -> str:
    size = page.stat().st_size
    dom, console, ms = _render(page, profile)
    print(f"\n{what}: report.html {size / MB:.2f} MB, rendered in {ms} ms")
    record_property(f"{what}_bytes", size)
    record_property(f"{what}_render_ms", ms)
    assert console == []
    plots = plot_divs(dom)
    assert plots.plots and all(p["main_svg"] for p in plots.plots)
    assert plots.body.get("data-plots-rendered") == str(len(plots.plots))
    assert size < max_mb * MB, f"{what}: {size / MB:.2f} MB > {max_mb} MB"
    assert ms < max_ms, f"{what}: rendered in {ms} ms > {max_ms} ms"
    return dom


def test_a_1000_column_sweep_page_is_light_and_renders_fast(tmp_path, record_property):
    n, m = 2_600, 1_000  # more bars than a line keeps (2,400): the decimation is in play
    rng = np.random.default_rng(1)
    eq = 10_000 * np.cumprod(1 + rng.normal(0, 0.01, (n, m)) * np.linspace(0.2, 2, m), axis=0)
    labels = [f"slow_days={10 + j % 50}|policy=voltarget({0.1 + 0.01 * (j // 50):.2f})" for j in range(m)]
    price = 40_000 + np.cumsum(rng.normal(0, 50, n))
    res = from_equity(eq, columns=labels, initial=np.full(m, 10_000.0),
                      extra={"margin_ratio": np.abs(rng.normal(0.1, 0.05, (n, m))),
                             "liq_price": np.full((n, m), 50_000.0), "price": np.repeat(price[:, None], m, axis=1)})
    out = write_report({"sweep": res}, tmp_path / "run", title="1,000 columns")
    page = out / "report.html"
    dom = _check_page(page, tmp_path / "profile", 10, 5_000, record_property, "sweep_1000")
    # every column is in the headline table and the metric table
    html = page.read_text()
    assert {c["col"] for c in metric_cells(section(html, "summary"))} == set(labels)
    assert {c["col"] for c in metric_cells(section(html, "result-0"))} == set(labels)
    assert len(plot_divs(dom).plots) < 15  # the figures of the top columns, not of 1,000


def test_main_job_page_is_under_6_mb(tmp_path, record_property):
    from backtest.runner import execute, main_job

    out = execute(main_job(), reports_dir=tmp_path, log=lambda msg: None)
    _check_page(out.out_dir / "report.html", tmp_path / "profile", 6, 5_000, record_property, "main_job")
