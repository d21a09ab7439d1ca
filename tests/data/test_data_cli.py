"""``backtest download``: options, output modes and exit codes, over the faked transport."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
import typer
from data_fakes import SYMBOL, sample_window, usdm_server
from typer.testing import CliRunner

from backtest.data import Store
from backtest.data.cli import register

OPTIONS = ["--exchange", "--symbol", "--timeframe", "--kind", "--since", "--until", "--data-dir", "--limit",
           "--retries", "--quiet"]


@pytest.fixture
def app():
    # a group app, as in backtest.cli once several commands are registered
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """backtest"""

    register(app)
    return app


@pytest.fixture
def transport(monkeypatch):
    """Every requests.Session (ccxt's included) answers from the fake Binance server."""
    server = usdm_server()
    monkeypatch.setattr(requests.Session, "request", lambda self, method, url, **kw: server.request(method, url, **kw))
    return server


def test_help_documents_every_option_without_importing_ccxt():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "import typer\n"
        "from backtest.data.cli import register\n"
        "app = typer.Typer()\n"
        "app.callback()(lambda: None)\n"
        "register(app)\n"
        "r = CliRunner().invoke(app, ['download', '--help'], env={'COLUMNS': '200'})\n"
        "print(r.exit_code)\n"
        "print(r.output)\n"
        "print('ccxt' in sys.modules, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines()[0] == "0"
    for opt in OPTIONS:
        assert opt in out, opt
    assert "backtest download -e binanceusdm" in out  # examples
    assert out.strip().splitlines()[-1].startswith("False")  # ccxt not imported for --help


def test_download_writes_the_store_and_reports(app, transport, tmp_path):
    r = CliRunner().invoke(app, ["download", "-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv,funding",
                                 "--since", "2023-03-10", "--until", "2023-03-14T00:00:00Z", "-d", str(tmp_path),
                                 "--limit", "50"])
    assert r.exit_code == 0, r.output
    assert "binanceusdm BTC/USDT:USDT ohlcv 1h: +96 rows" in r.stdout
    assert "funding: +12 rows" in r.stdout
    got = Store(tmp_path).read("binanceusdm", SYMBOL, "ohlcv", "1h")
    assert got.equals(sample_window("ohlcv-1h.parquet"))
    assert len([c for c in transport.data_calls if c.path.endswith("klines")]) == 2
    # again: nothing to fetch, nothing printed with --quiet
    n = len(transport.data_calls)
    r = CliRunner().invoke(app, ["download", "-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv", "-k", "funding",
                                 "--since", "2023-03-10", "--until", "2023-03-14", "-d", str(tmp_path), "-q"])
    assert r.exit_code == 0 and r.stdout == "" and len(transport.data_calls) == n


@pytest.mark.parametrize("args, reason", [
    (["-s", "DOGE/EUR:EUR"], "error: binanceusdm: no market 'DOGE/EUR:EUR'"),
    (["-s", SYMBOL, "-k", "trades"], "error: unknown kind(s) ['trades']"),
    (["-s", SYMBOL, "--since", "last week"], "error: since: 'last week' is neither an ISO date"),
])
def test_failures_exit_non_zero_with_one_line(app, transport, tmp_path, args, reason):
    r = CliRunner().invoke(app, ["download", "-e", "binanceusdm", "-d", str(tmp_path), "--since", "2023-03-10",
                                 *args])
    assert r.exit_code == 1
    assert r.stderr.startswith(reason) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert transport.data_calls == []


def test_unknown_exchange(app, tmp_path):
    r = CliRunner().invoke(app, ["download", "-e", "binanceusdmx", "-s", SYMBOL, "-d", str(tmp_path)])
    assert r.exit_code == 1 and "unknown ccxt exchange id 'binanceusdmx'" in r.stderr


def test_reporter_draws_a_bar_on_a_terminal_and_plain_lines_otherwise():
    import io

    from rich.console import Console

    from backtest.data.cli import _Reporter
    from backtest.data.download import Progress

    events = [Progress("BTC/USDT:USDT ohlcv 1h", 0, 100, 40, 40, 1),
              Progress("BTC/USDT:USDT ohlcv 1h", 0, 100, 40, 40, 2, message="retry 1 in 1.0s after RequestTimeout"),
              Progress("BTC/USDT:USDT ohlcv 1h", 0, 100, 100, 96, 3, done=True)]
    tty = io.StringIO()
    with _Reporter(Console(file=tty, force_terminal=True, width=100), quiet=False) as rep:
        assert rep.bar is not None
        for e in events:
            rep(e)
    assert "100%" in tty.getvalue() and "96 rows, 3 req" in tty.getvalue()
    plain = io.StringIO()
    with _Reporter(Console(file=plain, width=100), quiet=False) as rep:
        assert rep.bar is None
        for e in events:
            rep(e)
    assert plain.getvalue() == "BTC/USDT:USDT ohlcv 1h: retry 1 in 1.0s after RequestTimeout\n"
    quiet = io.StringIO()
    with _Reporter(Console(file=quiet, force_terminal=True), quiet=True) as rep:
        for e in events:
            rep(e)
    assert quiet.getvalue() == ""
