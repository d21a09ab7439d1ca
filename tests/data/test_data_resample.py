"""resample against pandas' own epoch-aligned resampling, plus its refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.data import ResampleError, load_market_data, resample
from backtest.data.store import SAMPLE_ROOT

EX, SYM = "binanceusdm", "BTC/USDT:USDT"
H = 3_600_000


@pytest.fixture(scope="module")
def md():
    return load_market_data(EX, SYM, root=SAMPLE_ROOT, iv=("deribit", "BTC-DVOL"), start="2021-03-01",
                            end="2022-03-01")


def pandas_reference(frame, rule):
    agg = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
           "mark_open": "first", "mark_high": "max", "mark_low": "min", "mark_close": "last"}
    r = frame.resample(rule, origin="epoch", label="left", closed="left")
    out = r.agg(agg)
    out["funding_rate"] = r["funding_rate"].sum(min_count=1)
    out["funding_interval_hours"] = r["funding_interval_hours"].sum(min_count=1)
    return out


# rules in hours: pandas ignores origin="epoch" for Day rules on tz-aware data
@pytest.mark.parametrize("tf, rule", [("4h", "4h"), ("8h", "8h"), ("1d", "24h"), ("1w", "168h")])
def test_matches_pandas_epoch_resampling(md, tf, rule):
    out = resample(md, tf)
    ref = pandas_reference(md.frame, rule)
    step = pd.Timedelta(rule)
    n_sub = step // pd.Timedelta("1h")
    counts = md.frame["close"].resample(rule, origin="epoch").count()
    ref = ref[counts == n_sub]  # resample keeps complete bars only
    assert out.timeframe == tf and out.bar_ms == n_sub * H
    pd.testing.assert_index_equal(out.frame.index, ref.index.rename("time"), check_freq=False)
    for c in ref.columns:
        np.testing.assert_allclose(out.frame[c].to_numpy(), ref[c].to_numpy(), rtol=1e-12, err_msg=c)
    # iv: the value of the last hour of each bar (as of the bar's close), NaN kept
    last_hour = md.frame["iv"].reindex(out.frame.index + step - pd.Timedelta("1h")).to_numpy()
    np.testing.assert_array_equal(out.frame["iv"].to_numpy(), last_hour)
    assert len(out.fingerprint) == 64 and out.fingerprint != md.fingerprint


def test_weekly_bars_start_on_thursday_epoch_alignment(md):
    out = resample(md, "1w")
    assert (out.frame.index.day_of_week == 3).all()  # 1970-01-01 was a Thursday
    assert any("dropped" in n and "incomplete" in n for n in out.notes)


def test_two_routes_to_4h_agree(md):
    direct = load_market_data(EX, SYM, "4h", root=SAMPLE_ROOT, iv=("deribit", "BTC-DVOL"), start="2021-03-01",
                              end="2022-03-01")
    via = resample(md, "4h")
    pd.testing.assert_frame_equal(direct.frame, via.frame)
    pd.testing.assert_frame_equal(direct.funding, via.funding)
    assert direct.fingerprint == via.fingerprint


def test_incomplete_edge_bars_are_dropped():
    idx = pd.date_range("2023-01-01 02:00", "2023-01-01 21:00", freq="1h", tz="UTC", name="time")
    f = pd.DataFrame({"open": np.arange(20.0) + 1, "high": np.arange(20.0) + 2, "low": np.arange(20.0) + 0.5,
                      "close": np.arange(20.0) + 1.5, "volume": 1.0}, index=idx)
    out = resample(f, "4h")
    assert list(out.index.hour) == [4, 8, 12, 16]
    assert out["open"].tolist() == [3.0, 7.0, 11.0, 15.0] and out["volume"].tolist() == [4.0] * 4
    assert out["high"].tolist() == [7.0, 11.0, 15.0, 19.0] and out["close"].tolist() == [6.5, 10.5, 14.5, 18.5]


def test_interior_gap_bars_are_kept_and_reported(md):
    frame = md.frame.drop(md.frame.index[5:7])
    gappy = md.replace(frame=frame)
    out = resample(gappy, "4h")
    assert any("built from incomplete data" in n for n in out.notes)
    bar = out.frame.loc[md.frame.index[4]]  # the 04:00 bar lost its 05:00 and 06:00 hours
    assert bar["volume"] == md.frame["volume"].iloc[[4, 7]].sum()


@pytest.mark.parametrize("tf, match", [
    ("30m", "finer"), ("90m", "not a whole multiple"), ("1M", "calendar"), ("2x", "not a ccxt timeframe"),
])
def test_refusals(md, tf, match):
    with pytest.raises((ResampleError, ValueError), match=match):
        resample(md, tf)


def test_unknown_column_and_misaligned_bars_are_refused():
    idx = pd.date_range("2023-01-01 00:30", periods=12, freq="1h", tz="UTC")
    f = pd.DataFrame({"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0}, index=idx)
    with pytest.raises(ResampleError, match="straddles"):
        resample(f, "4h")
    g = pd.DataFrame({"close": 1.0, "signal": 0.0}, index=idx - pd.Timedelta("30min"))
    with pytest.raises(ResampleError, match="column 'signal'"):
        resample(g, "4h")
    with pytest.raises(ResampleError, match="DatetimeIndex"):
        resample(g.reset_index(drop=True), "4h")


def test_same_timeframe_is_a_no_op(md):
    assert resample(md, "1h") is md
