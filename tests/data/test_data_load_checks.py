"""On real Parquet stores: a date range reaching past the stored
data, implausible funding rates and mark prices, and funding holes judged against each
print's own interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.data import DataValidationError, Store, load_market_data
from sample_kit import EX, SYM, T0, H, sample, sample_store
from backtest.data.validate import FUNDING_RATE_BOUND, MARK_PRICE_TOLERANCE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_fakes import HOUR, START, SYMBOL, usdm_exchange, usdm_server  # noqa: E402




@pytest.fixture
def store(tmp_path):
    return sample_store(tmp_path)


# --- a range partly outside the stored data ----------------------------------------------

@pytest.mark.parametrize("start, end, used", [
    ("2022-12-31T20:00", "2023-01-02", "2023-01-01T00:00:00+00:00 .. 2023-01-02T00:00:00+00:00"),
    ("2023-01-01T12:00", "2023-01-05", "2023-01-01T12:00:00+00:00 .. 2023-01-03T00:00:00+00:00"),
    ("2022-12-01", "2025-01-01", "2023-01-01T00:00:00+00:00 .. 2023-01-03T00:00:00+00:00"),
])
def test_a_range_past_the_stored_data_is_refused_or_noted(store, start, end, used):
    path = store.path(EX, SYM, "ohlcv", "1h")
    with pytest.raises(DataValidationError) as ei:
        load_market_data(EX, SYM, root=store.root, start=start, end=end)
    msg = str(ei.value)
    assert msg.startswith(str(path))
    assert "the stored bars span 2023-01-01T00:00:00+00:00 .. 2023-01-03T00:00:00+00:00" in msg
    assert "allow_partial_range=True" in msg
    md = load_market_data(EX, SYM, root=store.root, start=start, end=end, allow_partial_range=True)
    note = [n for n in md.notes if "allow_partial_range=True" in n]
    assert len(note) == 1 and f"ran on {used}" in note[0]
    assert f"requested {pd.Timestamp(start, tz='UTC').isoformat()} .. {pd.Timestamp(end, tz='UTC').isoformat()}" \
        in note[0]
    a, b = (pd.Timestamp(x) for x in used.split(" .. "))
    assert md.frame.index[0] == a and md.frame.index[-1] == b - pd.Timedelta(hours=1)


def test_a_range_inside_the_stored_data_needs_no_permission(store):
    md = load_market_data(EX, SYM, root=store.root, start="2023-01-01T05:00", end="2023-01-03")
    assert md.n == 43 and not any("range" in n for n in md.notes)
    md = load_market_data(EX, SYM, root=store.root)  # no start/end: whatever is stored
    assert md.n == 48


def test_the_runner_setting_reaches_the_loader(store, tmp_path):
    from backtest.runner.config import DataConfig
    from backtest.runner.run import load_data

    base = dict(root=str(store.root), start="2022-12-31", end="2023-01-02")
    cfg = type("C", (), {})()
    cfg.data = DataConfig(**base)
    with pytest.raises(DataValidationError, match="allow_partial_range"):
        load_data(cfg)
    cfg.data = DataConfig(**base, allow_partial_range=True)
    md = load_data(cfg)
    assert md.n == 24 and any("allow_partial_range=True" in n for n in md.notes)


# --- implausible funding ---------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.5, 50.0, -0.2, FUNDING_RATE_BOUND * 1.01])
def test_a_funding_rate_beyond_the_bound_is_an_error_unless_allowed(store, rate):
    f = sample("funding.parquet")
    f.loc[3, "funding_rate"] = rate
    store.write(f, EX, SYM, "funding")
    path = store.path(EX, SYM, "funding")
    with pytest.raises(DataValidationError) as ei:
        load_market_data(EX, SYM, root=store.root)
    assert ei.value.file == str(path) and ei.value.column == "funding_rate"
    assert ei.value.timestamp == int(f.loc[3, "timestamp"])
    assert f"rate {rate!r}" in str(ei.value) and "allow_extreme_funding=True" in str(ei.value)
    md = load_market_data(EX, SYM, root=store.root, allow_extreme_funding=True)
    assert md.frame["funding_rate"].iloc[24] == rate
    assert any("1 funding rate(s) beyond" in n and "allow_extreme_funding=True" in n for n in md.notes)


def test_rates_at_the_bound_load_without_a_note(store):
    f = sample("funding.parquet")
    f.loc[3, "funding_rate"] = -FUNDING_RATE_BOUND
    store.write(f, EX, SYM, "funding")
    md = load_market_data(EX, SYM, root=store.root)
    assert md.frame["funding_rate"].iloc[24] == -FUNDING_RATE_BOUND and not md.notes


@pytest.fixture
def binance_store(tmp_path):
    """A real download over the offline Binance transport: prints carry Binance's markPrice."""
    from backtest.data.download import download
    from backtest.data.fetch import Retry

    download(usdm_exchange(usdm_server()), SYMBOL, ["ohlcv", "mark", "funding"], "1h", since=START, root=tmp_path,
             retry=Retry(attempts=1, sleep=lambda s: None), clock=lambda: START + 96 * HOUR + 30 * 60_000)
    return Store(tmp_path)


