"""A funding file left by an interrupted download (Bybit and OKX funding is
completed backwards, page by page; a kill leaves ``pending_from``/``pending_to`` and a verified
range that does not reach the bars) must not load as complete.

Each case is a real download over the offline v5 transports, killed at one of its funding
requests, then loaded. The loader refuses, naming the file and the command that completes
it; with ``allow_gaps=True`` it loads and lists every print that is missing; after the
download is completed, the same load gives every print with no note.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from data_fakes_v5 import LINEAR, START, HOUR, bybit_server, expected, okx_server
from test_data_bybit_okx_resume import Killed, N_CALLS, run

from backtest.data import DataValidationError, load_market_data
from backtest.data.store import Store, read_meta
from backtest.data.timeutil import iso

SERVERS = {"bybit": bybit_server, "okx": okx_server}
N_CANDLE_CALLS = 8  # 4 pages of trade candles, 4 of mark candles; then funding, first written at call 11
FUNDING_KILLS = [(ex, k) for ex in ("bybit", "okx") for k in range(N_CANDLE_CALLS + 3, N_CALLS[ex] + 1)]


def kill_at(k):
    def fault(call_no, call):
        if call_no == k:
            raise Killed
    return fault


def interrupted(exchange, root, k):
    with pytest.raises(Killed):
        run(exchange, root, SERVERS[exchange](fault=kill_at(k)))


ALL_PRINTS = expected("funding.parquet")["timestamp"].to_numpy()  # 12 prints, every 8 h


@pytest.mark.parametrize("exchange, k", FUNDING_KILLS, ids=[f"{e}-{k}" for e, k in FUNDING_KILLS])
def test_an_interrupted_funding_download_is_refused_or_lists_every_missing_print(exchange, k, fast_tmp):
    interrupted(exchange, fast_tmp, k)
    path = Store(fast_tmp).path(exchange, LINEAR, "funding")
    stored = Store(fast_tmp).read(exchange, LINEAR, "funding")["timestamp"].to_numpy()
    missing = np.setdiff1d(ALL_PRINTS, stored)
    if missing.size == 0:
        # every print is stored, the verification stopped after the last one: the unverified
        # rest of the bars holds no print at the prints' 8 h interval, and a note says so
        md = load_market_data(exchange, LINEAR, root=fast_tmp)
        np.testing.assert_array_equal(md.funding["timestamp"], ALL_PRINTS)
        cov_to = int(read_meta(path)["covered_to"])
        assert any(f"{path}: funding verified only up to {iso(cov_to)}" in n and "no print expected" in n
                   for n in md.notes)
        return
    with pytest.raises(DataValidationError) as ei:
        load_market_data(exchange, LINEAR, root=fast_tmp)
    msg = str(ei.value)
    assert msg.startswith(str(path)) and ei.value.column == "funding_rate"
    # the command that completes the file, runnable as printed
    assert f"`backtest download -e {exchange} -s {LINEAR} -k funding --since {iso(START)[:19]}Z -d {fast_tmp}`" in msg
    assert "allow_gaps=True" in msg

    md = load_market_data(exchange, LINEAR, root=fast_tmp, allow_gaps=True)
    np.testing.assert_array_equal(md.funding["timestamp"], stored)
    notes = " | ".join(md.notes)
    assert f"{len(missing)} funding print(s) missing" in notes
    # every missing print is named, and nothing else: the note lists the times exactly
    listed = re.search(r"funding print\(s\) missing \(expected at the neighbouring prints' interval\): ([^|;]*)",
                       notes).group(1)
    assert listed.strip().rstrip(")").split(", ") == [iso(int(t))[:16] for t in missing]

    run(exchange, fast_tmp, SERVERS[exchange]())  # the command the error names, over the fake transport
    assert "pending_from" not in read_meta(path)
    done = load_market_data(exchange, LINEAR, root=fast_tmp)
    np.testing.assert_array_equal(done.funding["timestamp"], ALL_PRINTS)
    assert not any("funding" in n for n in done.notes)


def test_the_okx_pending_block_of_the_issue(fast_tmp):
    # killed at OKX's 11th request: the prints 16 h .. 88 h are stored as a pending block,
    # covered_from == covered_to == the start; the prints at 0 h and 8 h are not downloaded
    interrupted("okx", fast_tmp, 11)
    meta = read_meta(Store(fast_tmp).path("okx", LINEAR, "funding"))
    assert meta["covered_from"] == meta["covered_to"] == str(START) and "pending_from" in meta
    with pytest.raises(DataValidationError, match=r"download interrupted.*2023-03-10T00:00.*2023-03-10T16:00"):
        load_market_data("okx", LINEAR, root=fast_tmp)
    md = load_market_data("okx", LINEAR, root=fast_tmp, allow_gaps=True)
    assert len(md.funding) == 10
    assert any("2 funding print(s) missing (expected at the neighbouring prints' interval): "
               "2023-03-10T00:00, 2023-03-10T08:00" in n for n in md.notes)
    # the window after the pending gap is complete: loading only that part needs no permission
    md = load_market_data("okx", LINEAR, root=fast_tmp, start=START + 16 * HOUR, end=START + 88 * HOUR)
    assert len(md.funding) == 9 and not any("funding" in n for n in md.notes)
