"""The downloader against real ccxt with a faked HTTP transport (data_fakes.FakeBinance)."""

from __future__ import annotations

import json

import ccxt
import numpy as np
import pandas as pd
import pytest
import requests
from data_fakes import (
    END, HOUR, START, SYMBOL, FakeBinance, FakeResponse, binance_info, load_fixture, sample_window, usdm_exchange,
    usdm_server,
)

from backtest.data.download import download, sync_dataset
from backtest.data.fetch import DownloadError, Retry
from backtest.data.store import Store, read_meta
from backtest.market import load_market


def starts(server, path_end="klines"):
    return [int(c.params["startTime"]) for c in server.data_calls if c.path.endswith(path_end)]


# --- pagination and content -------------------------------------------------------------------


def test_paginates_by_moving_since_and_stores_exactly_the_sample(exchange, server, fast_tmp, retry, after_end):
    res = download(exchange, SYMBOL, ["ohlcv", "mark", "funding"], "1h", since=START, root=fast_tmp,
                   limit=20, retry=retry, clock=after_end)
    # 96 candles in pages of 20: each page starts one bar after the previous page's last row
    assert starts(server, "/klines") == [START + k * 20 * HOUR for k in range(5)]
    assert starts(server, "markPriceKlines") == [START + k * 20 * HOUR for k in range(5)]
    store = Store(fast_tmp)
    got = store.read("binanceusdm", SYMBOL, "ohlcv", "1h")
    pd.testing.assert_frame_equal(got, sample_window("ohlcv-1h.parquet"))
    mark = store.read("binanceusdm", SYMBOL, "mark", "1h")
    pd.testing.assert_frame_equal(mark, sample_window("mark-1h.parquet"))  # volume-less, like the sample
    f = store.read("binanceusdm", SYMBOL, "funding")
    ref = sample_window("funding.parquet")
    np.testing.assert_array_equal((f["timestamp"] + 500) // 1000 * 1000, ref["timestamp"])
    assert (f["timestamp"] % 1000 != 0).any()  # raw times, jitter kept
    np.testing.assert_array_equal(f["funding_rate"], ref["funding_rate"])
    np.testing.assert_array_equal(f["interval_hours"], ref["interval_hours"])  # 8 h, derived from spacing
    mref = sample_window("mark-1h.parquet").set_index("timestamp")["open"]
    np.testing.assert_array_equal(f["mark_price"], mref.loc[ref["timestamp"]].to_numpy())
    assert [r.rows_total for r in res] == [96, 96, 12]
    assert read_meta(store.path("binanceusdm", SYMBOL, "ohlcv", "1h"))["symbol"] == SYMBOL


def test_drops_the_still_open_candle_and_fetches_it_once_closed(exchange, server, fast_tmp, retry):
    now = START + 50 * HOUR + 30 * 60_000  # candle 50 (opened at +50 h) is still open
    exchange.load_markets()
    r = sync_dataset(exchange, SYMBOL, "ohlcv", "1h", since=START, store=Store(fast_tmp), limit=40,
                     retry=retry, clock=lambda: now)
    assert r.rows_total == 50 and r.last == START + 49 * HOUR
    r2 = sync_dataset(exchange, SYMBOL, "ohlcv", "1h", store=Store(fast_tmp), limit=40, retry=retry,
                      clock=lambda: END)
    assert r2.rows_total == 96 and r2.rows_added == 46
    assert starts(server)[-2] == START + 50 * HOUR  # resumed at the last stored candle + 1 bar


def test_until_is_exclusive_and_later_runs_fetch_only_the_tail(exchange, server, fast_tmp, retry, after_end):
    download(exchange, SYMBOL, ["ohlcv"], "1h", since=START, until=START + 10 * HOUR, root=fast_tmp,
             limit=20, retry=retry, clock=after_end)
    got = Store(fast_tmp).read("binanceusdm", SYMBOL, "ohlcv", "1h")
    assert got["timestamp"].tolist() == [START + k * HOUR for k in range(10)]
    n = len(server.data_calls)
    download(exchange, SYMBOL, ["ohlcv"], "1h", since=START, root=fast_tmp, limit=20, retry=retry,
             clock=after_end)
    assert starts(server)[n:] == [START + 10 * HOUR + k * 20 * HOUR for k in range(5)]
    pd.testing.assert_frame_equal(Store(fast_tmp).read("binanceusdm", SYMBOL, "ohlcv", "1h"),
                                  sample_window("ohlcv-1h.parquet"))


def test_an_earlier_since_fetches_only_the_head(exchange, server, fast_tmp, retry, after_end):
    download(exchange, SYMBOL, ["ohlcv", "funding"], "1h", since=START + 48 * HOUR, root=fast_tmp, limit=20,
             retry=retry, clock=after_end)
    n = len(server.data_calls)
    download(exchange, SYMBOL, ["ohlcv", "funding"], "1h", since=START, root=fast_tmp, limit=20, retry=retry,
             clock=after_end)
    new = server.data_calls[n:]
    kl = [int(c.params["startTime"]) for c in new if c.path.endswith("klines")]
    assert kl == [START, START + 20 * HOUR, START + 40 * HOUR]  # stops at the stored start, no tail request
    store = Store(fast_tmp)
    pd.testing.assert_frame_equal(store.read("binanceusdm", SYMBOL, "ohlcv", "1h"), sample_window("ohlcv-1h.parquet"))
    f = store.read("binanceusdm", SYMBOL, "funding")
    assert len(f) == 12 and (f["interval_hours"] == 8.0).all()
    meta = read_meta(store.path("binanceusdm", SYMBOL, "ohlcv", "1h"))
    assert int(meta["covered_from"]) == START
    # and a third run has nothing left to ask
    m = len(server.data_calls)
    download(exchange, SYMBOL, ["ohlcv", "funding"], "1h", since=START, root=fast_tmp, limit=20, retry=retry,
             clock=after_end)
    assert len(server.data_calls) == m


@pytest.mark.parametrize("until", [END, None])
def test_second_run_makes_no_data_request(exchange, server, fast_tmp, retry, after_end, until):
    kinds = ["ohlcv", "mark", "funding"]
    download(exchange, SYMBOL, kinds, "1h", since=START, until=until, root=fast_tmp, limit=30, retry=retry,
             clock=after_end)
    files = {p: p.read_bytes() for p in fast_tmp.rglob("*.parquet")}
    first = len(server.data_calls)
    assert first > 0
    res = download(exchange, SYMBOL, kinds, "1h", since=START, until=until, root=fast_tmp, limit=30,
                   retry=retry, clock=after_end)
    assert len(server.data_calls) == first, [c.path for c in server.data_calls[first:]]
    assert all(r.requests == 0 and r.rows_added == 0 for r in res)
    assert {p: p.read_bytes() for p in fast_tmp.rglob("*.parquet")} == files  # not even rewritten


def test_retry_backoff_settings():
    r = Retry(attempts=5, base_delay=1.0, max_delay=5.0)
    assert [r.delay(k) for k in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)


# --- transient errors -------------------------------------------------------------------------

TOO_MANY = {"code": -1003, "msg": "Too many requests; current limit is 2400 request weight per 1 MINUTE."}
# ccxt's binance maps HTTP 429/418 to DDoSProtection and the -1003 body code to RateLimitExceeded
FAULTS = {
    "RateLimitExceeded": (ccxt.RateLimitExceeded, lambda: FakeResponse(400, TOO_MANY)),
    "DDoSProtection-429": (ccxt.DDoSProtection, lambda: FakeResponse(429, TOO_MANY)),
    "DDoSProtection-418": (ccxt.DDoSProtection, lambda: FakeResponse(418, "<html>418 I'm a teapot: IP banned</html>")),
    "RequestTimeout": (ccxt.RequestTimeout, lambda: (_ for _ in ()).throw(requests.Timeout("read timed out"))),
    "NetworkError": (ccxt.NetworkError,
                     lambda: (_ for _ in ()).throw(requests.ConnectionError("Connection aborted."))),
    "ExchangeNotAvailable": (ccxt.ExchangeNotAvailable, lambda: FakeResponse(503, "<html>Service Unavailable</html>")),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_injected_faults_map_to_the_intended_ccxt_error(name):
    cls, make = FAULTS[name]
    server = usdm_server(fault=lambda k, c: make())
    ex = usdm_exchange(server)
    with pytest.raises(cls):
        ex.fetch_ohlcv(SYMBOL, "1h", START, 10)


@pytest.mark.parametrize("name", list(FAULTS))
def test_transient_errors_are_retried_with_backoff(name, fast_tmp, nosleep, after_end):
    _, make = FAULTS[name]
    server = usdm_server(fault=lambda k, c: make() if k in (2, 3) else None)  # page 2 fails twice
    ex = usdm_exchange(server)
    retry = Retry(attempts=3, base_delay=0.5, max_delay=10, sleep=nosleep)
    res = download(ex, SYMBOL, ["ohlcv"], "1h", since=START, root=fast_tmp, limit=40, retry=retry,
                   clock=after_end)
    assert nosleep.delays == [0.5, 1.0]
    assert starts(server) == [START, START + 40 * HOUR, START + 40 * HOUR, START + 40 * HOUR, START + 80 * HOUR]
    assert res[0].rows_total == 96
    pd.testing.assert_frame_equal(Store(fast_tmp).read("binanceusdm", SYMBOL, "ohlcv", "1h"),
                                  sample_window("ohlcv-1h.parquet"))


def test_gives_up_after_the_attempts_and_keeps_what_was_fetched(fast_tmp, nosleep, after_end):
    _, make = FAULTS["DDoSProtection-429"]
    server = usdm_server(fault=lambda k, c: make() if k >= 2 else None)
    ex = usdm_exchange(server)
    with pytest.raises(DownloadError, match=r"page from 2023-03-11T16:00:00\+00:00: gave up after 4 attempts "
                                            r"\(DDoSProtection: .*429.*-1003"):
        download(ex, SYMBOL, ["ohlcv"], "1h", since=START, root=fast_tmp, limit=40,
                 retry=Retry(attempts=4, base_delay=1, max_delay=3, sleep=nosleep), clock=after_end)
    assert nosleep.delays == [1, 2, 3]
    assert len(Store(fast_tmp).read("binanceusdm", SYMBOL, "ohlcv", "1h")) == 40


# --- permanent errors -------------------------------------------------------------------------


def test_unknown_symbol_fails_before_any_data_request(exchange, server, fast_tmp, retry):
    with pytest.raises(DownloadError, match=r"binanceusdm: no market 'BTC/USDT' .*BTC/USDT:USDT"):
        download(exchange, ["BTC/USDT:USDT", "BTC/USDT"], ["ohlcv"], "1h", since=START, root=fast_tmp, retry=retry)
    assert server.data_calls == []


def test_symbol_rejected_by_the_exchange_is_not_retried(fast_tmp, nosleep, after_end):
    server = usdm_server(fault=lambda k, c: FakeResponse(400, {"code": -1121, "msg": "Invalid symbol."}))
    ex = usdm_exchange(server)
    with pytest.raises(DownloadError, match="rejected the symbol .*BadSymbol.*Invalid symbol"):
        download(ex, SYMBOL, ["ohlcv"], "1h", since=START, root=fast_tmp,
                 retry=Retry(attempts=5, sleep=nosleep), clock=after_end)
    assert len(server.data_calls) == 1 and nosleep.delays == []


def test_missing_endpoint_is_a_clear_error(exchange, server, fast_tmp, retry):
    exchange.has = {**exchange.has, "fetchMarkOHLCV": False}  # an exchange without mark candles
    with pytest.raises(DownloadError, match=r"does not offer fetchMarkOHLCV .*drop '-k mark'"):
        download(exchange, SYMBOL, ["ohlcv", "mark"], "1h", since=START, root=fast_tmp, retry=retry)
    assert server.data_calls == []


def test_exchange_without_mark_candles_in_ccxt():
    ex = ccxt.deribit()
    assert not ex.has["fetchMarkOHLCV"]  # the real flag the check relies on
    from backtest.data.fetch import check_capability

    ex.markets = {"BTC/USD:BTC": {"id": "BTC-PERPETUAL", "symbol": "BTC/USD:BTC", "type": "swap", "swap": True}}
    with pytest.raises(DownloadError, match="deribit BTC/USD:BTC mark: the exchange does not offer fetchMarkOHLCV"):
        check_capability(ex, "mark", "BTC/USD:BTC")


@pytest.mark.parametrize("kw, match", [
    ({"kinds": ["trades"]}, "unknown kind"),
    ({"timeframes": "7m"}, "timeframe '7m' is not offered"),
    ({"timeframes": "1hour"}, "not a ccxt timeframe"),
    ({"since": "2023-03-12", "until": "2023-03-11"}, "is not after --since"),
    ({"since": "yesterday"}, "neither an ISO date"),
])
def test_bad_arguments(exchange, server, fast_tmp, kw, match):
    args = {"kinds": ["ohlcv"], "timeframes": "1h", "since": START} | kw
    with pytest.raises((DownloadError, ValueError), match=match):
        download(exchange, SYMBOL, args.pop("kinds"), args.pop("timeframes"), root=fast_tmp, **args)
    assert server.data_calls == []


def test_funding_on_a_spot_market_is_refused(fast_tmp):
    server = FakeBinance(exchange_info=binance_info())
    ex = ccxt.binance({"session": server, "enableRateLimit": False})
    with pytest.raises(DownloadError, match="funding exists only for perpetual swaps"):
        download(ex, "BTC/USDT", ["funding"], root=fast_tmp, since=START)


def test_new_dataset_without_since_starts_at_the_listing(exchange, server, fast_tmp, retry, after_end):
    # ccxt knows BTCUSDT's onboardDate (2019-09-25); the fixture has data from 2023-03-10 only
    res = download(exchange, SYMBOL, ["ohlcv"], "1h", root=fast_tmp, limit=1000, retry=retry, clock=after_end)
    assert starts(server)[0] == 1569398400000
    assert res[0].rows_total == 96 and res[0].covered_from == 1569398400000


# --- coin-margined, windowed endpoint, recorded data -------------------------------------------


def coinm():
    case = load_fixture("binance.response.subset.json")["methods"]["fetchOHLCV"][1]
    assert case["description"] == "inverse index price"
    server = FakeBinance(klines={("/dapi/v1/indexPriceKlines", "BTCUSD", "1d"): case["httpResponse"]},
                         exchange_info=binance_info())
    return server, ccxt.binancecoinm({"session": server, "enableRateLimit": False}), case["parsedResponse"]


def test_coin_m_index_candles_with_windowed_pages_and_an_open_last_day(fast_tmp, retry):
    server, ex, parsed = coinm()
    day = 86_400_000
    first = parsed[0][0]  # 2024-04-08
    now = parsed[2][0] + day // 2  # noon of 2024-04-10: that day's candle is still open
    since = first - 12 * day
    res = download(ex, "BTC/USD:BTC", ["index"], "1d", since=since, root=fast_tmp, limit=5, retry=retry,
                   clock=lambda: now)
    # ccxt asks COIN-M for a window [since, since + 5 days); empty windows are skipped one by one
    calls = server.data_calls
    assert [int(c.params["startTime"]) for c in calls] == [since, since + 5 * day, since + 10 * day]
    assert all(int(c.params["endTime"]) - int(c.params["startTime"]) == 5 * day - 1 for c in calls)
    assert all(c.params["pair"] == "BTCUSD" for c in calls)
    store = Store(fast_tmp)
    got = store.read("binancecoinm", "BTC/USD:BTC", "index", "1d")
    np.testing.assert_array_equal(got.to_numpy(), np.array(parsed[:2], dtype=float)[:, :5])
    assert read_meta(store.path("binancecoinm", "BTC/USD:BTC", "index", "1d"))["symbol"] == "BTC/USD:BTC"
    assert res[0].path.parent.name == "BTC_USD_BTC"
    assert any("no candle before 2024-04-08" in n for n in res[0].notes)


# --- market snapshot --------------------------------------------------------------------------


def test_markets_snapshot_keeps_bundled_tiers_when_the_endpoint_is_private(exchange, fast_tmp, retry):
    res = download(exchange, SYMBOL, ["markets"], root=fast_tmp, retry=retry)
    doc = json.loads((fast_tmp / "markets" / "binanceusdm.json").read_text())
    bundled = json.loads((load_market.__globals__["BUNDLED_DIR"] / "binanceusdm.json").read_text())
    assert set(doc) == {"exchange", "source", "notes", "markets"}
    entry, ref = doc["markets"][SYMBOL], bundled["markets"][SYMBOL]
    assert set(entry) == set(ref)
    for key in ("id", "base", "quote", "settle", "type", "linear", "inverse", "contractSize", "precision",
                "liquidationFeeRate", "tiers", "tier_history"):
        assert entry[key] == ref[key], key
    assert entry["limits"]["cost"]["min"] == 100.0
    assert any("apiKey" in n for n in res[0].notes)
    spec = load_market("binanceusdm", SYMBOL, data_dir=fast_tmp)
    assert spec.liquidation_fee_rate == 0.0125 and spec.lot_size == 0.001 and len(spec.tier_history) == 9


def test_markets_snapshot_takes_public_tiers_and_dates_a_changed_table(fast_tmp, retry):
    # the bracket table of the first bundled history entry, served in the documented
    # /fapi/v1/leverageBracket shape, as if it were today's table
    bundled = json.loads((load_market.__globals__["BUNDLED_DIR"] / "binanceusdm.json").read_text())
    old = bundled["markets"][SYMBOL]["tier_history"][0]["tiers"]
    body = [{"symbol": "BTCUSDT", "brackets": [
        {"bracket": t["tier"], "initialLeverage": t["maxLeverage"], "notionalCap": t["maxNotional"],
         "notionalFloor": t["minNotional"], "maintMarginRatio": t["maintenanceMarginRate"], "cum": t["maintAmt"]}
        for t in old]}]
    server = usdm_server(static={"/fapi/v1/leverageBracket": body})
    ex = usdm_exchange(server)
    ex.load_markets()
    ex.apiKey, ex.secret = "k", "s"  # the bracket endpoint is signed; the fake does not check it
    fetched = 1735689600000  # 2025-01-01, after the bundled history's last table
    download(ex, SYMBOL, ["markets"], root=fast_tmp, retry=retry, clock=lambda: fetched)
    entry = json.loads((fast_tmp / "markets" / "binanceusdm.json").read_text())["markets"][SYMBOL]
    assert [(t["minNotional"], t["maxNotional"], t["maintenanceMarginRate"], t["maintAmt"]) for t in entry["tiers"]] \
        == [(t["minNotional"], t["maxNotional"], t["maintenanceMarginRate"], t["maintAmt"]) for t in old]
    hist = entry["tier_history"]
    assert len(hist) == 10 and hist[-1]["from"] == fetched and hist[-1]["tiers"] == entry["tiers"]
    assert hist[:-1] == bundled["markets"][SYMBOL]["tier_history"]
    spec = load_market("binanceusdm", SYMBOL, data_dir=fast_tmp)
    assert spec.tier_history[-1][0] == fetched


def test_notes_say_where_the_exchange_had_nothing(exchange, fast_tmp, retry):
    res = download(exchange, SYMBOL, ["ohlcv"], "1h", since=START - 5 * HOUR, root=fast_tmp, limit=50,
                   retry=retry, clock=lambda: END + 10 * HOUR)
    assert res[0].rows_total == 96
    assert any("no candle before 2023-03-10T00:00:00+00:00 (asked from 2023-03-09T19:00" in n for n in res[0].notes)
    assert any("no candle after 2023-03-13T23:00:00+00:00" in n for n in res[0].notes)


def test_an_endpoint_returning_latest_rows_instead_of_paging_forward_is_refused(fast_tmp, retry, after_end):
    fx = load_fixture("binanceusdm_BTCUSDT_2023-03-10_1h.json")
    # from the second page on, the server answers with its latest rows whatever 'since' says
    server = usdm_server(fault=lambda k, c: FakeResponse(200, fx["klines"][-10:]) if k >= 2 else None)
    with pytest.raises(DownloadError, match="got a full page starting at 2023-03-13T14:00.*hole"):
        download(usdm_exchange(server), SYMBOL, ["ohlcv"], "1h", since=START, root=fast_tmp, limit=10,
                 retry=retry, clock=after_end)
    got = Store(fast_tmp).read("binanceusdm", SYMBOL, "ohlcv", "1h")
    assert got["timestamp"].tolist() == [START + k * HOUR for k in range(10)]  # the hole never reached the store


def test_markets_snapshot_skips_spot_symbols(fast_tmp, retry):
    server = FakeBinance(exchange_info=binance_info())
    ex = ccxt.binance({"session": server, "enableRateLimit": False})
    res = download(ex, ["BTC/USDT", "BTC/USD:BTC"], ["markets"], root=fast_tmp, retry=retry)
    doc = json.loads((fast_tmp / "markets" / "binance.json").read_text())
    assert list(doc["markets"]) == ["BTC/USD:BTC"]
    assert doc["markets"]["BTC/USD:BTC"]["contractSize"] == 100.0 and doc["markets"]["BTC/USD:BTC"]["inverse"]
    assert any("BTC/USDT: a spot market" in n for n in res[0].notes)


@pytest.mark.parametrize("reported", [0, None])
def test_markets_snapshot_never_invents_a_contract_size(fast_tmp, retry, reported):
    # an exchange answer without a usable contract size is refused with the key named, instead of
    # being written as 1 (which would size every order wrongly without a word)
    server = usdm_server()
    ex = usdm_exchange(server)
    ex.load_markets()
    ex.markets[SYMBOL]["contractSize"] = reported
    with pytest.raises(DownloadError, match="market snapshot is invalid.*contractSize"):
        download(ex, SYMBOL, ["markets"], root=fast_tmp, retry=retry)
    assert not (fast_tmp / "markets" / "binanceusdm.json").exists()


def test_a_funding_history_whose_interval_changed_has_no_false_head_note(fast_tmp, retry):
    # the exchange moved the symbol from 8 h to 1 h funding: asked from START, the first print is
    # 8 h later, an ordinary 8 h interval; the history's median spacing (1 h) would call it a hole
    base = load_fixture("binanceusdm_BTCUSDT_2023-03-10_1h.json")["fundingRate"][0]
    times = [START + 8 * HOUR, START + 16 * HOUR] + [START + (16 + k) * HOUR for k in range(1, 25)]
    rows = [{**base, "fundingTime": t} for t in times]
    fx = load_fixture("binanceusdm_BTCUSDT_2023-03-10_1h.json")
    server = FakeBinance(klines={("/fapi/v1/klines", "BTCUSDT", "1h"): fx["klines"]},
                         funding={("/fapi/v1/fundingRate", "BTCUSDT"): rows}, exchange_info=binance_info())
    res = download(usdm_exchange(server), SYMBOL, ["funding"], since=START, until=START + 48 * HOUR,
                   root=fast_tmp, retry=retry, clock=lambda: END)
    assert res[0].rows_total == len(times)
    assert not any("no funding print before" in n or "hole" in n for n in res[0].notes), res[0].notes
