"""Offline Bybit and OKX (API v5) HTTP transports for ccxt, serving documented-shape responses.

Like :mod:`data_fakes` for Binance, :class:`FakeBybit` and :class:`FakeOkx` stand in for
``exchange.session`` (a ``requests.Session``): ccxt builds every request, maps every error and
parses every response itself. Each fake answers only the routes ccxt 4.5.90 calls for
``load_markets``, candles, mark candles, funding history and leverage tiers; anything else is a
loud 404 (the tests assert no such call happens).

Endpoint semantics reproduced (exchange docs; see tests/fixtures/ccxt/README.md):

Bybit (``/v5/market/...``; every list sorted newest first; errors are HTTP 200 with a
non-zero ``retCode``):

* ``kline``, ``mark-price-kline``: rows with ``start <= open <= end``; with ``start`` the
  first ``limit`` rows from ``start`` (ccxt's recorded static test shows this), with only
  ``end`` the last ``limit`` rows up to ``end``, with neither the latest; ``limit`` default
  200, at most 1000. Unknown symbol: ``retCode 10001 "Not supported symbols"``.
* ``funding/history``: prints with ``startTime <= t <= endTime``, the newest ``limit``
  (default 200, at most 200); ``startTime`` alone is an error (documented).
* ``instruments-info`` by ``category`` (one page, empty ``nextPageCursor``); ``risk-limit``.

OKX (``/api/v5/...``; lists newest first; errors are ``{"code": "5xxxx", ...}``):

* ``market/[history-]candles``, ``market/[history-]mark-price-candles``: rows with
  ``before < ts < after`` (both exclusive, both optional), the newest ``limit`` of them;
  ``before`` alone returns the latest rows (documented). ``limit`` default 100, at most 300
  for trade candles and 100 for mark candles (ccxt's declared maxima).
* ``public/funding-rate-history``: same ``before``/``after`` rules, ``limit`` at most 100.
* ``public/instruments`` by ``instType``; ``public/position-tiers``.
* unknown ``instId``: ``{"code": "51001", "msg": "Instrument ID does not exist"}``.

Run this file to rebuild the constructed fixtures from the committed sample.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

# END, HOUR, START, FakeResponse are re-exported for the tests
from data_fakes import END, FIXTURES, HOUR, START, Call, FakeResponse, sample_window  # noqa: E402,F401

LINEAR = "BTC/USDT:USDT"
INVERSE = "BTC/USD:BTC"
SERVER_TIME = END + 30 * 60_000  # the fakes' "now" in response envelopes

BYBIT_DATA = "bybit_v5_BTC_2023-03-10_1h.json"
BYBIT_MARKETS = "bybit_v5_markets.json"
BYBIT_RECORDED = "bybit_response_subset.json"
OKX_DATA = "okx_v5_BTC-USDT-SWAP_2023-03-10_1h.json"
OKX_MARKETS = "okx_v5_markets.json"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def num(x: float) -> str:
    """A float as exchanges print it: positional, shortest form that parses back exactly."""
    text = np.format_float_positional(float(x), trim="-")
    if float(text) != float(x):  # pragma: no cover - numpy guarantees the round trip
        raise ValueError(f"{x!r} does not round-trip as {text!r}")
    return text


# ---------------------------------------------------------------------------------------------
# transports


@dataclass
class V5Server:
    """Shared plumbing: call log, fault injection, the ``requests.Session`` surface ccxt uses.

    ``fault(call_no, call)`` may return a FakeResponse or raise (e.g. ``requests.Timeout``);
    ``call_no`` counts data requests (candles, mark candles, funding) from 1.
    """

    fault: Callable[[int, Call], FakeResponse | None] | None = None
    calls: list[Call] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    cookies: Any = field(default_factory=requests.cookies.RequestsCookieJar)

    DATA_PATHS: ClassVar[tuple[str, ...]] = ()

    @property
    def data_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path in self.DATA_PATHS]

    def request(self, method: str, url: str, **_: Any) -> FakeResponse:
        parts = urlsplit(url)
        call = Call(parts.path, dict(parse_qsl(parts.query)))
        self.calls.append(call)
        if call.path in self.DATA_PATHS and self.fault is not None:
            injected = self.fault(len(self.data_calls), call)
            if injected is not None:
                return injected
        handler = self.routes().get(call.path)
        if handler is None:
            return FakeResponse(404, "<html>404 Not Found</html>")
        return handler(call.params)

    def routes(self) -> dict[str, Callable[[dict[str, str]], FakeResponse]]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:  # requests.Session API
        pass


def _desc(rows: list[Any], key: Callable[[Any], int]) -> list[Any]:
    return sorted(rows, key=key, reverse=True)


@dataclass
class FakeBybit(V5Server):
    """``/v5/market`` routes over tables: ``klines[(path, category, symbol, interval)]`` and
    ``funding[(category, symbol)]`` hold raw rows (any order); ``instruments[category]`` and
    ``risk_limits[(category, symbol)]`` hold ``result.list`` entries."""

    klines: dict[tuple[str, str, str, str], list[list[str]]] = field(default_factory=dict)
    funding: dict[tuple[str, str], list[dict[str, str]]] = field(default_factory=dict)
    instruments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    risk_limits: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    DATA_PATHS: ClassVar[tuple[str, ...]] = (
        "/v5/market/kline", "/v5/market/mark-price-kline", "/v5/market/funding/history")

    @staticmethod
    def ok(result: dict[str, Any]) -> FakeResponse:
        return FakeResponse(200, {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {},
                                  "time": SERVER_TIME})

    @staticmethod
    def error(code: int, msg: str) -> FakeResponse:
        return FakeResponse(200, {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {},
                                  "time": SERVER_TIME})

    def routes(self) -> dict[str, Callable[[dict[str, str]], FakeResponse]]:
        return {"/v5/market/instruments-info": self._instruments, "/v5/market/risk-limit": self._risk_limit,
                "/v5/market/kline": lambda p: self._kline("/v5/market/kline", p),
                "/v5/market/mark-price-kline": lambda p: self._kline("/v5/market/mark-price-kline", p),
                "/v5/market/funding/history": self._funding}

    def _instruments(self, p: dict[str, str]) -> FakeResponse:
        cat = p.get("category", "")
        rows = [] if p.get("status") == "PreLaunch" else self.instruments.get(cat, [])
        if p.get("baseCoin"):
            rows = [r for r in rows if r.get("baseCoin") == p["baseCoin"]]
        return self.ok({"category": cat, "list": rows, "nextPageCursor": ""})

    def _risk_limit(self, p: dict[str, str]) -> FakeResponse:
        rows = self.risk_limits.get((p.get("category", ""), p.get("symbol", "")))
        if rows is None:
            return self.error(10001, "Not supported symbols")
        return self.ok({"category": p["category"], "list": rows, "nextPageCursor": ""})

    def _kline(self, path: str, p: dict[str, str]) -> FakeResponse:
        cat, sym, interval = p.get("category", "linear"), p.get("symbol", ""), p.get("interval", "")
        rows = self.klines.get((path, cat, sym, interval))
        if rows is None:
            if any(k[:3] == (path, cat, sym) for k in self.klines):
                return self.error(10001, "Invalid period!")
            return self.error(10001, "Not supported symbols")
        limit = max(1, min(int(p.get("limit", 200)), 1000))
        lo, hi = p.get("start"), p.get("end")
        sel = sorted((r for r in rows if (lo is None or int(r[0]) >= int(lo)) and (hi is None or int(r[0]) <= int(hi))),
                     key=lambda r: int(r[0]))
        sel = sel[:limit] if lo is not None else sel[-limit:]
        return self.ok({"symbol": sym, "category": cat, "list": _desc(sel, lambda r: int(r[0]))})

    def _funding(self, p: dict[str, str]) -> FakeResponse:
        cat, sym = p.get("category", "linear"), p.get("symbol", "")
        rows = self.funding.get((cat, sym))
        if rows is None:
            return self.error(10001, "Not supported symbols")
        lo, hi = p.get("startTime"), p.get("endTime")
        if lo is not None and hi is None:
            return self.error(10001, "endTime is required when startTime is given")
        limit = max(1, min(int(p.get("limit", 200)), 200))
        key = lambda r: int(r["fundingRateTimestamp"])  # noqa: E731
        sel = [r for r in rows if (lo is None or key(r) >= int(lo)) and (hi is None or key(r) <= int(hi))]
        return self.ok({"category": cat, "list": _desc(sel, key)[:limit]})


@dataclass
class FakeOkx(V5Server):
    """``/api/v5`` routes over tables: ``candles[(kind, instId, bar)]`` (kind ``trade`` or
    ``mark``) and ``funding[instId]`` hold raw rows (any order); ``instruments[instType]`` and
    ``tiers[(instType, tdMode, instFamily)]`` hold ``data`` lists."""

    candles: dict[tuple[str, str, str], list[list[str]]] = field(default_factory=dict)
    funding: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    instruments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tiers: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)

    # path -> (table, largest page): ccxt's declared maxima (300 trade, 100 mark candles)
    CANDLE_ROUTES: ClassVar[dict[str, tuple[str, int]]] = {
        "/api/v5/market/candles": ("trade", 300), "/api/v5/market/history-candles": ("trade", 300),
        "/api/v5/market/mark-price-candles": ("mark", 100), "/api/v5/market/history-mark-price-candles": ("mark", 100)}
    DATA_PATHS: ClassVar[tuple[str, ...]] = tuple(CANDLE_ROUTES) + ("/api/v5/public/funding-rate-history",)

    @staticmethod
    def ok(data: list[Any]) -> FakeResponse:
        return FakeResponse(200, {"code": "0", "msg": "", "data": data})

    @staticmethod
    def error(code: str, msg: str, status: int = 200) -> FakeResponse:
        return FakeResponse(status, {"code": code, "msg": msg, "data": []})

    def routes(self) -> dict[str, Callable[[dict[str, str]], FakeResponse]]:
        out: dict[str, Callable[[dict[str, str]], FakeResponse]] = {
            "/api/v5/public/instruments": lambda p: self.ok(self.instruments.get(p.get("instType", ""), [])),
            "/api/v5/public/position-tiers": self._tiers,
            "/api/v5/public/funding-rate-history": self._funding}
        for path, (kind, cap) in self.CANDLE_ROUTES.items():
            out[path] = lambda p, kind=kind, cap=cap: self._candles(kind, cap, p)
        return out

    @staticmethod
    def _window(rows: list[Any], key: Callable[[Any], int], p: dict[str, str], cap: int) -> list[Any]:
        limit = max(1, min(int(p.get("limit", 100)), cap))
        after, before = p.get("after"), p.get("before")
        sel = [r for r in rows if (after is None or key(r) < int(after)) and (before is None or key(r) > int(before))]
        return _desc(sel, key)[:limit]

    def _candles(self, kind: str, cap: int, p: dict[str, str]) -> FakeResponse:
        inst, bar = p.get("instId", ""), p.get("bar", "1m")
        rows = self.candles.get((kind, inst, bar))
        if rows is None:
            if any(k[:2] == (kind, inst) for k in self.candles):
                return self.error("51000", "Parameter bar error")
            return self.error("51001", "Instrument ID does not exist")
        return self.ok(self._window(rows, lambda r: int(r[0]), p, cap))

    def _funding(self, p: dict[str, str]) -> FakeResponse:
        rows = self.funding.get(p.get("instId", ""))
        if rows is None:
            return self.error("51001", "Instrument ID does not exist")
        return self.ok(self._window(rows, lambda r: int(r["fundingTime"]), p, 100))

    def _tiers(self, p: dict[str, str]) -> FakeResponse:
        rows = self.tiers.get((p.get("instType", ""), p.get("tdMode", ""), p.get("instFamily", "")))
        return self.ok(rows) if rows is not None else self.error("51001", "Instrument ID does not exist")


# ---------------------------------------------------------------------------------------------
# servers and exchanges over the committed fixtures


def bybit_server(**kw: Any) -> FakeBybit:
    """BTCUSDT (linear) and BTCUSD (inverse) 1h candles, mark candles and funding of
    2023-03-10..13, plus the markets and risk limits of the fixtures."""
    data, mk = load(BYBIT_DATA), load(BYBIT_MARKETS)
    klines, funding = {}, {}
    for sym, cat in (("BTCUSDT", "linear"), ("BTCUSD", "inverse")):
        d = data[sym]
        klines[("/v5/market/kline", cat, sym, "60")] = d["kline"]
        klines[("/v5/market/mark-price-kline", cat, sym, "60")] = d["markPriceKline"]
        funding[(cat, sym)] = d["fundingHistory"]
    instruments = {cat: body["result"]["list"] for cat, body in mk["instrumentsInfo"].items()}
    risk = {tuple(k.split(":")): body["result"]["list"] for k, body in mk["riskLimit"].items()}
    return FakeBybit(klines=klines, funding=funding, instruments=instruments, risk_limits=risk, **kw)


def okx_server(**kw: Any) -> FakeOkx:
    """BTC-USDT-SWAP 1H candles, mark candles and funding of 2023-03-10..13, plus markets
    (BTC-USDT spot, BTC-USDT-SWAP, BTC-USD-SWAP) and position tiers."""
    data, mk = load(OKX_DATA), load(OKX_MARKETS)
    inst = data["instId"]
    return FakeOkx(candles={("trade", inst, "1H"): data["candles"], ("mark", inst, "1H"): data["markPriceCandles"]},
                   funding={inst: data["fundingRateHistory"]},
                   instruments={t: body["data"] for t, body in mk["instruments"].items()},
                   tiers={tuple(k.split(":")): body["data"] for k, body in mk["positionTiers"].items()}, **kw)


def make_exchange(exchange_id: str, server: V5Server) -> Any:
    """A real ccxt exchange whose HTTP session is ``server`` (rate limiter off: no waiting)."""
    import ccxt

    return getattr(ccxt, exchange_id)({"session": server, "enableRateLimit": False})


def expected(name: str) -> pd.DataFrame:
    """What the store must hold: the committed sample's rows the fixtures were built from."""
    return sample_window(name)


