"""Shocks: small frozen descriptions of one stress event, applied consistently to the trade
candles, the mark candles and the funding prints of a :class:`~backtest.data.marketdata.MarketData`
(or to the market spec, or to the account settings).

Every shock has the three methods of :class:`Shock`; each returns its input unchanged when the
shock does not touch it, and a shock of zero size returns its input itself (bit for bit). Every
shocked dataset passes the validation real data passes
(:func:`backtest.stress.common.check_market_data`); one that would not raises a
:class:`~backtest.stress.common.ShockError` naming the shock. Times are bar open times (ISO text
or ms UTC); sizes are fractions (``-0.2`` = -20 %).

What no shock changes: volume, implied volatility (``iv``), bar times, the funding schedule
(prints are replaced, never added or moved, except by :class:`~backtest.stress.transplant.PathTransplant`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData
from backtest.data.timeutil import iso
from backtest.engine.settings import Account, SettingsError, account_arrays
from backtest.market import TIER_CUM, TIER_MAXLEV, TIER_MIN, TIER_MMR, MarketSpec, MarketSpecError, TierTable
from backtest.mechanics import maintenance_amounts
from backtest.stress.common import (
    MARK, MS_PER_DAY, PRICES, TRADE, ShockError, bar_at, check_market_data, check_number, parse_instant,
    print_bars, refund_frame, span_of, with_data,
)


class Shock:
    """A stress event. Subclasses override what they change; the rest is the identity."""

    def apply(self, md: MarketData) -> MarketData:
        """The market data under the shock (the input itself when the shock leaves data alone)."""
        return md

    def apply_spec(self, spec: MarketSpec) -> MarketSpec:
        """The market spec under the shock (the input itself when unchanged)."""
        return spec

    def apply_account(self, account: Account) -> Account:
        """The account settings under the shock (the input itself when unchanged)."""
        return account

    def _finish(self, md: MarketData, frame: pd.DataFrame, funding: pd.DataFrame) -> MarketData:
        out = with_data(md, frame, funding, f"stress shock: {self!r}")
        return check_market_data(out, what=repr(self), base=md)


def apply_shocks(shocks: Iterable[Shock], md: MarketData, spec: MarketSpec | None = None,
                 account: Account | None = None) -> tuple[MarketData, MarketSpec | None, Account | None]:
    """Apply shocks in order to the data, the spec and the account (None stays None).

    Returns
    -------
    (market data, market spec, account) under every shock.
    """
    for s in shocks:
        if not isinstance(s, Shock):
            raise ShockError(f"{s!r} is not a shock; give Gap, VolatilityShock, FundingSpike, MarkWick, "
                             "TierChange, SlippageShock or PathTransplant objects")
        md = s.apply(md)
        spec = s.apply_spec(spec) if spec is not None else None
        account = s.apply_account(account) if account is not None else None
    return md, spec, account


def _scaled(frame: pd.DataFrame, cols: tuple[str, ...], start: int, factor: float) -> None:
    """Multiply ``frame[cols]`` from row ``start`` on by ``factor`` (in place, new arrays)."""
    for c in cols:
        v = frame[c].to_numpy(dtype=np.float64, copy=True)
        v[start:] *= factor
        frame[c] = v


@dataclass(frozen=True)
class Gap(Shock):
    """A price gap of ``size`` (a fraction: ``-0.2`` = -20 %) at the open of the bar opening at ``at``.

    Changes: trade and mark open/high/low/close of that bar and of every later bar, multiplied by
    ``1 + size`` (the gap bar's open jumps from the previous close; returns after it are
    unchanged); the ``mark_price`` of every funding print in those bars, likewise. Funding rates,
    volume and earlier bars are unchanged.
    """

    at: Any
    size: float

    def __post_init__(self) -> None:
        parse_instant(self.at, "Gap.at")
        check_number(self.size, "Gap.size", lo=-1.0, lo_open=True,
                     fix="give a fraction above -1 (-0.2 = a 20 % drop, 0.1 = a 10 % jump)")

    def apply(self, md: MarketData) -> MarketData:
        k = bar_at(md, parse_instant(self.at, "Gap.at"), "Gap.at")
        if self.size == 0:
            return md
        f = 1.0 + float(self.size)
        frame = md.frame.copy()
        _scaled(frame, PRICES, k, f)
        fund = md.funding.copy()
        later = print_bars(md) >= k
        fund["mark_price"] = np.where(later, fund["mark_price"].to_numpy(dtype=np.float64) * f,
                                      fund["mark_price"].to_numpy(dtype=np.float64))
        return self._finish(md, frame, fund)


@dataclass(frozen=True)
class VolatilityShock(Shock):
    """Volatility multiplied by ``multiplier`` over the bars opening in ``[start, end)``.

    Changes, for the trade candles with level ``L`` = the trade open of the span's first bar:
    every open/high/low/close ``p`` in the span becomes ``L * (p / L) ** multiplier`` (the log
    distance from the level scaled; increasing in ``p``, so OHLC relations hold), and every later
    price is multiplied by ``close'/close`` of the span's last bar (continued from the shocked
    level, later returns unchanged). The mark candles likewise with their own level (the mark open
    of the first bar) and factor, and each funding print's ``mark_price`` as the mark of its bar.
    The trade-mark basis inside the span is scaled like every other log distance. Funding rates
    and volume are unchanged.
    """

    start: Any
    end: Any
    multiplier: float

    def __post_init__(self) -> None:
        a, b = parse_instant(self.start, "VolatilityShock.start"), parse_instant(self.end, "VolatilityShock.end")
        if b <= a:
            raise ShockError(f"VolatilityShock: end {iso(b)} is not after start {iso(a)}; give a later end")
        check_number(self.multiplier, "VolatilityShock.multiplier", lo=0.0, lo_open=True,
                     fix="give a factor > 0 (2 doubles the log moves, 1 changes nothing)")

    def apply(self, md: MarketData) -> MarketData:
        i0, i1 = span_of(md, parse_instant(self.start, "VolatilityShock.start"),
                         parse_instant(self.end, "VolatilityShock.end"), "VolatilityShock")
        if self.multiplier == 1:
            return md  # x ** 1 through a level is not bit-exact: the identity is returned as is
        m = float(self.multiplier)
        frame = md.frame.copy()
        factors = {}
        for cols, level_col in ((TRADE, "open"), (MARK, "mark_open")):
            level = float(md.frame[level_col].iloc[i0])
            for c in cols:
                v = frame[c].to_numpy(dtype=np.float64, copy=True)
                v[i0:i1] = level * (v[i0:i1] / level) ** m
                frame[c] = v
            close = cols[3]
            g = float(frame[close].iloc[i1 - 1]) / float(md.frame[close].iloc[i1 - 1])
            _scaled(frame, cols, i1, g)
            factors[level_col] = (level, g)
        fund = md.funding.copy()
        bars = print_bars(md)
        mp = fund["mark_price"].to_numpy(dtype=np.float64, copy=True)
        level, g = factors["mark_open"]
        inside = (bars >= i0) & (bars < i1)
        mp[inside] = level * (mp[inside] / level) ** m
        mp[bars >= i1] *= g
        fund["mark_price"] = mp
        return self._finish(md, frame, fund)


@dataclass(frozen=True)
class FundingSpike(Shock):
    """Funding at ``rate`` per interval (a fraction: 0.003 = 0.3 %) for ``days`` days from ``start``.

    Changes: the ``funding_rate`` of every print whose time (rounded to the second) lies in
    ``[start, start + days)`` is replaced by ``rate``, and the frame's per-bar ``funding_rate`` of
    their bars is rebuilt from the prints. The prints' times, intervals and marks, the prices and
    every other print are unchanged (the schedule stays the exchange's). ``days = 0`` changes
    nothing; a span with no print, or reaching past the data, is refused.
    """

    start: Any
    days: float
    rate: float

    def __post_init__(self) -> None:
        parse_instant(self.start, "FundingSpike.start")
        check_number(self.days, "FundingSpike.days", lo=0.0, fix="give a duration in days >= 0")
        check_number(self.rate, "FundingSpike.rate",
                     fix="give the rate per funding interval as a fraction (0.003 = 0.3 %)")

    def apply(self, md: MarketData) -> MarketData:
        start = parse_instant(self.start, "FundingSpike.start")
        if self.days == 0:
            return md
        end = start + int(round(float(self.days) * MS_PER_DAY))
        span_of(md, start, end, "FundingSpike")
        t = (md.funding["timestamp"].to_numpy(dtype=np.int64) + 500) // 1000 * 1000
        hit = (t >= start) & (t < end)
        if not hit.any():
            raise ShockError(f"{self!r}: no funding print between {iso(start)} and {iso(end)}, so the spike would "
                             "change nothing; choose a span holding funding times")
        fund = md.funding.copy()
        rate = fund["funding_rate"].to_numpy(dtype=np.float64, copy=True)
        rate[hit] = float(self.rate)
        fund["funding_rate"] = rate
        frame = md.frame.copy()
        bars = np.zeros(md.n, dtype=bool)
        bars[print_bars(md)[hit]] = True
        refund_frame(frame, md.timestamps, md.bar_ms, fund, bars)
        return self._finish(md, frame, fund)


@dataclass(frozen=True)
class MarkWick(Shock):
    """The mark price diverging from the trade price by ``size`` on the bar opening at ``at``.

    Changes that bar only: ``size > 0`` sets ``mark_high = max(mark_high, high * (1 + size))``
    (a mark wick above the trade high: what liquidates a short), ``size < 0`` sets
    ``mark_low = min(mark_low, low * (1 + size))``. The mark open and close, the trade candle and
    the funding prints are unchanged; ``size = 0`` changes nothing.
    """

    at: Any
    size: float

    def __post_init__(self) -> None:
        parse_instant(self.at, "MarkWick.at")
        check_number(self.size, "MarkWick.size", lo=-1.0, lo_open=True,
                     fix="give a fraction above -1 (0.05: mark high 5 % above the trade high)")

    def apply(self, md: MarketData) -> MarketData:
        k = bar_at(md, parse_instant(self.at, "MarkWick.at"), "MarkWick.at")
        if self.size == 0:
            return md
        frame = md.frame.copy()
        col, trade, pick = ("mark_high", "high", max) if self.size > 0 else ("mark_low", "low", min)
        v = frame[col].to_numpy(dtype=np.float64, copy=True)
        v[k] = pick(v[k], float(md.frame[trade].iloc[k]) * (1.0 + float(self.size)))
        frame[col] = v
        return self._finish(md, frame, md.funding.copy())


def _changed_table(table: TierTable, max_leverage: float, maintenance_scale: float, what: str) -> TierTable:
    """A tier table with every maximum leverage capped at ``max_leverage`` and every maintenance
    rate times ``maintenance_scale``; maintenance amounts re-derived with Binance's recursion
    (:func:`backtest.mechanics.maintenance_amounts`), so the margin stays continuous and every
    bracket's maintenance margin is scaled by ``maintenance_scale``."""
    rows = table.rows.copy()
    rows[:, TIER_MAXLEV] = np.minimum(rows[:, TIER_MAXLEV], max_leverage)
    rows[:, TIER_MMR] *= maintenance_scale
    rows[:, TIER_CUM] = maintenance_amounts(rows[:, TIER_MIN], rows[:, TIER_MMR])
    # a tier whose maintenance rate reaches its initial rate 1/maxLeverage liquidates a position
    # at that leverage as it opens: the exchange cannot have it (MarketSpec refuses it too)
    bad = rows[:, TIER_MMR] * rows[:, TIER_MAXLEV] >= 1.0
    if bad.any():
        i = int(np.argmax(bad))
        limit = float(np.min(1.0 / (table.rows[:, TIER_MMR] * rows[:, TIER_MAXLEV])))
        raise ShockError(
            f"{what}: tier {i + 1}'s maintenance rate {rows[i, TIER_MMR]:g} reaches its initial rate "
            f"1/{rows[i, TIER_MAXLEV]:g}; with this leverage cap choose maintenance_scale below {limit:.6g} "
            "(or a lower max_leverage)")
    return TierTable(rows)


@dataclass(frozen=True)
class TierChange(Shock):
    """The exchange changes its tiers from ``at`` on: every tier's maximum leverage capped at
    ``max_leverage`` (None: unchanged) and every maintenance rate times ``maintenance_scale``
    (>= 1: raised).

    Changes the market spec only (the data is unchanged): a new entry in its tier history from
    ``at``, the table in force at ``at`` changed (maintenance amounts re-derived, so the
    maintenance margin stays continuous and every bracket's margin is ``maintenance_scale``
    times the old); later tables of the history are changed too (the change persists), and the
    current table ``tiers`` with them. Bars before ``at`` keep their tables. ``max_leverage=None``
    with ``maintenance_scale=1`` changes nothing. A table the exchange could not have (a rate at
    or above ``1/maxLeverage``; Binance's tables sit at half of it at every tier, down to the
    last 1x tier at 50 %, so their scales stay below 2) is refused naming the shock and the
    largest scale allowed.
    An account whose leverage setting exceeds the new cap is refused by the engine.
    """

    at: Any
    max_leverage: float | None = None
    maintenance_scale: float = 1.0

    def __post_init__(self) -> None:
        parse_instant(self.at, "TierChange.at")
        if self.max_leverage is not None:
            check_number(self.max_leverage, "TierChange.max_leverage", lo=1.0,
                         fix="give the new largest leverage of any tier, >= 1 (None: unchanged)")
        check_number(self.maintenance_scale, "TierChange.maintenance_scale", lo=1.0,
                     fix="give a factor >= 1 (1.5 raises every maintenance rate by half)")

    def apply_spec(self, spec: MarketSpec) -> MarketSpec:
        at = parse_instant(self.at, "TierChange.at")
        if self.max_leverage is None and self.maintenance_scale == 1:
            return spec
        cap = np.inf if self.max_leverage is None else float(self.max_leverage)
        k = float(self.maintenance_scale)
        history = list(spec.tier_history) or [(0, spec.tiers)]
        in_force = [t for s, t in history if s <= at]
        base = in_force[-1] if in_force else history[0][1]  # the first table also rules before its start
        new = [(s, t) for s, t in history if s < at] + [(at, _changed_table(base, cap, k, repr(self)))]
        new += [(s, _changed_table(t, cap, k, repr(self))) for s, t in history if s > at]
        try:
            return spec.replace(tier_history=tuple(new), tiers=new[-1][1])
        except MarketSpecError as exc:
            raise ShockError(f"{self!r} gives tiers the exchange could not have: {exc}") from None


@dataclass(frozen=True)
class SlippageShock(Shock):
    """Slippage multiplied by ``multiplier``: a change of the account setting
    ``Account.slippage`` (per column when it is a list). The data and spec are unchanged; a
    multiplier of 1 changes nothing."""

    multiplier: float

    def __post_init__(self) -> None:
        check_number(self.multiplier, "SlippageShock.multiplier", lo=0.0, fix="give a factor >= 0")

    def apply_account(self, account: Account) -> Account:
        if self.multiplier == 1:
            return account
        s = np.asarray(account.slippage, dtype=np.float64) * float(self.multiplier)
        new: float | list[float] = float(s) if s.ndim == 0 else [float(x) for x in s]
        out = replace(account, slippage=new)
        try:  # the engine's own check of the setting
            account_arrays(out, max(1, s.size), 0.0)
        except SettingsError as exc:
            raise ShockError(f"{self!r} gives an invalid account: {exc}") from None
        return out
