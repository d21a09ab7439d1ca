"""ccxt's own parsing of recorded exchange responses reproduces the recorded parsed output,
and of the constructed responses reproduces the committed sample they were built from."""

from __future__ import annotations

import ccxt
import numpy as np
import pytest
from data_fakes import END, FakeBinance, START, SYMBOL, binance_info, load_fixture, sample_window

RECORDED = load_fixture("binance.response.subset.json")["methods"]["fetchOHLCV"]
# where each recorded case is served from, and the market id/pair ccxt must send
ROUTES = {
    "Spot OHLCV with since and limit": ("/api/v3/klines", "symbol", "BTCUSDT"),
    "inverse index price": ("/dapi/v1/indexPriceKlines", "pair", "BTCUSD"),
    "swap ohlcv": ("/fapi/v1/klines", "symbol", "BTCUSDT"),
}


@pytest.mark.parametrize("case", RECORDED, ids=[c["description"] for c in RECORDED])
def test_recorded_binance_klines_parse_to_recorded_output(case):
    path, key, name = ROUTES[case["description"]]
    symbol, timeframe, since, limit, *rest = case["input"]
    server = FakeBinance(klines={(path, name, timeframe): case["httpResponse"]}, exchange_info=binance_info())
    ex = ccxt.binance({"session": server, "enableRateLimit": False})
    got = ex.fetch_ohlcv(symbol, timeframe, since, limit, *(rest or [{}]))
    assert got == case["parsedResponse"]
    sent = server.data_calls[-1]
    assert sent.path == path and sent.params[key] == name and sent.params["interval"] == timeframe
    if since is not None:
        assert int(sent.params["startTime"]) == since


def test_recorded_deribit_tradingview_ohlcv_parses_to_recorded_output():
    case = load_fixture("deribit.response.json")["methods"]["fetchOHLCV"][0]
    ex = ccxt.deribit()
    rows = ex.convert_trading_view_to_ohlcv(case["httpResponse"]["result"], "ticks", "open", "high", "low",
                                           "close", "volume", True)
    assert ex.parse_ohlcvs(rows) == case["parsedResponse"]


def test_constructed_usdm_responses_parse_to_the_sample_values(exchange):
    ref = sample_window("ohlcv-1h.parquet")
    got = np.array(exchange.fetch_ohlcv(SYMBOL, "1h", START, 1000), dtype=float)
    assert got.shape == (96, 6)
    np.testing.assert_array_equal(got, ref[["timestamp", "open", "high", "low", "close", "volume"]].to_numpy())

    mref = sample_window("mark-1h.parquet")
    mark = np.array(exchange.fetch_mark_ohlcv(SYMBOL, "1h", START, 1000), dtype=float)
    np.testing.assert_array_equal(mark[:, :5], mref[["timestamp", "open", "high", "low", "close"]].to_numpy())
    assert (mark[:, 5] == 0).all()  # Binance mark klines carry zero volume

    fref = sample_window("funding.parquet")
    fund = exchange.fetch_funding_rate_history(SYMBOL, START, 1000)
    ts = np.array([f["timestamp"] for f in fund])
    assert len(fund) == 12 and ts[-1] < END
    # raw times keep the exchange's jitter; rounded to the second they are the sample's times
    np.testing.assert_array_equal((ts + 500) // 1000 * 1000, fref["timestamp"].to_numpy())
    assert (ts != fref["timestamp"].to_numpy()).any()
    np.testing.assert_array_equal([f["fundingRate"] for f in fund], fref["funding_rate"].to_numpy())
    assert all(f["symbol"] == SYMBOL for f in fund)


def test_constructed_exchange_info_gives_the_bundled_contract_specs(exchange):
    exchange.load_markets()
    m = exchange.market(SYMBOL)
    assert (m["id"], m["type"], m["linear"], m["settle"], m["contractSize"]) == ("BTCUSDT", "swap", True, "USDT", 1.0)
    assert m["precision"]["amount"] == 0.001 and m["precision"]["price"] == 0.1
    assert m["limits"]["cost"]["min"] == 100.0
    assert m["created"] == 1569398400000
