"""Monte Carlo price paths: the stationary bootstrap of bars (Politis and Romano, 1994).

A bar is resampled whole, relative to the previous close (:class:`~backtest.stress.common.BarUnits`):
its trade OHLC over the previous trade close, its mark OHLC over the previous mark close, its
funding prints (time offset in the bar, rate, interval, mark over the previous mark close) and its
volume and implied vol. Blocks of consecutive bars are drawn as Politis and Romano define the
stationary bootstrap: the first bar of a path is a uniformly drawn unit; each next bar is, with
probability ``1 - 1/L``, the unit after the previous one (wrapping from the last unit to the first)
and, with probability ``p = 1/L``, a new uniformly drawn unit. Block lengths are therefore
geometric with mean ``L`` (``P(length = k) = p (1 - p)^(k-1)``), and every unit is equally likely
at every bar, so a path's returns have the history's distribution.

D. N. Politis and J. P. Romano, "The Stationary Bootstrap", Journal of the American Statistical
Association 89 (428), 1994, pp. 1303-1313.

A path keeps the history's first bar as it is (with its prints), then ``horizon`` resampled
bars on the history's next bar times, rebuilt from the first close
(:func:`~backtest.stress.common.chain_prices`). Each path is validated as real data is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData, funding_to_bars
from backtest.data.timeutil import iso
from backtest.engine.bars import PerpBars
from backtest.stress.common import (
    MARK, TRADE, BarUnits, ShockError, chain_prices, check_market_data, check_number, print_bars, refund_frame,
    with_data,
)


def stationary_bootstrap_indices(n_units: int, horizon: int, mean_block: float,
                                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One path of the stationary bootstrap.

    Parameters
    ----------
    n_units : number of units to draw from (> 0).
    horizon : length of the path (> 0).
    mean_block : mean block length ``L >= 1`` (in units); ``1`` draws every unit independently.
    rng : numpy random generator.

    Returns
    -------
    idx : int64 (horizon,), the unit of each step.
    new_block : bool (horizon,), True where a block starts (always at step 0); at later steps
        independently with probability ``1/L``.
    """
    p = 1.0 / mean_block
    new_block = rng.random(horizon) < p
    new_block[0] = True
    starts = np.flatnonzero(new_block)
    first = rng.integers(0, n_units, size=starts.shape[0])
    block = np.cumsum(new_block) - 1
    step_in_block = np.arange(horizon) - starts[block]
    idx = (first[block] + step_in_block) % n_units
    return idx.astype(np.int64), new_block


@dataclass(frozen=True)
class BootstrapPath:
    """One resampled path: ``data`` (the path's MarketData), ``units`` (int64 (horizon,), the
    history's bar behind each path bar after the first: history bar ``units[j-1] + 1`` is path
    bar ``j``) and ``new_block`` (bool (horizon,), where a block starts)."""

    index: int
    data: MarketData
    units: np.ndarray
    new_block: np.ndarray


@dataclass(frozen=True)
class PathBatch:
    """Bootstrap paths as arrays (:meth:`StationaryBootstrap.batch`), row ``r`` is path ``keys[r]``.

    Attributes
    ----------
    keys : int64 (p,), the path numbers.
    timestamps : int64 (n,), the bars' open times (ms UTC; the history's first ``n`` bars, shared).
    bar_ms : bar size, ms.
    index : the bars' DatetimeIndex (UTC).
    columns : the history frame's columns, in order.
    prices : trade and mark OHLC, name -> float64 (p, n).
    extra : the other columns carried by the units (volume, iv, ...), name -> float64 (p, n).
    print_ptr : int64 (p + 1,), path ``r``'s funding prints are ``print_ptr[r] .. print_ptr[r + 1]``
        of ``prints``.
    prints : raw funding prints of every path, concatenated: ``timestamp`` (int64 ms, with the
        exchange's jitter), ``funding_rate``, ``interval_hours``, ``mark_price`` (float64).
    """

    keys: np.ndarray
    timestamps: np.ndarray
    bar_ms: int
    index: pd.DatetimeIndex
    columns: tuple[str, ...]
    prices: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]
    print_ptr: np.ndarray
    prints: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        """Bars per path."""
        return self.timestamps.shape[0]

    def funding(self, r: int) -> dict[str, np.ndarray]:
        """Row ``r``'s raw prints (views), by column."""
        a, b = int(self.print_ptr[r]), int(self.print_ptr[r + 1])
        return {k: v[a:b] for k, v in self.prints.items()}

    def perp_bars(self, r: int) -> PerpBars:
        """Row ``r`` as the engine's inputs: :meth:`PerpBars.from_arrays` (its price checks and its
        funding-to-bar mapping), as ``MarketData.to_perp_bars`` builds them from the path's data."""
        p, f = self.prices, self.funding(r)
        return PerpBars.from_arrays(self.timestamps, p["open"][r], p["high"][r], p["low"][r], p["close"][r],
                                    p["mark_open"][r], p["mark_high"][r], p["mark_low"][r], p["mark_close"][r],
                                    funding_time=f["timestamp"], funding_rate=f["funding_rate"],
                                    funding_mark=f["mark_price"], bar_ms=self.bar_ms)

    def frame(self, r: int) -> pd.DataFrame:
        """Row ``r``'s bars as the path's MarketData frame holds them (prices, carried columns,
        the per-bar funding columns from its prints by the loader's rule), for a strategy."""
        rate, interval, _ = funding_to_bars(self.timestamps, self.bar_ms, pd.DataFrame(self.funding(r)))
        cols = {"funding_rate": rate, "funding_interval_hours": interval}
        cols |= {c: v[r] for c, v in self.prices.items()} | {c: v[r] for c, v in self.extra.items()}
        return pd.DataFrame({c: cols[c] if c in cols else np.full(self.n, np.nan) for c in self.columns},
                            index=self.index)


