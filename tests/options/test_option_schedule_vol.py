"""Deribit expiry calendar, EWMA realised vol, implied-vol selection and the funding carry."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest.options import InstrumentInputError, atm_vol, ewma_vol, expiry_schedule, funding_carry, last_friday
from backtest.options.schedule import validate_expiries

H = 3_600_000
D = 86_400_000


def ms(s: str) -> int:
    return int(pd.Timestamp(s, tz="UTC").value // 1_000_000)


@pytest.mark.parametrize("year, month, day", [(2022, 6, 24), (2022, 12, 30), (2023, 3, 31), (2021, 1, 29),
                                              (2021, 12, 31), (2023, 9, 29), (2024, 2, 23)])
def test_last_friday_known_dates(year, month, day):
    assert last_friday(year, month) == pd.Timestamp(year, month, day).date()


def test_monthly_schedule_known_expiries():
    exp = expiry_schedule(ms("2022-01-01"), ms("2023-12-31"), "monthly")
    for s in ("2022-06-24 08:00", "2022-12-30 08:00", "2023-03-31 08:00"):
        assert ms(s) in set(exp)
    assert len(exp) == 24
    t = pd.to_datetime(exp, unit="ms", utc=True)
    assert (t.day_of_week == 4).all() and (t.hour == 8).all() and (t.minute == 0).all()
    # the last Friday: one week later is in the next month
    assert ((t + pd.Timedelta(days=7)).month != t.month).all()


def test_quarterly_and_weekly_schedules():
    q = pd.to_datetime(expiry_schedule(ms("2022-01-01"), ms("2022-12-31"), "quarterly"), unit="ms", utc=True)
    assert [str(x.date()) for x in q] == ["2022-03-25", "2022-06-24", "2022-09-30", "2022-12-30"]
    w = expiry_schedule(ms("2022-06-01"), ms("2022-07-01"), "weekly")
    assert list(np.diff(w)) == [7 * D] * (len(w) - 1) and ms("2022-06-24 08:00") in set(w)


def test_schedule_bad_kind_and_hour():
    with pytest.raises(InstrumentInputError, match="expiry='daily'"):
        expiry_schedule(0, D * 100, "daily")
    with pytest.raises(InstrumentInputError, match="expiry_hour=25"):
        expiry_schedule(0, D * 100, "monthly", hour=25)


def test_validate_expiries_errors():
    with pytest.raises(InstrumentInputError, match="before the data start"):
        validate_expiries([ms("2020-12-25 08:00"), ms("2021-01-29 08:00")], ms("2021-01-01"))
    with pytest.raises(InstrumentInputError, match="not strictly increasing"):
        validate_expiries([ms("2021-02-26 08:00"), ms("2021-01-29 08:00")], ms("2021-01-01"))
    got = validate_expiries(pd.DatetimeIndex(["2021-01-29 08:00"], tz="UTC"), ms("2021-01-01"))
    assert got.tolist() == [ms("2021-01-29 08:00")]


def test_ewma_matches_explicit_weighted_average():
    rng = np.random.default_rng(3)
    p = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 200)))
    bar = D
    lam = 0.9  # warm-up ceil(1/0.1) = 10 days
    got = ewma_vol(p, bar, lam)
    r = np.diff(np.log(p))
    for i in (10, 57, 199):
        x = r[:i][::-1] ** 2                       # newest first
        w = lam ** np.arange(i)
        assert got[i] == pytest.approx(math.sqrt(np.sum(w * x) / np.sum(w) * 365), rel=1e-12)
    assert np.isnan(got[:10]).all() and np.isfinite(got[10:]).all()


def test_ewma_annualisation_and_bar_size():
    # alternating +-x log returns: every EWMA of r^2 equals x^2 exactly
    x = 0.01
    p = 100 * np.exp(np.cumsum(np.r_[0, np.tile([x, -x], 600)]))
    hourly = ewma_vol(p, H, 0.94)
    assert np.nanmax(np.abs(hourly / (x * math.sqrt(365 * 24)) - 1)) < 1e-12
    daily = ewma_vol(p, D, 0.94)
    assert np.nanmax(np.abs(daily / (x * math.sqrt(365)) - 1)) < 1e-12
    # warm-up: 17 days of bars (1/(1-0.94) = 16.7)
    assert np.isnan(hourly[: 17 * 24]).all() and np.isfinite(hourly[17 * 24])


def test_ewma_bad_lambda():
    with pytest.raises(InstrumentInputError, match="ewma_lambda=1.0"):
        ewma_vol(np.ones(10), D, 1.0)


def test_atm_vol_auto_uses_iv_then_ewma_with_staleness_limit():
    n = 24 * 40
    x = 0.005
    p = (100 * np.exp(np.cumsum(np.r_[0, np.tile([x, -x], n // 2)])))[:n][:, None]
    iv = np.full((n, 1), np.nan)
    iv[500:600] = 0.7
    v, from_iv = atm_vol(iv, p, H, "auto", 0.94, 1.25, 10.0)
    rv = x * math.sqrt(365 * 24) * 1.25
    assert v[550, 0] == 0.7 and from_iv[550, 0]
    assert v[609, 0] == 0.7 and from_iv[609, 0]            # carried 10 hours
    assert v[610, 0] == pytest.approx(rv, rel=1e-12) and not from_iv[610, 0]
    assert v[450, 0] == pytest.approx(rv, rel=1e-12)
    only_iv, _ = atm_vol(iv, p, H, "iv", 0.94, 1.25, 10.0)
    assert np.isnan(only_iv[450, 0]) and np.isnan(only_iv[610, 0]) and only_iv[609, 0] == 0.7
    ew, f = atm_vol(iv, p, H, "ewma", 0.94, 1.0, 10.0)
    assert ew[550, 0] == pytest.approx(x * math.sqrt(365 * 24), rel=1e-12) and not f.any()


def test_atm_vol_errors():
    p = np.ones((10, 1))
    with pytest.raises(InstrumentInputError, match="vol_source='iv' but the data has no implied-vol"):
        atm_vol(None, p, H, "iv", 0.94, 1.1, 72)
    with pytest.raises(InstrumentInputError, match="vrp=0"):
        atm_vol(None, p, H, "ewma", 0.94, 0, 72)


def test_funding_carry_annualises_prints():
    n = 24 * 30
    fr = np.full((n, 1), np.nan)
    fr[::8] = 0.0001  # 8-hourly prints
    c = funding_carry(fr, H, 7.0, 1.0)
    assert c[-1, 0] == pytest.approx(0.0001 * 3 * 365, rel=1e-12)
    assert c[0, 0] == pytest.approx(0.0001 / (7 / 365), rel=1e-12)  # one print so far in the window
    assert funding_carry(fr * 1000, H, 7.0, 0.5)[-1, 0] == 0.5   # clipped
    with pytest.raises(InstrumentInputError, match="carry_from_funding=True but the data has no funding_rate"):
        funding_carry(None, H, 7.0, 1.0)