# ---------------------------------------------------------------------------------------------
# fixture builder (run by hand: python tests/data/data_fakes_v5.py)


def _sample() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return sample_window("ohlcv-1h.parquet"), sample_window("mark-1h.parquet"), sample_window("funding.parquet")


def build_bybit_data() -> dict[str, Any]:
    ohlcv, mark, fund = _sample()
    out: dict[str, Any] = {"description": "Bybit v5 raw rows constructed from data/sample (Binance USD-M BTCUSDT "
                                          "2023-03-10T00:00Z..2023-03-14T00:00Z); see README.md",
                           "start": START, "end": END}
    for sym, inverse in (("BTCUSDT", False), ("BTCUSD", True)):
        kl = []
        for r in ohlcv.itertuples():
            if inverse:  # volume in USD contracts, turnover in BTC (ccxt reads turnover for inverse)
                vol, turnover = num(round(r.volume * r.close)), num(r.volume)
            else:  # volume in BTC, turnover in USDT
                vol, turnover = num(r.volume), num(round(r.volume * r.close, 4))
            kl.append([str(r.timestamp), num(r.open), num(r.high), num(r.low), num(r.close), vol, turnover])
        mk = [[str(r.timestamp), num(r.open), num(r.high), num(r.low), num(r.close)] for r in mark.itertuples()]
        fh = [{"symbol": sym, "fundingRate": num(r.funding_rate), "fundingRateTimestamp": str(r.timestamp)}
              for r in fund.itertuples()]
        out[sym] = {"kline": kl[::-1], "markPriceKline": mk[::-1], "fundingHistory": fh[::-1]}
    return out


