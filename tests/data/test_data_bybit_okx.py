"""``backtest download`` for Bybit and OKX (API v5) against real ccxt over faked HTTP.

The fakes (data_fakes_v5) answer in each exchange's documented response shape with the
committed sample's values, so every stored number can be compared with the sample itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import ccxt
import numpy as np
import pandas as pd
import pytest
import requests
from data_fakes_v5 import (
    BYBIT_DATA, BYBIT_RECORDED, END, HOUR, INVERSE, LINEAR, OKX_DATA, START, FakeBybit, FakeResponse, V5Server,
    build_bybit_data, build_okx_data, bybit_server, expected, load, make_exchange, okx_server,
)

from backtest.data import fetch as fetch_mod
from backtest.data.download import download
from backtest.data.fetch import DownloadError, Retry
from backtest.data.store import Store, read_meta
from backtest.market import load_market

AFTER_END = END + 30 * 60_000  # every fixture candle closed


@dataclass(frozen=True)
class Case:
    exchange: str
    symbol: str
    server: Callable[..., V5Server]
    market_id: str  # the exchange's id every data request must name
    category: str | None  # Bybit's category parameter (OKX has none)

    def __str__(self) -> str:
        return f"{self.exchange}-{self.symbol}"


CASES = [Case("bybit", LINEAR, bybit_server, "BTCUSDT", "linear"),
         Case("bybit", INVERSE, bybit_server, "BTCUSD", "inverse"),
         Case("okx", LINEAR, okx_server, "BTC-USDT-SWAP", None)]
IDS = ["bybit-linear", "bybit-inverse", "okx-linear"]


def run(case: Case, server: V5Server, kinds: list[str], root: Any, **kw: Any) -> list:
    args = {"since": START, "limit": 5, "retry": Retry(attempts=3, base_delay=0.5, sleep=lambda s: None),
            "clock": lambda: AFTER_END} | kw
    return download(make_exchange(case.exchange, server), case.symbol, kinds, "1h", root=root, **args)


def lower(call) -> int:
    """The lower bound a data request asked for (Bybit start/startTime; OKX before + 1)."""
    p = call.params
    if "before" in p:
        return int(p["before"]) + 1
    return int(p.get("start", p.get("startTime")))


def upper(call) -> int | None:
    """The inclusive upper bound of a data request, if any (Bybit end/endTime; OKX after - 1)."""
    p = call.params
    if "after" in p:
        return int(p["after"]) - 1
    v = p.get("end", p.get("endTime"))
    return None if v is None else int(v)


def assert_store_holds_the_sample(root: Any, case: Case) -> None:
    store = Store(root)
    pd.testing.assert_frame_equal(store.read(case.exchange, case.symbol, "ohlcv", "1h"), expected("ohlcv-1h.parquet"))
    pd.testing.assert_frame_equal(store.read(case.exchange, case.symbol, "mark", "1h"), expected("mark-1h.parquet"))
    f, ref = store.read(case.exchange, case.symbol, "funding"), expected("funding.parquet")
    # Bybit and OKX print exact funding times; neither gives a mark price in funding history
    pd.testing.assert_frame_equal(f[["timestamp", "funding_rate", "interval_hours"]],
                                  ref[["timestamp", "funding_rate", "interval_hours"]])
    assert f["mark_price"].isna().all()


# --- what ccxt requests and parses ------------------------------------------------------------


def test_committed_data_fixtures_are_the_sample_rebuilt():
    assert load(BYBIT_DATA) == build_bybit_data()
    assert load(OKX_DATA) == build_okx_data()


def test_load_markets_requests_only_the_instrument_lists():
    bybit, okx = bybit_server(), okx_server()
    make_exchange("bybit", bybit).load_markets()
    make_exchange("okx", okx).load_markets()
    # ccxt 4.5.90: spot, linear and inverse (each also with status=PreLaunch), and one
    # option list per default base coin; OKX: one list per instType (options per underlying)
    got = [(c.path, c.params) for c in bybit.calls]
    assert got[:5] == [
        ("/v5/market/instruments-info", {"category": "spot"}),
        ("/v5/market/instruments-info", {"category": "linear", "limit": "1000"}),
        ("/v5/market/instruments-info", {"category": "linear", "limit": "1000", "status": "PreLaunch"}),
        ("/v5/market/instruments-info", {"category": "inverse", "limit": "1000"}),
        ("/v5/market/instruments-info", {"category": "inverse", "limit": "1000", "status": "PreLaunch"})]
    assert {c.params["category"] for c in bybit.calls[5:]} == {"option"}
    assert [(c.path, c.params.get("instType")) for c in okx.calls] == [
        ("/api/v5/public/instruments", "SPOT"), ("/api/v5/public/instruments", "FUTURES"),
        ("/api/v5/public/instruments", "SWAP"), ("/api/v5/public/instruments", "OPTION"),
        ("/api/v5/public/instruments", "OPTION")]


def test_recorded_bybit_ohlcv_parses_to_the_recorded_output():
    case = load(BYBIT_RECORDED)["methods"]["fetchOHLCV"][0]
    symbol, timeframe, since, limit = case["input"]
    server = bybit_server()
    server.klines[("/v5/market/kline", "linear", "BTCUSDT", "60")] = case["httpResponse"]["result"]["list"]
    ex = make_exchange("bybit", server)
    assert ex.fetch_ohlcv(symbol, timeframe, since, limit) == case["parsedResponse"]
    sent = server.data_calls[-1].params
    # ccxt aligns 'start' up to the hour; the recording answers with the first `limit`
    # candles from 'start', newest first: the semantics the fake implements
    assert int(sent["start"]) == 1706630400000 == case["parsedResponse"][0][0]
    assert sent["limit"] == "3" and sent["category"] == "linear" and sent["interval"] == "60"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_constructed_responses_parse_to_the_sample(case):
    server = case.server()
    ex = make_exchange(case.exchange, server)
    ref = expected("ohlcv-1h.parquet")[["timestamp", "open", "high", "low", "close", "volume"]].to_numpy()
    np.testing.assert_array_equal(np.array(ex.fetch_ohlcv(case.symbol, "1h", START, 96), dtype=float), ref)
    mref = expected("mark-1h.parquet")[["timestamp", "open", "high", "low", "close"]].to_numpy()
    mark = np.array(ex.fetch_mark_ohlcv(case.symbol, "1h", START, 96), dtype=float)
    np.testing.assert_array_equal(mark[:, :5], mref)
    assert np.isnan(mark[:, 5]).all()  # neither exchange gives mark candles a volume
    fund = ex.fetch_funding_rate_history(case.symbol, START, 100)
    fref = expected("funding.parquet")
    assert [f["timestamp"] for f in fund] == fref["timestamp"].tolist()
    assert [f["fundingRate"] for f in fund] == fref["funding_rate"].tolist()
    assert all(c.params.get("symbol", c.params.get("instId")) == case.market_id
               and c.params.get("category") == case.category for c in server.data_calls)


def test_inverse_volume_is_the_coin_turnover():
    server = bybit_server()
    raw = {int(r[0]): r for r in server.klines[("/v5/market/kline", "inverse", "BTCUSD", "60")]}
    got = make_exchange("bybit", server).fetch_ohlcv(INVERSE, "1h", START, 3)
    # list[5] is the volume in USD contracts, list[6] the turnover in BTC: ccxt keeps the BTC
    assert [row[5] for row in got] == [float(raw[row[0]][6]) for row in got]
    assert all(float(raw[row[0]][5]) > 1000 * row[5] for row in got)


# --- pagination and content -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pages_through_every_kind_and_stores_exactly_the_sample(case, fast_tmp):
    server = case.server()
    res = run(case, server, ["ohlcv", "mark", "funding"], fast_tmp)
    assert [r.rows_total for r in res] == [96, 96, 12]
    assert_store_holds_the_sample(fast_tmp, case)
    candle_calls = [c for c in server.data_calls if "funding" not in c.path]
    # 96 candles in pages of 5, each page from one bar after the previous page's last candle
    assert [lower(c) for c in candle_calls] == [START + k * 5 * HOUR for k in range(20)] * 2
    if case.exchange == "okx":
        # ccxt bounds every OKX page to exactly `limit` bars: after = since + 5 bars
        assert [upper(c) for c in candle_calls] == [START + (k + 1) * 5 * HOUR - 1 for k in range(20)] * 2
    meta = read_meta(Store(fast_tmp).path(case.exchange, case.symbol, "ohlcv", "1h"))
    assert (meta["symbol"], int(meta["covered_from"]), int(meta["covered_to"])) == (case.symbol, START, END)


BYBIT_FUNDING_CALLS = [
    # (startTime, endTime) in hours after START; prints every 8 h from 0 to 88 h
    (0, 40),  # ccxt's window [since, since + 5 x 8 h]: 6 prints, Bybit returns the newest 5
    (0, 8 - 1 / HOUR),  # the page started after the cursor: the gap [0, 8 h) asked again -> the print at 0
    (40 + 1 / HOUR, 80 + 1 / HOUR),  # 5 prints 48..80: full, starts after the cursor
    (40 + 1 / HOUR, 48 - 1 / HOUR),  # gap check: empty
    (80 + 1 / HOUR, 120 + 1 / HOUR),  # one print (88 h): the end
    (88 + 1 / HOUR, 128 + 1 / HOUR),  # empty: skip one page width (5 x 1 h)
    (93 + 1 / HOUR, 133 + 1 / HOUR),  # empty, and the cursor passes now
]
OKX_FUNDING_CALLS = [
    # (lower, upper) in hours after START; OKX answers 'before' alone with its latest prints
    (0, None),  # the latest 5: 56..88 h
    (0, 56 - 1 / HOUR),  # after = 56 h: the newest 5 before it, 16..48 h
    (0, 16 - 1 / HOUR),  # after = 16 h: 0 and 8 h, not a full page: the gap is closed
    (88 + 1 / HOUR, None),  # nothing newer than the last print
    (93 + 1 / HOUR, None),
]


@pytest.mark.parametrize("case, calls", [(CASES[0], BYBIT_FUNDING_CALLS), (CASES[1], BYBIT_FUNDING_CALLS),
                                         (CASES[2], OKX_FUNDING_CALLS)], ids=IDS)
def test_funding_pages_answered_newest_first_are_completed_backwards(case, calls, fast_tmp):
    server = case.server()
    ex = make_exchange(case.exchange, server)
    # the hazard: one ccxt call from START does not return the print at START
    first_page = ex.fetch_funding_rate_history(case.symbol, START, 5)
    assert len(first_page) == 5 and first_page[0]["timestamp"] > START
    server.calls.clear()
    res = run(case, server, ["funding"], fast_tmp)
    hours = lambda v: None if v is None else (v - START) / HOUR  # noqa: E731
    assert [(hours(lower(c)), hours(upper(c))) for c in server.data_calls] == calls
    f = Store(fast_tmp).read(case.exchange, case.symbol, "funding")
    ref = expected("funding.parquet")
    np.testing.assert_array_equal(f["timestamp"], ref["timestamp"])
    np.testing.assert_array_equal(f["funding_rate"], ref["funding_rate"])
    np.testing.assert_array_equal(f["interval_hours"], np.full(12, 8.0))
    assert res[0].requests == len(calls) and res[0].notes == ()
    assert "pending_from" not in read_meta(Store(fast_tmp).path(case.exchange, case.symbol, "funding"))


def test_okx_funding_needs_its_raw_upper_bound(fast_tmp, monkeypatch):
    # ccxt's okx.fetch_funding_rate_history does not map 'until'; without the raw 'after'
    # the gap request returns the latest prints again, which must be refused, not stored
    monkeypatch.setattr(fetch_mod, "RAW_UNTIL", {})
    server = okx_server()
    with pytest.raises(DownloadError, match=r"got a full page starting at 2023-03-12T08:00.*'until'.*hole"):
        run(CASES[2], server, ["funding"], fast_tmp)
    assert server.data_calls[1].params.get("until") is not None and "after" not in server.data_calls[1].params
    assert not Store(fast_tmp).exists("okx", LINEAR, "funding")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_drops_the_still_open_candle_and_fetches_it_once_closed(case, fast_tmp):
    server = case.server()
    now = START + 50 * HOUR + 30 * 60_000  # the candle opened at +50 h is still open
    r = run(case, server, ["ohlcv"], fast_tmp, limit=20, clock=lambda: now)[0]
    assert r.rows_total == 50 and r.last == START + 49 * HOUR
    n = len(server.data_calls)
    r2 = run(case, server, ["ohlcv"], fast_tmp, limit=20, since=None)[0]
    assert r2.rows_total == 96 and r2.rows_added == 46
    assert lower(server.data_calls[n]) == START + 50 * HOUR  # resumed at the last stored candle + 1 bar
    pd.testing.assert_frame_equal(Store(fast_tmp).read(case.exchange, case.symbol, "ohlcv", "1h"),
                                  expected("ohlcv-1h.parquet"))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_second_run_makes_no_data_request(case, fast_tmp):
    server = case.server()
    run(case, server, ["ohlcv", "mark", "funding"], fast_tmp, limit=30)
    files = {p: p.read_bytes() for p in fast_tmp.rglob("*.parquet")}
    first = len(server.data_calls)
    res = run(case, server, ["ohlcv", "mark", "funding"], fast_tmp, limit=30)
    assert len(server.data_calls) == first, [c.path for c in server.data_calls[first:]]
    assert all(r.requests == 0 and r.rows_added == 0 for r in res)
    assert {p: p.read_bytes() for p in fast_tmp.rglob("*.parquet")} == files


def test_an_earlier_since_completes_the_head_backwards_on_okx(fast_tmp):
    case = CASES[2]
    server = case.server()
    run(case, server, ["funding"], fast_tmp, since=START + 48 * HOUR)
    n = len(server.data_calls)
    run(case, server, ["funding"], fast_tmp)
    head = [((lower(c) - START) / HOUR, None if upper(c) is None else (upper(c) + 1 - START) / HOUR)
            for c in server.data_calls[n:]]
    # the head [0, 48 h): the latest prints are all beyond it, so it is read backwards from 48 h
    assert head == [(0, None), (0, 48), (0, 8)]
    f = Store(fast_tmp).read("okx", LINEAR, "funding")
    np.testing.assert_array_equal(f["timestamp"], expected("funding.parquet")["timestamp"])
    np.testing.assert_array_equal(f["interval_hours"], np.full(12, 8.0))
    assert int(read_meta(Store(fast_tmp).path("okx", LINEAR, "funding"))["covered_from"]) == START


@pytest.mark.parametrize("case, first_run", [
    # Bybit: a head [0, 88 h) read forwards in pages (0..40 h, then 48..80 h): while it is
    # being read, the print at 88 h follows a range not read yet
    (CASES[0], {"since": START + 88 * HOUR}),
    # OKX: a tail above a stored print (0 h) read backwards from the latest (56..88 h), then
    # 16..48 h: while the gap before 16 h is open, the print at 16 h follows it
    (CASES[2], {"until": START + 1 * HOUR}),
], ids=["bybit-head", "okx-tail"])
def test_no_interval_is_derived_across_a_range_not_read_yet(case, first_run, fast_tmp):
    server = case.server()
    run(case, server, ["funding"], fast_tmp, **first_run)
    run(case, server, ["funding"], fast_tmp)
    f = Store(fast_tmp).read(case.exchange, case.symbol, "funding")
    np.testing.assert_array_equal(f["timestamp"], expected("funding.parquet")["timestamp"])
    np.testing.assert_array_equal(f["interval_hours"], np.full(12, 8.0))


def test_funding_intervals_follow_an_irregular_schedule(fast_tmp):
    # drop the 32 h print: intervals must read 16 h there, whatever order the pages came in
    case = CASES[2]
    server = case.server()
    rows = server.funding["BTC-USDT-SWAP"]
    server.funding["BTC-USDT-SWAP"] = [r for r in rows if int(r["fundingTime"]) != START + 32 * HOUR]
    run(case, server, ["funding"], fast_tmp)
    f = Store(fast_tmp).read("okx", LINEAR, "funding")
    ts = f["timestamp"].to_numpy()
    d = np.diff(ts) / HOUR
    np.testing.assert_array_equal(f["interval_hours"], np.concatenate([[d[0]], d]))
    assert 16.0 in f["interval_hours"].tolist() and len(f) == 11


def test_funding_before_the_served_history_is_noted(fast_tmp):
    # OKX serves about three months of funding history: asked from earlier, the result says so
    res = run(CASES[2], okx_server(), ["funding"], fast_tmp, since=START - 30 * 24 * HOUR)
    assert any("no funding print before 2023-03-10T00:00:00+00:00 (asked from 2023-02-08" in n for n in res[0].notes)


# --- transient errors -------------------------------------------------------------------------


def _raise(exc: Exception) -> Callable[[], FakeResponse]:
    def make() -> FakeResponse:
        raise exc
    return make


FAULTS = {
    # ccxt 4.5.90's mapping of each exchange's documented rate-limit and outage answers
    "bybit-retCode-10006": ("bybit", ccxt.RateLimitExceeded, lambda: FakeBybit.error(10006, "Too many visits!")),
    "bybit-http-403": ("bybit", ccxt.RateLimitExceeded, lambda: FakeResponse(403, "<html>403 Forbidden</html>")),
    "bybit-http-502": ("bybit", ccxt.ExchangeNotAvailable, lambda: FakeResponse(502, "<html>502 Bad Gateway</html>")),
    "bybit-timeout": ("bybit", ccxt.RequestTimeout, _raise(requests.Timeout("read timed out"))),
    "okx-code-50011": ("okx", ccxt.RateLimitExceeded,
                       lambda: FakeResponse(200, {"code": "50011", "msg": "Too Many Requests", "data": []})),
    "okx-http-429": ("okx", ccxt.RateLimitExceeded,
                     lambda: FakeResponse(429, {"code": "50011", "msg": "Too Many Requests", "data": []})),
    "okx-code-50013": ("okx", ccxt.ExchangeNotAvailable, lambda: FakeResponse(
        200, {"code": "50013", "msg": "Systems are busy. Please try again later.", "data": []})),
    "okx-connection": ("okx", ccxt.NetworkError, _raise(requests.ConnectionError("Connection aborted."))),
}


def _case(exchange: str) -> Case:
    return CASES[0] if exchange == "bybit" else CASES[2]


@pytest.mark.parametrize("name", list(FAULTS))
def test_injected_faults_map_to_the_intended_ccxt_error(name):
    exchange, cls, make = FAULTS[name]
    case = _case(exchange)
    ex = make_exchange(exchange, case.server(fault=lambda k, c: make()))
    with pytest.raises(cls):
        ex.fetch_ohlcv(case.symbol, "1h", START, 10)


@pytest.mark.parametrize("name", list(FAULTS))
def test_transient_errors_are_retried_with_backoff(name, fast_tmp):
    exchange, _, make = FAULTS[name]
    case = _case(exchange)
    delays: list[float] = []
    server = case.server(fault=lambda k, c: make() if k in (2, 3) else None)  # page 2 fails twice
    res = run(case, server, ["ohlcv"], fast_tmp, limit=40,
              retry=Retry(attempts=3, base_delay=0.5, max_delay=10, sleep=delays.append))
    assert delays == [0.5, 1.0]
    assert [lower(c) for c in server.data_calls] == [START, START + 40 * HOUR, START + 40 * HOUR,
                                                      START + 40 * HOUR, START + 80 * HOUR]
    assert res[0].rows_total == 96
    pd.testing.assert_frame_equal(Store(fast_tmp).read(exchange, case.symbol, "ohlcv", "1h"),
                                  expected("ohlcv-1h.parquet"))


def test_gives_up_after_the_attempts_and_keeps_what_was_fetched(fast_tmp):
    case = CASES[0]
    server = case.server(fault=lambda k, c: FakeBybit.error(10006, "Too many visits!") if k >= 2 else None)
    with pytest.raises(DownloadError, match=r"page from 2023-03-11T16:00:00\+00:00: gave up after 3 attempts "
                                            r"\(RateLimitExceeded: .*10006"):
        run(case, server, ["ohlcv"], fast_tmp, limit=40)
    assert len(Store(fast_tmp).read("bybit", LINEAR, "ohlcv", "1h")) == 40


# --- permanent errors -------------------------------------------------------------------------

REJECT = {"bybit": (lambda: FakeBybit.error(10001, "Not supported symbols"), "Not supported symbols"),
          "okx": (lambda: FakeResponse(200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}),
                  "Instrument ID does not exist")}


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
def test_symbol_rejected_by_the_exchange_is_not_retried(exchange, fast_tmp):
    make, msg = REJECT[exchange]
    case = _case(exchange)
    delays: list[float] = []
    server = case.server(fault=lambda k, c: make())
    with pytest.raises(DownloadError, match=f"rejected the symbol .*BadSymbol.*{msg}"):
        run(case, server, ["ohlcv"], fast_tmp, retry=Retry(attempts=5, sleep=delays.append))
    assert len(server.data_calls) == 1 and delays == []


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
def test_unknown_symbol_fails_before_any_data_request(exchange, fast_tmp):
    case = _case(exchange)
    server = case.server()
    with pytest.raises(DownloadError, match=rf"{exchange}: no market 'BTC/USDT:BTC' \(ccxt BadSymbol\); markets with "
                                            r"base BTC: BTC/USD:BTC, BTC/USDT, BTC/USDT:USDT"):
        download(make_exchange(exchange, server), [LINEAR, "BTC/USDT:BTC"], ["ohlcv"], "1h", since=START,
                 root=fast_tmp)
    assert server.data_calls == []


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
@pytest.mark.parametrize("kind, match", [("mark", "mark and index candles exist only for contracts"),
                                         ("index", "mark and index candles exist only for contracts"),
                                         ("funding", "funding exists only for perpetual swaps")])
def test_a_spot_market_has_no_mark_index_or_funding_endpoint(exchange, kind, match, fast_tmp):
    server = _case(exchange).server()
    with pytest.raises(DownloadError, match=rf"{exchange} BTC/USDT {kind}: the market is 'spot'.*{match}"):
        download(make_exchange(exchange, server), "BTC/USDT", [kind], "1h", since=START, root=fast_tmp)
    assert server.data_calls == []


def test_an_unknown_route_is_loud():
    server = bybit_server()
    ex = make_exchange("bybit", server)
    with pytest.raises(ccxt.BaseError):
        ex.fetch_index_ohlcv(LINEAR, "1h", START, 5)  # not served by the fake: HTTP 404
    assert server.calls[-1].path == "/v5/market/index-price-kline"


# --- market snapshot --------------------------------------------------------------------------


def _snapshot(exchange: str, server: V5Server, root: Any) -> tuple[dict[str, Any], Any]:
    res = download(make_exchange(exchange, server), [LINEAR, INVERSE], ["markets"], root=root,
                   clock=lambda: 1735689600000)
    return json.loads((root / "markets" / f"{exchange}.json").read_text()), res[0]


def test_bybit_snapshot_linear_and_inverse(fast_tmp):
    doc, res = _snapshot("bybit", bybit_server(), fast_tmp)
    lin, inv = doc["markets"][LINEAR], doc["markets"][INVERSE]
    assert {k: lin[k] for k in ("id", "base", "quote", "settle", "type", "linear", "inverse", "contractSize")} == {
        "id": "BTCUSDT", "base": "BTC", "quote": "USDT", "settle": "USDT", "type": "swap", "linear": True,
        "inverse": False, "contractSize": 1.0}
    # instruments-info carries no fee: ccxt's default tier (taker 0.06 %, maker 0.01 %)
    assert (lin["taker"], lin["maker"]) == (0.0006, 0.0001)
    assert lin["precision"] == {"amount": 0.001, "price": 0.1}
    assert lin["limits"] == {"amount": {"min": 0.001}, "cost": {"min": 5.0}}
    # risk-limit tiers; the maintenance amount of tier 2 is Bybit's mmDeduction, which equals
    # the continuity amount 2,000,000 x (0.0056 - 0.005)
    assert [(t["minNotional"], t["maxNotional"], t["maintenanceMarginRate"], t["maxLeverage"], t["maintAmt"])
            for t in lin["tiers"]] == [(0.0, 2e6, 0.005, 100.0, 0.0), (2e6, 2.6e6, 0.0056, 90.0, 2e6 * 0.0006)]
    # the inverse perpetual: coin-margined, one contract = 1 USD (ccxt: minOrderQty)
    assert {k: inv[k] for k in ("id", "settle", "linear", "inverse", "contractSize")} == {
        "id": "BTCUSD", "settle": "BTC", "linear": False, "inverse": True, "contractSize": 1.0}
    assert inv["precision"] == {"amount": 1.0, "price": 0.5} and inv["tiers"] == []
    # the documented inverse example quotes 0.5 and 1 (percent in v2): refused, and said so
    assert any(n.startswith("BTC/USD:BTC: no tier table (fetched tiers rejected") and "percent" in n
               for n in res.notes)
    assert any("BTC/USDT:USDT: liquidationFeeRate unknown" in n for n in res.notes)
    assert res.requests == 2
    spec = load_market("bybit", LINEAR, data_dir=fast_tmp)
    assert (spec.contract_size, spec.lot_size, spec.inverse) == (1.0, 0.001, False)


def test_bybit_tiers_whose_deduction_breaks_continuity_are_refused(fast_tmp):
    server = bybit_server()
    tiers = server.risk_limits[("linear", "BTCUSDT")]
    server.risk_limits[("linear", "BTCUSDT")] = [tiers[0], {**tiers[1], "mmDeduction": "1500"}]
    doc, res = _snapshot("bybit", server, fast_tmp)
    assert doc["markets"][LINEAR]["tiers"] == []
    assert any(n.startswith("BTC/USDT:USDT: no tier table (fetched tiers rejected") for n in res.notes)


def test_okx_snapshot_and_why_its_tiers_are_not_notional(fast_tmp):
    server = okx_server()
    doc, res = _snapshot("okx", server, fast_tmp)
    lin, inv = doc["markets"][LINEAR], doc["markets"][INVERSE]
    assert (lin["id"], lin["linear"], lin["contractSize"], lin["settle"]) == ("BTC-USDT-SWAP", True, 0.01, "USDT")
    assert (inv["id"], inv["inverse"], inv["contractSize"], inv["settle"]) == ("BTC-USD-SWAP", True, 100.0, "BTC")
    assert (lin["taker"], lin["maker"]) == (0.0005, 0.0002)  # ccxt's default swap tier
    assert lin["precision"] == {"amount": 0.01, "price": 0.1} and lin["limits"]["amount"] == {"min": 0.01}
    assert lin["tiers"] == [] and inv["tiers"] == []
    assert any(n.startswith("BTC/USDT:USDT: no tier table (OKX position tiers") and "contracts" in n
               for n in res.notes)
    assert not any(c.path.endswith("position-tiers") for c in server.calls) and res.requests == 0
    # what ccxt would have stored: the contract bounds as 'notional', with 1-contract holes
    rows = make_exchange("okx", server).fetch_market_leverage_tiers(LINEAR)
    raw = server.tiers[("SWAP", "cross", "BTC-USDT")]
    assert [(r["minNotional"], r["maxNotional"]) for r in rows] == [(float(t["minSz"]), float(t["maxSz"])) for t in raw]
    assert rows[1]["minNotional"] == rows[0]["maxNotional"] + 1
