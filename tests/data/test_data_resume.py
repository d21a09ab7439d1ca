"""A run killed at any page (in the request or in the write) leaves a valid store, and the next
run completes it to exactly the uninterrupted result, without fetching stored pages again."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from data_fakes import HOUR, START, SYMBOL, usdm_exchange, usdm_server

from backtest.data.download import download
from backtest.data.fetch import Retry
from backtest.data.store import Store, read_meta

KINDS = ["ohlcv", "mark", "funding"]
CLOCK = START + 96 * HOUR + 30 * 60_000
LIMIT = 24  # 96 candles -> 4 pages per candle kind; 12 prints -> 1 page + 1 empty page
N_CALLS = 4 + 4 + 2


class Killed(BaseException):
    """Stands for the process being killed: not an Exception, so nothing may swallow it."""


def run(root, server, limit):
    return download(usdm_exchange(server), SYMBOL, KINDS, "1h", since=START, root=root, limit=limit,
                    retry=Retry(attempts=2, sleep=lambda s: None), clock=lambda: CLOCK)


def snapshot(root):
    store = Store(root)
    out = {}
    for kind, tf in (("ohlcv", "1h"), ("mark", "1h"), ("funding", None)):
        path = store.path("binanceusdm", SYMBOL, kind, tf)
        meta = read_meta(path)
        out[kind] = (store.read("binanceusdm", SYMBOL, kind, tf),
                     (meta["covered_from"], meta["covered_to"], meta["symbol"]))
    return out


def assert_valid(root):
    """Every file present is readable, sorted, de-duplicated and gap-free."""
    store = Store(root)
    for kind, tf in (("ohlcv", "1h"), ("mark", "1h"), ("funding", None)):
        if not store.exists("binanceusdm", SYMBOL, kind, tf):
            continue
        ts = store.read("binanceusdm", SYMBOL, kind, tf)["timestamp"].to_numpy()
        assert ts[0] == (START if kind != "funding" else START)
        d = np.diff(ts)
        if kind == "funding":
            assert ((d > 8 * HOUR - 10) & (d < 8 * HOUR + 10)).all()
        else:
            assert (d == HOUR).all()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    server = usdm_server()
    real, writes = os.replace, []
    os.replace = lambda src, dst: (writes.append(dst), real(src, dst))[1]
    try:
        run(root, server, LIMIT)
    finally:
        os.replace = real
    return snapshot(root), len(server.data_calls), len(writes)


def test_reference_run_shape(reference):
    ref, n_calls, n_writes = reference
    # the empty funding page proves that nothing follows the last print
    assert n_calls == N_CALLS
    # one atomic write per non-empty page, plus funding's verified end after the empty page
    assert n_writes == 4 + 4 + 1 + 1
    assert len(ref["ohlcv"][0]) == 96 and len(ref["funding"][0]) == 12


@pytest.mark.parametrize("k", range(1, N_CALLS + 1))
def test_killed_at_request_k_then_resumed(fast_tmp, reference, k):
    ref, n_calls, _ = reference

    def kill(call_no, call):
        if call_no == k:
            raise Killed
    first = usdm_server(fault=kill)
    with pytest.raises(Killed):
        run(fast_tmp, first, LIMIT)
    assert_valid(fast_tmp)
    second = usdm_server()
    run(fast_tmp, second, LIMIT)
    for kind in KINDS:
        pd.testing.assert_frame_equal(snapshot(fast_tmp)[kind][0], ref[kind][0])
        assert snapshot(fast_tmp)[kind][1] == ref[kind][1]
    # nothing fetched twice: the completed calls of the first run plus the second run's calls
    # make exactly the uninterrupted run
    assert (k - 1) + len(second.data_calls) == n_calls


def test_killed_in_the_write_of_page_k_then_resumed(fast_tmp, reference, monkeypatch):
    ref, _, n_writes = reference
    real = os.replace
    for k in range(1, n_writes + 1):
        root = fast_tmp / f"k{k}"
        count = {"n": 0}

        def crash_on_k(src, dst):
            count["n"] += 1
            if count["n"] == k:
                raise Killed
            return real(src, dst)
        monkeypatch.setattr(os, "replace", crash_on_k)
        with pytest.raises(Killed):
            run(root, usdm_server(), LIMIT)
        monkeypatch.setattr(os, "replace", real)
        assert_valid(root)
        assert not any(p.name.endswith(".tmp") for p in root.rglob("*"))
        run(root, usdm_server(), LIMIT)
        snap = snapshot(root)
        for kind in KINDS:
            pd.testing.assert_frame_equal(snap[kind][0], ref[kind][0])
            assert snap[kind][1] == ref[kind][1]
