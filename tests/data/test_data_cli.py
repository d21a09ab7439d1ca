"""``backtest download``: options, output modes and exit codes, over the faked transport."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

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
def test_invalid_input_exits_2_with_one_line(app, transport, tmp_path, args, reason):
    r = CliRunner().invoke(app, ["download", "-e", "binanceusdm", "-d", str(tmp_path), "--since", "2023-03-10",
                                 *args])
    assert r.exit_code == 2
    assert r.stderr.startswith(reason) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert transport.data_calls == []


def test_unknown_exchange(app, tmp_path):
    r = CliRunner().invoke(app, ["download", "-e", "binanceusdmx", "-s", SYMBOL, "-d", str(tmp_path)])
    assert r.exit_code == 2 and "unknown ccxt exchange id 'binanceusdmx'" in r.stderr


# ---------------------------------------------------------------------------------------------
# the command in a process of its own (tests/data/fake_cli.py: the fake Binance server answers)

FAKE_CLI = Path(__file__).with_name("fake_cli.py")
WINDOW = ["--since", "2023-03-10", "--until", "2023-03-14"]


def run_cli(args, *, cwd, env=None, prefix=(), umask=None, timeout=120):
    """``backtest <args>`` in a subprocess over the fake transport; returns (completed, requests)."""
    calls = Path(cwd) / ".fake-calls"
    full_env = {**os.environ, "FAKE_CALLS_FILE": str(calls), "COLUMNS": "200", **(env or {})}
    full_env.pop("BACKTEST_DATA_DIR", None)
    pre = None if umask is None else (lambda: os.umask(umask))
    r = subprocess.run([*prefix, sys.executable, str(FAKE_CLI), *args], capture_output=True, text=True,
                       cwd=cwd, env=full_env, timeout=timeout, preexec_fn=pre)
    n = int(calls.read_text()) if calls.is_file() else None
    calls.unlink(missing_ok=True)
    return r, n


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("args, names", [
    (["-e", "binanceusdmx", "-s", SYMBOL], "unknown ccxt exchange id 'binanceusdmx'"),
    (["-e", "binanceusdm", "-s", SYMBOL, "--since", "2023-13-45"], "since: '2023-13-45'"),
    (["-e", "binanceusdm", "-s", SYMBOL, "--since", "2023-03-10", "--until", "soon"], "until: 'soon'"),
    (["-e", "binanceusdm", "-s", SYMBOL, "--since", "2023-03-10", "--until", "2023-03-01"],
     "--until 2023-03-01"),
    (["-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv,candles"], "unknown kind(s) ['candles']"),
    (["-e", "binanceusdm", "-s", SYMBOL, "-t", "7x"], "'7x'"),
    (["-e", "binanceusdm", "-s", SYMBOL, "-t", "3h", "--since", "2023-03-10"], "timeframe '3h' is not offered"),
    (["-e", "binanceusdm", "-s", "DOGE/EUR:EUR", "--since", "2023-03-10"], "no market 'DOGE/EUR:EUR'"),
])
def test_invalid_input_exits_2_in_a_process(tmp_path, args, names):
    store = tmp_path / "store"
    r, n = run_cli(["download", *args, "-d", str(store)], cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert names in one_error_line(r)
    assert n is not None and n <= 2  # at most the market loading: no data request
    assert not store.exists()  # nothing left behind, not even an empty store folder


def test_network_failure_exits_1_with_one_line(tmp_path):
    r, _ = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-d", str(tmp_path / "s"), "--retries", "1",
                    *WINDOW], cwd=tmp_path, env={"FAKE_FAIL_ALL": "1"})
    assert r.returncode == 1, r.stderr
    line = one_error_line(r)
    assert "binanceusdm load_markets: gave up after 1 attempts" in line and "retry later" in line


def test_market_loading_retries_are_printed(tmp_path):
    """Retries are printed as docs/data.md says, the market loading's too (it used to wait in
    silence: 1 + 2 + 4 + 8 s with the default 5 attempts)."""
    store = tmp_path / "s"
    r, _ = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv", "-d", str(store), *WINDOW],
                   cwd=tmp_path, env={"FAKE_FAIL_MARKETS": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("binanceusdm markets: retry 1 in 1.0s after NetworkError"), r.stdout
    assert "exchangeInfo" in lines[0]  # the request that failed
    assert lines[1].startswith("binanceusdm BTC/USDT:USDT ohlcv 1h: +96 rows")
    # --quiet: nothing but errors
    r, _ = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv", "-d", str(store), *WINDOW, "-q"],
                   cwd=tmp_path, env={"FAKE_FAIL_MARKETS": "1"})
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_get_the_mode_of_a_plain_open(tmp_path, umask):
    """Store files are created like any other output: 0o666 less the umask (not mkstemp's 0600)."""
    store = tmp_path / "s"
    r, _ = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv,funding,markets", "-d", str(store),
                    *WINDOW, "-q"], cwd=tmp_path, umask=umask)
    assert r.returncode == 0, r.stderr
    files = sorted(p for p in store.rglob("*") if p.is_file())
    names = sorted(p.name for p in files)
    assert names == ["binanceusdm.json", "funding.parquet", "ohlcv-1h.parquet"]
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, (p, oct(p.stat().st_mode))


