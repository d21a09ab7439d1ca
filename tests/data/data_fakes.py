"""An offline Binance HTTP transport for ccxt, serving recorded or documented-shape responses.

ccxt performs every HTTP request through ``exchange.session.request(...)`` (a
``requests.Session``). :class:`FakeBinance` stands in for that session: it routes the URL to a
handler that answers from fixture tables with the semantics of Binance's documented
endpoints, so ccxt's real request building, error mapping and parsing run unchanged.

Endpoint semantics reproduced (Binance docs, "Kline/Candlestick Data", "Mark Price Kline",
"Get Funding Rate History"):

* klines, markPriceKlines, indexPriceKlines: rows with ``startTime <= open <= endTime``
  (either bound optional), ascending, at most ``limit`` (default 500, max 1500); without
  ``startTime`` the most recent ``limit`` rows (up to ``endTime``).
* fundingRate: prints with ``startTime <= fundingTime <= endTime``, ascending, at most
  ``limit`` (default 100, max 1000); without a bound the most recent ``limit`` prints.
* an unknown symbol: HTTP 400 ``{"code": -1121, "msg": "Invalid symbol."}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import requests

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ccxt"
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"

SYMBOL = "BTC/USDT:USDT"
START = 1678406400000  # 2023-03-10T00:00Z, first row of the USD-M fixture
END = 1678752000000  # 2023-03-14T00:00Z, end of the fixture (exclusive)
HOUR = 3_600_000


def sample_window(name: str) -> pd.DataFrame:
    """The committed sample's BTCUSDT rows inside the fixture window: the independent reference
    the fixture's raw responses were built from."""
    df = pd.read_parquet(SAMPLE / "binanceusdm" / "BTC_USDT_USDT" / name)
    return df[(df["timestamp"] >= START) & (df["timestamp"] < END)].reset_index(drop=True)


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class FakeResponse:
    """The part of ``requests.Response`` ccxt reads."""

    def __init__(self, status: int, body: Any, reason: str | None = None) -> None:
        self.status_code = status
        self.reason = reason or ("OK" if status == 200 else "Error")
        self.text = body if isinstance(body, str) else json.dumps(body)
        self.content = self.text.encode()
        self.headers = {"Content-Type": "application/json"}
        self.encoding = None

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code} {self.reason}", response=self)


@dataclass
class Call:
    path: str
    params: dict[str, str]


@dataclass
class FakeBinance:
    """Binance fapi/dapi/api routes over in-memory tables.

    ``klines[(path, symbol_or_pair, interval)]`` = raw kline rows; ``funding[(path, symbol)]``
    = raw fundingRate dicts; ``exchange_info[path]`` = exchangeInfo bodies; ``static[path]``
    = a fixed body for any other endpoint. ``fault(call_no,
    call)`` may return a FakeResponse or raise (e.g. ``requests.ConnectionError``) to inject
    failures; ``call_no`` counts data requests (not exchangeInfo) from 1.
    """

    klines: dict[tuple[str, str, str], list[list[Any]]] = field(default_factory=dict)
    funding: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    exchange_info: dict[str, Any] = field(default_factory=dict)
    static: dict[str, Any] = field(default_factory=dict)
    fault: Callable[[int, Call], FakeResponse | None] | None = None
    calls: list[Call] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    cookies: Any = field(default_factory=requests.cookies.RequestsCookieJar)

    @property
    def data_calls(self) -> list[Call]:
        return [c for c in self.calls if not c.path.endswith("exchangeInfo")]

    # requests.Session interface used by ccxt ---------------------------------------------------
    def request(self, method: str, url: str, **_: Any) -> FakeResponse:
        parts = urlsplit(url)
        call = Call(parts.path, dict(parse_qsl(parts.query)))
        self.calls.append(call)
        if parts.path.endswith("exchangeInfo"):
            if parts.path not in self.exchange_info:
                return FakeResponse(404, "<html>not found</html>")
            return FakeResponse(200, self.exchange_info[parts.path])
        if self.fault is not None:
            injected = self.fault(len(self.data_calls), call)
            if injected is not None:
                return injected
        if parts.path in self.static:
            return FakeResponse(200, self.static[parts.path])
        if parts.path.endswith(("klines", "Klines")):
            return self._klines(call)
        if parts.path.endswith("fundingRate"):
            return self._funding(call)
        return FakeResponse(404, "<html>not found</html>")

    def close(self) -> None:  # requests.Session API
        pass

    # handlers ----------------------------------------------------------------------------------
    @staticmethod
    def _window(rows: list[Any], key: Callable[[Any], int], p: dict[str, str], default: int, cap: int) -> list[Any]:
        limit = min(int(p.get("limit", default)), cap)
        lo, hi = p.get("startTime"), p.get("endTime")
        sel = [r for r in rows if (lo is None or key(r) >= int(lo)) and (hi is None or key(r) <= int(hi))]
        return sel[-limit:] if lo is None else sel[:limit]

    def _klines(self, call: Call) -> FakeResponse:
        p = call.params
        name = p.get("symbol") or p.get("pair")
        rows = self.klines.get((call.path, name, p.get("interval")))
        if rows is None:
            if any(k[0] == call.path and k[1] == name for k in self.klines):
                return FakeResponse(400, {"code": -1120, "msg": "Invalid interval."})
            return FakeResponse(400, {"code": -1121, "msg": "Invalid symbol."})
        return FakeResponse(200, self._window(rows, lambda r: int(r[0]), p, 500, 1500))

    def _funding(self, call: Call) -> FakeResponse:
        p = call.params
        rows = self.funding.get((call.path, p.get("symbol")))
        if rows is None:
            return FakeResponse(400, {"code": -1121, "msg": "Invalid symbol."})
        return FakeResponse(200, self._window(rows, lambda r: int(r["fundingTime"]), p, 100, 1000))


def binance_info() -> dict[str, Any]:
    info = load_fixture("binance_exchangeInfo.json")
    return {"/fapi/v1/exchangeInfo": info["fapi"], "/dapi/v1/exchangeInfo": info["dapi"],
            "/api/v3/exchangeInfo": info["spot"]}


def usdm_server(**kw: Any) -> FakeBinance:
    """USD-M BTCUSDT 1h klines, mark klines and funding of 2023-03-10..13 (96 h, 12 prints)."""
    fx = load_fixture("binanceusdm_BTCUSDT_2023-03-10_1h.json")
    return FakeBinance(
        klines={("/fapi/v1/klines", "BTCUSDT", "1h"): fx["klines"],
                ("/fapi/v1/markPriceKlines", "BTCUSDT", "1h"): fx["markPriceKlines"]},
        funding={("/fapi/v1/fundingRate", "BTCUSDT"): fx["fundingRate"]},
        exchange_info=binance_info(), **kw)


def usdm_exchange(server: FakeBinance, exchange_id: str = "binanceusdm") -> Any:
    """A real ccxt exchange whose HTTP session is ``server`` (rate limiter off: no waiting)."""
    import ccxt

    return getattr(ccxt, exchange_id)({"session": server, "enableRateLimit": False})


class NoSleep:
    """Records the backoff delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