def test_real_print_marks_lie_in_their_bar_mark_range(binance_store):
    md = load_market_data(EX, SYM, root=binance_store.root)
    assert md.funding["mark_price"].notna().all() and len(md.funding) == 12


@pytest.mark.parametrize("factor", [100_000.0, 1e-5, 1 + 2 * MARK_PRICE_TOLERANCE])
def test_a_print_mark_far_from_the_bar_mark_is_an_error(binance_store, factor):
    f = binance_store.read(EX, SYM, "funding")
    mark = binance_store.read(EX, SYM, "mark", "1h").set_index("timestamp")
    t = int(f.loc[5, "timestamp"])
    bar = t // H * H
    # far outside the range of the print's bar and the bar before it
    ref = mark.loc[bar, "high"] if factor > 1 else mark.loc[bar, "low"]
    bad = float(ref * factor)
    f.loc[5, "mark_price"] = bad
    binance_store.write(f, EX, SYM, "funding")
    with pytest.raises(DataValidationError) as ei:
        load_market_data(EX, SYM, root=binance_store.root)
    e = ei.value
    assert e.file == str(binance_store.path(EX, SYM, "funding")) and e.column == "mark_price" and e.timestamp == t
    assert f"mark price {bad!r}" in str(e) and "mark range" in str(e)


# --- funding interval changes ---------------------------------------------------------

def _interval_changes(t0):
    """Prints every 8 h for two days, then every 4 h for a day, then every hour for a day."""
    times = [t0 + h * H for h in range(0, 48, 8)] + [t0 + h * H for h in range(48, 72, 4)] \
        + [t0 + h * H for h in range(72, 96)]
    t = np.array(times, dtype=np.int64)
    iv = np.diff(t, prepend=t[0] - 8 * H) / H
    return pd.DataFrame({"timestamp": t, "funding_rate": np.full(t.size, 1e-4), "interval_hours": iv,
                         "mark_price": np.nan})


def test_an_interval_change_is_not_a_funding_hole(tmp_path):
    s = Store(tmp_path)
    s.write(sample("ohlcv-1h.parquet", 96), EX, SYM, "ohlcv", "1h")
    s.write(sample("mark-1h.parquet", 96), EX, SYM, "mark", "1h")
    s.write(_interval_changes(T0), EX, SYM, "funding")
    md = load_market_data(EX, SYM, root=tmp_path)
    assert md.notes == () and len(md.funding) == 6 + 6 + 24


@pytest.mark.parametrize("drop, hole", [
    (3, "2023-01-01T16:00..2023-01-02T08:00"),      # in the 8 h stretch
    (8, "2023-01-03T04:00..2023-01-03T12:00"),      # in the 4 h stretch
    (20, "2023-01-04T07:00..2023-01-04T09:00"),     # in the 1 h stretch
])
@pytest.mark.parametrize("derived", [False, True], ids=["exchange-intervals", "derived-intervals"])
def test_a_hole_is_judged_against_the_interval_of_its_stretch(tmp_path, drop, hole, derived):
    s = Store(tmp_path)
    s.write(sample("ohlcv-1h.parquet", 96), EX, SYM, "ohlcv", "1h")
    s.write(sample("mark-1h.parquet", 96), EX, SYM, "mark", "1h")
    f = _interval_changes(T0).drop(index=drop).reset_index(drop=True)
    if derived:  # as the downloader derives them: the hours since the previous print
        t = f["timestamp"].to_numpy()
        f["interval_hours"] = np.diff(t, prepend=t[0] - 8 * H) / H
    s.write(f, EX, SYM, "funding")
    md = load_market_data(EX, SYM, root=tmp_path)
    holes = [n for n in md.notes if "funding hole" in n]
    assert len(holes) == 1 and f"1 funding hole(s) longer than 1.5x the prints' own interval, between prints " \
        f"{hole}" in holes[0]