def test_data_dir_that_is_a_file_exits_2_before_any_request(tmp_path):
    blocker = tmp_path / "store"
    blocker.write_text("not a folder")
    for d in (blocker, blocker / "sub"):
        r, n = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-d", str(d), *WINDOW], cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        line = one_error_line(r)
        assert str(blocker) in line and "--data-dir" in line
        assert n == 0
    assert blocker.read_text() == "not a folder"


def _mount_namespace() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt 2>/dev/null "
                            "|| mount -t tmpfs -o size=4k tmpfs \"$TMPDIR\""], capture_output=True,
                           env={**os.environ, "TMPDIR": tempfile.gettempdir()})
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _mount_namespace(),
                                  reason="needs `unshare -rm` (user and mount namespaces) to mount a small tmpfs")


def _on_tmpfs(folder: Path, options: str) -> list[str]:
    """A command prefix: run in a private mount namespace with a fresh tmpfs on ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "$0" && exec "$@"', str(folder)]


@needs_mounts
def test_read_only_data_dir_exits_2_with_one_line_before_any_request(tmp_path):
    mnt = tmp_path / "ro"
    for d in (mnt, mnt / "store"):
        r, n = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-d", str(d), *WINDOW], cwd=tmp_path,
                       prefix=_on_tmpfs(mnt, "ro,size=64k"))
        assert r.returncode == 2, r.stderr
        line = one_error_line(r)
        assert f"cannot write {d}: Read-only file system" in line and "--data-dir" in line
        assert n == 0


@needs_mounts
def test_full_disk_exits_2_with_one_line_and_leaves_no_temporary_file(tmp_path):
    mnt = tmp_path / "full"
    listing = tmp_path / "listing.txt"
    # the command runs, then the tmpfs's content is listed before the namespace (and the mount) ends
    script = (f'"$@"; rc=$?; find "$0" -mindepth 1 | sort > {listing}; exit $rc')
    prefix = ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=4k tmpfs "$0" && {script}', str(mnt)]
    mnt.mkdir()
    r, n = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv", "-d", str(mnt), *WINDOW,
                    "--limit", "500"], cwd=tmp_path, prefix=prefix)
    assert r.returncode == 2, (r.returncode, r.stderr)  # the environment's, like a read-only folder
    line = one_error_line(r)
    assert "No space left on device" in line and str(mnt / "binanceusdm" / "BTC_USDT_USDT") in line
    assert "run the same command again" in line
    left = listing.read_text().split()
    assert not [p for p in left if p.endswith(".tmp")], left  # the temporary file was removed
    assert n is not None and n >= 2  # it failed writing the first page, after fetching it


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


def test_sigterm_mid_download_exits_143_keeps_the_stored_pages_and_leaves_no_temporary_file(tmp_path):
    # SIGTERM (timeout, CI cancellation) arrives while the third page is fetched: one line, exit
    # 143, the two pages already stored stay (a rerun resumes) and no .tmp file is left behind
    store = tmp_path / "store"
    r, _ = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv", "-d", str(store), *WINDOW,
                    "--limit", "10"], cwd=tmp_path, env={"FAKE_SIGTERM_AT": "3"})
    assert r.returncode == 143, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert lines[-1].startswith("error: terminated (SIGTERM)") and "Traceback" not in r.stderr, r.stderr
    assert not list(store.rglob("*.tmp"))
    stored = Store(store).read("binanceusdm", SYMBOL, "ohlcv", "1h")
    assert len(stored) == 20
    again, _ = run_cli(["download", "-e", "binanceusdm", "-s", SYMBOL, "-k", "ohlcv", "-d", str(store), *WINDOW,
                        "--limit", "10"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(Store(store).read("binanceusdm", SYMBOL, "ohlcv", "1h")) > 20