class StationaryBootstrap:
    """Stationary-bootstrap paths of a dataset's bars.

    Parameters
    ----------
    md : the history: bars without missing bars (a block across a gap would join bars that are
        not consecutive), at least three.
    mean_block : mean block length in bars, ``>= 1`` (e.g. 24 to 168 for hourly bars: long
        enough to keep a day's to a week's volatility clustering and the funding schedule).
    horizon : resampled bars per path after the first bar (default: the history's ``n - 1``, so
        a path spans the history's times); at most ``n - 1``.
    seed : the paths' seed; path ``k`` uses ``SeedSequence(seed, spawn_key=(k,))``, so it is the
        same whatever the number of paths drawn.
    """

    def __init__(self, md: MarketData, mean_block: float, horizon: int | None = None, seed: int = 0) -> None:
        if md.n < 3:
            raise ShockError(f"{md!r} has {md.n} bars; the bootstrap needs at least 3")
        d = np.diff(md.timestamps)
        if (d != md.bar_ms).any():
            j = int(np.argmax(d != md.bar_ms))
            raise ShockError(f"the history has missing bars after {iso(int(md.timestamps[j]))}; the bootstrap "
                             "needs consecutive bars: load a range without gaps")
        self.mean_block = check_number(mean_block, "mean_block", lo=1.0,
                                       fix="give the mean block length in bars, >= 1")
        h = md.n - 1 if horizon is None else horizon
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not 1 <= h <= md.n - 1:
            raise ShockError(f"horizon={horizon!r} must be a whole number of bars in 1 .. {md.n - 1} "
                             "(the history's bars after the first)")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ShockError(f"seed={seed!r} must be a whole number >= 0")
        self.md, self.horizon, self.seed = md, int(h), int(seed)
        self.units = BarUnits.from_market_data(md)
        f = md.frame
        self._start = {c: float(f[c].iloc[0]) for c in (TRADE[3], MARK[3])}
        self._first_prints = md.funding[print_bars(md) == 0]

    def draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The units and block starts of path ``k`` (see :func:`stationary_bootstrap_indices`)."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(k),)))
        return stationary_bootstrap_indices(self.units.n, self.horizon, self.mean_block, rng)

    def path(self, k: int) -> BootstrapPath:
        """Path ``k``: its MarketData (validated), units and block starts."""
        idx, new_block = self.draw(k)
        return BootstrapPath(index=int(k), data=self.assemble(idx, label=f"bootstrap path {k}"),
                             units=idx, new_block=new_block)

    def paths(self, n_paths: int) -> Iterator[BootstrapPath]:
        """Paths ``0 .. n_paths - 1``, built one at a time (memory: one path)."""
        for k in range(n_paths):
            yield self.path(k)

    def batch(self, keys: Sequence[int] | np.ndarray) -> "PathBatch":
        """Paths ``keys`` at once, as arrays (no MarketData per path): the engine's inputs of
        :func:`backtest.stress.paths.run_paths`. Path ``k`` holds the numbers of :meth:`path`
        ``(k)``'s data bit for bit (the same draws, :func:`~backtest.stress.common.chain_prices`
        on the stacked paths, the same print arithmetic); ``tests/stress/test_paths.py`` checks it.

        Parameters
        ----------
        keys : int (p,), the path numbers (each >= 0).
        """
        keys = np.asarray(keys, dtype=np.int64)
        if keys.ndim != 1 or keys.shape[0] == 0 or (keys < 0).any():
            raise ShockError(f"keys={keys!r} must be one or more path numbers >= 0")
        md, u, h = self.md, self.units, self.horizon
        p = keys.shape[0]
        idx = np.empty((p, h), dtype=np.int64)
        for r, k in enumerate(keys.tolist()):
            idx[r] = self.draw(k)[0]
        first = md.frame.iloc[:1]
        prices: dict[str, np.ndarray] = {}
        for names, ratios in ((TRADE, u.trade), (MARK, u.mark)):
            chained = chain_prices(self._start[names[3]], ratios[idx])  # (p, h, 4)
            for j, c in enumerate(names):
                col = np.empty((p, h + 1))
                col[:, 0] = float(first[c].iloc[0])
                col[:, 1:] = chained[:, :, j]
                # read-only, as the loader's columns reach the engine (pandas hands them out
                # read-only): numba compiles the kernel once per read-only-ness
                col.flags.writeable = False
                prices[c] = col
        extra = {}
        for c, vals in u.extra.items():
            col = np.empty((p, h + 1))
            col[:, 0] = float(first[c].iloc[0])
            col[:, 1:] = vals[idx]
            extra[c] = col
        # the prints: the history's first bar's, then each unit's, path by path (the order of
        # assemble's frame); a unit's print mark over the path's previous mark close
        ts = md.timestamps[:h + 1]
        pos, pr = u.prints_of(idx.ravel())
        row, bar = pos // h, pos % h + 1
        f0 = self._first_prints
        n0 = len(f0)
        moved = np.bincount(row, minlength=p)
        ptr = np.zeros(p + 1, dtype=np.int64)
        np.cumsum(moved + n0, out=ptr[1:])
        dst = ptr[row] + n0 + (np.arange(pos.shape[0]) - np.repeat(np.cumsum(moved) - moved, moved))
        head = (ptr[:-1, None] + np.arange(n0)).ravel()
        out = {}
        for name, first_vals, vals in (
                ("timestamp", f0["timestamp"].to_numpy(dtype=np.int64), ts[bar] + u.offset[pr]),
                ("funding_rate", f0["funding_rate"].to_numpy(dtype=np.float64), u.rate[pr]),
                ("interval_hours", f0["interval_hours"].to_numpy(dtype=np.float64), u.interval[pr]),
                ("mark_price", f0["mark_price"].to_numpy(dtype=np.float64),
                 prices["mark_close"][row, bar - 1] * u.mark_ratio[pr])):
            a = np.empty(int(ptr[-1]), dtype=vals.dtype)
            a[head] = np.tile(first_vals, p)
            a[dst] = vals
            out[name] = a
        return PathBatch(keys=keys, timestamps=ts, bar_ms=md.bar_ms, index=md.frame.index[:h + 1],
                         columns=tuple(md.frame.columns), prices=prices, extra=extra, print_ptr=ptr,
                         prints=out)

    def assemble(self, idx: np.ndarray, label: str = "bootstrap path") -> MarketData:
        """The MarketData of the path whose bars after the first are the units ``idx``.

        Bar 0 is the history's bar 0 with its prints; bar ``j >= 1`` opens at the history's bar
        ``j`` time and is unit ``idx[j-1]`` rebuilt from the path's previous close.
        """
        md, u = self.md, self.units
        idx = np.asarray(idx, dtype=np.int64)
        h = idx.shape[0]
        ts = md.timestamps[:h + 1]
        first = md.frame.iloc[:1]
        cols = {}
        for names, ratios in ((TRADE, u.trade), (MARK, u.mark)):
            prices = chain_prices(self._start[names[3]], ratios[idx])
            for j, c in enumerate(names):
                cols[c] = np.concatenate([[float(first[c].iloc[0])], prices[:, j]])
        for c, vals in u.extra.items():
            cols[c] = np.concatenate([[float(first[c].iloc[0])], vals[idx]])
        pos, p = u.prints_of(idx)
        bar = pos + 1
        moved = pd.DataFrame({
            "timestamp": ts[bar] + u.offset[p],
            "funding_rate": u.rate[p],
            "interval_hours": u.interval[p],
            "mark_price": cols["mark_close"][bar - 1] * u.mark_ratio[p],
        })
        fund = pd.concat([self._first_prints, moved], ignore_index=True)[list(md.funding.columns)]
        frame = pd.DataFrame({c: cols[c] if c in cols else np.full(h + 1, np.nan) for c in md.frame.columns},
                             index=md.frame.index[:h + 1])
        refund_frame(frame, ts, md.bar_ms, fund, np.ones(h + 1, dtype=bool))
        what = f"{label} (stationary bootstrap, mean block {self.mean_block:g} bars, seed {self.seed})"
        out = with_data(md, frame, fund, what)
        return check_market_data(out, what=what, base=md)
