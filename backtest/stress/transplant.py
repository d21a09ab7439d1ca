"""Path transplant: the returns of a historical window replayed from another start date."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData
from backtest.data.timeutil import iso
from backtest.stress.common import (
    MARK, TRADE, BarUnits, ShockError, bar_at, chain_prices, parse_instant, print_bars, refund_frame, span_of,
)
from backtest.stress.shocks import Shock


def _check_contiguous(md: MarketData, i0: int, i1: int, what: str) -> None:
    """Bars ``i0 .. i1`` (inclusive) follow each other without missing bars."""
    d = np.diff(md.timestamps[i0:i1 + 1])
    if (d != md.bar_ms).any():
        j = i0 + int(np.argmax(d != md.bar_ms))
        raise ShockError(f"{what} holds missing bars after {iso(int(md.timestamps[j]))}; "
                         "returns across a gap are not bar returns: choose a window without gaps")


@dataclass(frozen=True)
class PathTransplant(Shock):
    """The returns of the historical window ``[source_start, source_end)`` applied from ``at``.

    Changes, for the ``w`` bars of the window replayed on the ``w`` bars opening from ``at``: each
    target bar's trade open/high/low/close is the previous target close times the source bar's
    ratio to its own previous close (so the log returns, close to close and within the bar, are
    the source's; :func:`backtest.stress.common.chain_prices`), the mark candles likewise from the
    previous target mark close, and volume and other columns (implied vol) are the source bar's.
    The funding prints of the target bars are replaced by the source window's prints, shifted in
    time by ``at - source_start`` (rates, intervals and raw-ms jitter kept; a known print mark
    rebuilt from its ratio to the previous mark close). Later bars are continued from the new
    level: their trade prices times ``close'/close`` of the last target bar, their mark prices
    and print marks times the mark's factor, their returns unchanged.

    The source may overlap the target (it is read from the data before the change). Both windows
    must lie in the data without missing bars, with a bar before each (its close is the level the
    ratios start from).
    """

    source_start: Any
    source_end: Any
    at: Any

    def __post_init__(self) -> None:
        a = parse_instant(self.source_start, "PathTransplant.source_start")
        b = parse_instant(self.source_end, "PathTransplant.source_end")
        parse_instant(self.at, "PathTransplant.at")
        if b <= a:
            raise ShockError(f"PathTransplant: source_end {iso(b)} is not after source_start {iso(a)}; "
                             "give a later end")

    def apply(self, md: MarketData) -> MarketData:
        s0, s1 = span_of(md, parse_instant(self.source_start, "PathTransplant.source_start"),
                         parse_instant(self.source_end, "PathTransplant.source_end"), "PathTransplant source")
        k = bar_at(md, parse_instant(self.at, "PathTransplant.at"), "PathTransplant.at")
        w = s1 - s0
        ts = md.timestamps
        if s0 == 0 or k == 0:
            raise ShockError(f"{self!r}: the source window and the target each need a bar before them "
                             f"(the data's first bar opens at {iso(int(ts[0]))}); start them later")
        if k + w > md.n:
            raise ShockError(f"{self!r}: the {w} source bars replayed from {iso(int(ts[k]))} reach past the data's "
                             f"last bar ({iso(int(ts[-1]))}); choose an earlier start or a shorter window")
        _check_contiguous(md, s0 - 1, s1 - 1, f"{self!r}: the source window")
        _check_contiguous(md, k - 1, k + w - 1, f"{self!r}: the target window")
        units = BarUnits.from_market_data(md)
        src = np.arange(s0 - 1, s1 - 1)  # units of the source bars (unit u is bar u + 1)
        old = md.frame
        frame = old.copy()
        for cols, ratios in ((TRADE, units.trade), (MARK, units.mark)):
            prices = chain_prices(float(old[cols[3]].iloc[k - 1]), ratios[src])
            g = prices[-1, 3] / float(old[cols[3]].iloc[k + w - 1])
            for j, c in enumerate(cols):
                v = old[c].to_numpy(dtype=np.float64, copy=True)
                v[k:k + w] = prices[:, j]
                v[k + w:] *= g
                frame[c] = v
            if cols is MARK:
                mark_g = g
        for c, vals in units.extra.items():
            v = old[c].to_numpy(dtype=np.float64, copy=True)
            v[k:k + w] = vals[src]
            frame[c] = v
        # funding: the target bars' prints out, the source bars' prints in, shifted
        bars = print_bars(md)
        keep = (bars < k) | (bars >= k + w)
        kept = md.funding[keep].copy()
        mp = kept["mark_price"].to_numpy(dtype=np.float64, copy=True)
        mp[bars[keep] >= k + w] *= mark_g
        kept["mark_price"] = mp
        pos, idx = units.prints_of(src)
        target_bar = k + pos
        new_mark_close = frame["mark_close"].to_numpy(dtype=np.float64)
        moved = pd.DataFrame({
            "timestamp": ts[target_bar] + units.offset[idx],
            "funding_rate": units.rate[idx],
            "interval_hours": units.interval[idx],
            "mark_price": new_mark_close[target_bar - 1] * units.mark_ratio[idx],
        })
        fund = pd.concat([kept, moved], ignore_index=True).sort_values("timestamp", kind="stable")
        fund = fund.reset_index(drop=True)[list(md.funding.columns)]
        window = np.zeros(md.n, dtype=bool)
        window[k:k + w] = True
        refund_frame(frame, ts, md.bar_ms, fund, window)
        return self._finish(md, frame, fund)