def build_okx_data() -> dict[str, Any]:
    ohlcv, mark, fund = _sample()
    ct_val = 0.01  # BTC per BTC-USDT-SWAP contract
    candles = [[str(r.timestamp), num(r.open), num(r.high), num(r.low), num(r.close), num(round(r.volume / ct_val)),
                num(r.volume), num(round(r.volume * r.close, 2)), "1"] for r in ohlcv.itertuples()]
    marks = [[str(r.timestamp), num(r.open), num(r.high), num(r.low), num(r.close), "1"] for r in mark.itertuples()]
    funding = [{"formulaType": "withRate", "fundingRate": num(r.funding_rate), "fundingTime": str(r.timestamp),
                "instId": "BTC-USDT-SWAP", "instType": "SWAP", "method": "current_period",
                "realizedRate": num(r.funding_rate)} for r in fund.itertuples()]
    return {"description": "OKX v5 raw rows constructed from data/sample (Binance USD-M BTCUSDT "
                           "2023-03-10T00:00Z..2023-03-14T00:00Z); see README.md",
            "instId": "BTC-USDT-SWAP", "start": START, "end": END,
            "candles": candles[::-1], "markPriceCandles": marks[::-1], "fundingRateHistory": funding[::-1]}


def main() -> None:
    for name, doc in ((BYBIT_DATA, build_bybit_data()), (OKX_DATA, build_okx_data())):
        (FIXTURES / name).write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"wrote {FIXTURES / name}")


if __name__ == "__main__":
    main()
