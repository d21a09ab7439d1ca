"""Bybit and OKX downloads killed at any request, or inside any file write, resume to exactly
the uninterrupted result, including inside a funding gap closed backwards (the pending block)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from data_fakes_v5 import END, HOUR, LINEAR, START, bybit_server, expected, make_exchange, okx_server

from backtest.data.download import download
from backtest.data.fetch import Retry
from backtest.data.store import Store, read_meta

CLOCK = END + 30 * 60_000
KINDS = (("ohlcv", "1h"), ("mark", "1h"), ("funding", None))
SERVERS = {"bybit": bybit_server, "okx": okx_server}


class Killed(BaseException):
    """Stands for the process being killed: not an Exception, so nothing may swallow it."""


def run(exchange: str, root, server) -> None:
    """Candles in pages of 24 (4 pages a kind), then funding in pages of 5 (gaps closed backwards)."""
    ex = make_exchange(exchange, server)
    retry = Retry(attempts=2, sleep=lambda s: None)
    download(ex, LINEAR, ["ohlcv", "mark"], "1h", since=START, root=root, limit=24, retry=retry, clock=lambda: CLOCK)
    download(ex, LINEAR, ["funding"], since=START, root=root, limit=5, retry=retry, clock=lambda: CLOCK)


def snapshot(exchange: str, root) -> dict:
    store = Store(root)
    out = {}
    for kind, tf in KINDS:
        meta = read_meta(store.path(exchange, LINEAR, kind, tf))
        out[kind] = (store.read(exchange, LINEAR, kind, tf),
                     {k: meta.get(k) for k in ("covered_from", "covered_to", "pending_from", "pending_to")})
    return out


def assert_valid(exchange: str, root) -> None:
    """Every file present is readable, sorted and de-duplicated; candles have no gap."""
    store = Store(root)
    for kind, tf in KINDS:
        if not store.exists(exchange, LINEAR, kind, tf):
            continue
        ts = store.read(exchange, LINEAR, kind, tf)["timestamp"].to_numpy()
        assert (np.diff(ts) > 0).all()
        if kind != "funding":
            assert ts[0] == START and (np.diff(ts) == HOUR).all()


def opens_gap(calls, i: int) -> bool:
    """Call i asks again for the lower bound of the forward page just before it: the page that
    revealed a gap is stored together with the gap's first page, so a kill here loses it."""
    key = lambda c: (c.path, c.params.get("startTime", c.params.get("before")))  # noqa: E731
    if i == 0 or key(calls[i]) != key(calls[i - 1]) or "funding" not in calls[i].path:
        return False
    return i < 2 or key(calls[i - 1]) != key(calls[i - 2])


_REFERENCE: dict[str, tuple] = {}


def reference(exchange: str, tmp_path_factory):
    if exchange not in _REFERENCE:
        root = tmp_path_factory.mktemp(f"ref-{exchange}")
        server = SERVERS[exchange]()
        real, writes = os.replace, []
        os.replace = lambda src, dst: (writes.append(dst), real(src, dst))[1]
        try:
            run(exchange, root, server)
        finally:
            os.replace = real
        _REFERENCE[exchange] = (snapshot(exchange, root), server.data_calls, len(writes))
    return _REFERENCE[exchange]


N_CALLS = {"bybit": 4 + 4 + 7, "okx": 4 + 4 + 5}
PARAMS = [(ex, k) for ex in ("bybit", "okx") for k in range(1, N_CALLS[ex] + 1)]


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
def test_reference_run_equals_the_sample(exchange, tmp_path_factory):
    ref, calls, n_writes = reference(exchange, tmp_path_factory)
    assert len(calls) == N_CALLS[exchange]
    pd.testing.assert_frame_equal(ref["ohlcv"][0], expected("ohlcv-1h.parquet"))
    pd.testing.assert_frame_equal(ref["mark"][0], expected("mark-1h.parquet"))
    np.testing.assert_array_equal(ref["funding"][0]["timestamp"], expected("funding.parquet")["timestamp"])
    assert ref["funding"][1] == {"covered_from": str(START), "covered_to": str(CLOCK),
                                 "pending_from": None, "pending_to": None}
    assert n_writes > 8


@pytest.mark.parametrize("exchange, k", PARAMS, ids=[f"{e}-{k}" for e, k in PARAMS])
def test_killed_at_request_k_then_resumed(exchange, k, fast_tmp, tmp_path_factory):
    ref, calls, _ = reference(exchange, tmp_path_factory)

    def kill(call_no, call):
        if call_no == k:
            raise Killed
    with pytest.raises(Killed):
        run(exchange, fast_tmp, SERVERS[exchange](fault=kill))
    assert_valid(exchange, fast_tmp)
    second = SERVERS[exchange]()
    run(exchange, fast_tmp, second)
    snap = snapshot(exchange, fast_tmp)
    for kind, _ in KINDS:
        pd.testing.assert_frame_equal(snap[kind][0], ref[kind][0])
        assert snap[kind][1] == ref[kind][1]
    # nothing fetched twice, except the page that revealed a gap when the kill hit the gap's
    # first request (that page is stored together with the gap's first page)
    assert (k - 1) + len(second.data_calls) == len(calls) + opens_gap(calls, k - 1)


def test_a_kill_inside_a_gap_leaves_a_pending_block_that_the_next_run_resumes(fast_tmp):
    # OKX funding: requests 9 (latest prints), 10 (after=56 h), 11 (after=16 h); kill at 11
    with pytest.raises(Killed):
        run("okx", fast_tmp, okx_server(fault=lambda n, c: (_ for _ in ()).throw(Killed) if n == 11 else None))
    path = Store(fast_tmp).path("okx", LINEAR, "funding")
    meta = read_meta(path)
    assert (int(meta["covered_to"]), int(meta["pending_from"]), int(meta["pending_to"])) == (
        START, START + 16 * HOUR, START + 88 * HOUR + 1)
    f = Store(fast_tmp).read("okx", LINEAR, "funding")
    assert f["timestamp"].tolist() == [START + h * HOUR for h in range(16, 89, 8)]
    second = okx_server()
    run("okx", fast_tmp, second)
    # the gap [0, 16 h) first, bounded by after = 16 h; then forward from the block's end
    assert [(c.params["before"], c.params.get("after")) for c in second.data_calls] == [
        (str(START - 1), str(START + 16 * HOUR)), (str(START + 88 * HOUR), None), (str(START + 93 * HOUR), None)]
    f = Store(fast_tmp).read("okx", LINEAR, "funding")
    np.testing.assert_array_equal(f["timestamp"], expected("funding.parquet")["timestamp"])
    np.testing.assert_array_equal(f["interval_hours"], np.full(12, 8.0))
    assert "pending_from" not in read_meta(path)


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
def test_killed_in_the_write_of_page_k_then_resumed(exchange, fast_tmp, tmp_path_factory, monkeypatch):
    ref, _, n_writes = reference(exchange, tmp_path_factory)
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
            run(exchange, root, SERVERS[exchange]())
        monkeypatch.setattr(os, "replace", real)
        assert_valid(exchange, root)
        assert not any(p.name.endswith(".tmp") for p in root.rglob("*"))
        run(exchange, root, SERVERS[exchange]())
        snap = snapshot(exchange, root)
        for kind, _ in KINDS:
            pd.testing.assert_frame_equal(snap[kind][0], ref[kind][0])
            assert snap[kind][1] == ref[kind][1]
