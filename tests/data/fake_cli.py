"""Run the ``backtest`` command in a real process whose HTTP requests are answered by the fake
Binance USD-M server of :mod:`data_fakes`: for CLI tests that need a process of their own (the
exit code, stderr, the umask, a mount namespace) and must never reach the network.

Usage: ``python fake_cli.py download -e binanceusdm ...`` (the arguments of ``backtest``).

Environment:

* ``FAKE_CALLS_FILE``: at exit, the number of HTTP requests made is written to this file.
* ``FAKE_FAIL_MARKETS``: the first N market-loading requests (``exchangeInfo``) fail with a
  connection error (ccxt's NetworkError, which is retried).
* ``FAKE_FAIL_ALL``: set to 1 to fail every request with a connection error.
* ``FAKE_SIGTERM_AT``: the process sends itself SIGTERM while answering its N-th klines request
  (what ``timeout`` or a CI cancellation does in the middle of a download).

The code under test is the checkout this file belongs to (its root goes first on sys.path).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import requests  # noqa: E402
from data_fakes import usdm_server  # noqa: E402


def _refuse(sock, address):  # noqa: ANN001, ANN202
    if sock.family != socket.AF_UNIX:
        raise RuntimeError(f"fake_cli: a request tried to reach the network ({address!r})")
    return _connect(sock, address)


_connect = socket.socket.connect
socket.socket.connect = _refuse  # belt and braces: every HTTP request should reach the fake below

server = usdm_server()
fail_markets = int(os.environ.get("FAKE_FAIL_MARKETS", "0"))
fail_all = os.environ.get("FAKE_FAIL_ALL") == "1"
sigterm_at = int(os.environ.get("FAKE_SIGTERM_AT", "0"))
seen = {"markets": 0, "all": 0, "klines": 0}


def request(self, method, url, **kw):  # noqa: ANN001, ANN202
    seen["all"] += 1
    if fail_all:
        raise requests.ConnectionError(f"fake: connection refused for {url}")
    if "exchangeInfo" in url:
        seen["markets"] += 1
        if seen["markets"] <= fail_markets:
            raise requests.ConnectionError(f"fake: connection reset while loading {url}")
    if "klines" in url.lower():
        seen["klines"] += 1
        if seen["klines"] == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
    return server.request(method, url, **kw)


requests.Session.request = request

calls_file = os.environ.get("FAKE_CALLS_FILE")
if calls_file:
    atexit.register(lambda: Path(calls_file).write_text(str(seen["all"])))

if __name__ == "__main__":
    from backtest.cli import app

    sys.exit(app(args=sys.argv[1:], prog_name="backtest", standalone_mode=True))
