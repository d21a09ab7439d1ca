"""Pandas-facing wrapper of the book kernel: validate, call :func:`backtest.book.nb.simulate_book_nb`,
wrap the outputs in a :class:`BookResult` (and, for metrics and reports, a
:class:`backtest.result.SimResult` of kind ``'book'``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from backtest.book import nb
from backtest.book.bars import BookBars
from backtest.book.exposure import EXPOSURE_SERIES, beta_exposure, book_betas
from backtest.book.options import OptionLeg, OptionPaths, check_option_legs, option_outputs, option_paths
from backtest.book.settings import (BOOK_RECORD_DTYPES, BOOK_SERIES, POSITION_SERIES, BookSettings, Intrabar,
                                    book_arrays, book_target)
from backtest.engine import nb as engine_nb
from backtest.engine.bars import EngineInputError, ts_str
from backtest.engine.settings import CallResponse, MarginMode
from backtest.market import MarketSpec
from backtest.result import SimResult


@dataclass(frozen=True)
class BookInputs:
    """A book's validated inputs (:func:`check_book_inputs`), shared by the kernel's wrapper and
    the reference simulator.

    Attributes
    ----------
    settings : the settings (defaults filled in).
    specs : one MarketSpec per instrument, in the book's order.
    target : float64 (n_bars, K, n_cols).
    legs : per instrument, its account arrays (``settings.leg_arrays``: the account with that
        leg's margin mode, leverage and fee rate, per column).
    policy : ``policy_arrays`` of the policy, per column.
    intrabar : int64 (n_cols,) ``Intrabar`` values.
    lag : bars between a target row and its fill.
    options : the option legs (validated), after the K perpetuals on the target's axis 1.
    paths : their contract paths on the book's bars (:func:`backtest.book.options.option_paths`).
    collateral : bool (n_cols,): the options count in the cross account's margin balance.
    """

    settings: BookSettings
    specs: list[MarketSpec]
    target: np.ndarray
    legs: list[dict[str, np.ndarray]]
    policy: dict[str, np.ndarray]
    intrabar: np.ndarray
    lag: int
    options: list[OptionLeg]
    paths: OptionPaths
    collateral: np.ndarray

    @property
    def n_cols(self) -> int:
        return self.target.shape[2]


def check_book_inputs(bars: BookBars, target: Any, specs: Sequence[MarketSpec],
                      settings: BookSettings | None = None) -> BookInputs:
    """Validate a book's inputs (one function for the kernel's wrapper and the reference).

    Raises
    ------
    EngineInputError
        ``bars`` not a BookBars; not one MarketSpec per instrument; a target of the wrong shape;
        a target row that reaches an instrument before its first bar.
    SettingsError
        A setting out of range, a leg count that does not match, a mix of settlement currencies.
    """
    settings = settings or BookSettings()
    if not isinstance(bars, BookBars):
        raise EngineInputError(f"bars is a {type(bars).__name__}; give a BookBars (BookBars.from_legs)")
    specs = list(specs)
    if len(specs) != bars.k:
        raise EngineInputError(f"{len(specs)} market specs for {bars.k} instruments {list(bars.symbols)}; "
                               "give one MarketSpec per instrument, in the book's order")
    n, kk = bars.n, bars.k
    options = check_option_legs(settings.options, bars.symbols, bool(specs[0].inverse)) if specs else []
    tgt = book_target(target, n, kk + len(options))
    m = tgt.shape[2]
    legs, pol, intrabar, collateral = book_arrays(settings, specs, m, n)
    lag = int(settings.account.lag)
    for k in range(kk):
        rows = tgt[: max(0, int(bars.first_bar[k]) - lag), k, :]
        if rows.size and not np.isnan(rows).all():
            r = int(np.argmax(~np.isnan(rows).all(axis=1)))
            raise EngineInputError(
                f"target row {r} gives {bars.symbols[k]} an exposure at bar {r + lag} "
                f"({ts_str(int(bars.timestamp[r + lag]))}), before its first bar {int(bars.first_bar[k])} "
                f"({ts_str(int(bars.timestamp[bars.first_bar[k]]))}); set the target to NaN before the listing")
    names = list(bars.symbols) + [o.label() for o in options]
    reach = tgt[: max(0, n - lag)]
    if np.isinf(reach).any():
        t, k, j = (int(x) for x in np.argwhere(np.isinf(reach))[0])
        raise EngineInputError(f"target is infinite at row {t}, instrument {names[k]}, column {j}; "
                               "give a finite exposure, or NaN to keep the position")
    paths = option_paths(bars, options, bool(specs[0].inverse))
    for q in range(len(options)):
        tq = tgt[:, kk + q, :]
        neg = tq < 0
        if neg.any():
            t, j = (int(x) for x in np.argwhere(neg)[0])
            raise EngineInputError(f"target of the option leg {names[kk + q]} is {tq[t, j]!r} at row {t}, column {j}; "
                                   "option legs are long only: give an exposure >= 0 (0 sells), or NaN to keep")
        # a contract exists after close p = bar - 1 where val[p] is finite
        ok = np.zeros(n, dtype=bool)
        ok[1:] = np.isfinite(paths.val[:-1, q])
        rows = np.flatnonzero(~np.isnan(tq[: max(0, n - lag)]).all(axis=1))
        bad = rows[~ok[rows + lag]]
        if bad.size:
            r = int(bad[0])
            first = int(np.argmax(ok)) if ok.any() else -1
            when = f"bar {first} ({ts_str(int(bars.timestamp[first]))})" if first >= 0 else "no bar of the book"
            raise EngineInputError(
                f"target row {r} trades the option leg {names[kk + q]} at bar {r + lag} "
                f"({ts_str(int(bars.timestamp[r + lag]))}), before its first contract (the first close with a usable "
                f"volatility, or put.start): it can first trade at {when}; set the target to NaN before it")
    return BookInputs(settings=settings, specs=specs, target=tgt, legs=legs, policy=pol, intrabar=intrabar, lag=lag,
                      options=options, paths=paths, collateral=collateral)


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BookResult:
    """Outputs of a book simulation.

    Attributes
    ----------
    series : name -> float64 (n_bars, n_cols), the account series of ``BOOK_SERIES`` asked for
        (settlement currency; docs/mechanics.md, "Books", step 6), with option legs
        ``OPTION_SERIES``, with betas ``EXPOSURE_SERIES`` (:mod:`backtest.book.exposure`).
    positions : name -> float64 (n_bars, K, n_cols), the per-position series of
        ``POSITION_SERIES`` asked for.
    records : ``fills``, ``funding``, ``margin_calls``, ``liquidations`` (``BOOK_RECORD_DTYPES``,
        each with its instrument), sorted by column, bar, then event order.
    symbols : the K instruments, in the book's order.
    columns : one label per column.
    index : bar open times (UTC).
    meta : ``settle`` (settlement currency), ``inverse``, ``bar_ms``, ``lag``, ``settings``
        (per column), ``price_usd`` (float64 (n,): USD per unit of the settlement currency).
    """

    series: dict[str, np.ndarray]
    positions: dict[str, np.ndarray]
    records: dict[str, np.ndarray]
    symbols: tuple[str, ...]
    columns: pd.Index
    index: pd.DatetimeIndex
    meta: dict[str, Any] = field(default_factory=dict)

    def position_frame(self, name: str, col: int = 0) -> pd.DataFrame:
        """One per-position series of one column as a DataFrame (bars x instruments)."""
        if name not in self.positions:
            raise KeyError(f"no position series {name!r}; available: {', '.join(self.positions)}")
        return pd.DataFrame(self.positions[name][:, :, col], index=self.index, columns=list(self.symbols))

    def attribution(self, bar: int = -1) -> pd.DataFrame:
        """Per-instrument PnL split at one bar (default the last), one row per (column,
        instrument): ``pnl_price``, ``pnl_funding``, ``pnl_fees`` (paid, >= 0),
        ``pnl_liquidation`` and ``total = price + funding - fees + liquidation`` (settlement
        currency). Summed over the instruments, ``total`` is the account's PnL less capital added."""
        need = ("pnl_price", "pnl_funding", "pnl_fees", "pnl_liquidation")
        missing = [s for s in need if s not in self.positions]
        if missing:
            raise KeyError(f"attribution needs the position series {missing}; run with them")
        rows = []
        for j, label in enumerate(self.columns):
            for k, sym in enumerate(self.symbols):
                v = {s: float(self.positions[s][bar, k, j]) for s in need}
                v["total"] = v["pnl_price"] + v["pnl_funding"] - v["pnl_fees"] + v["pnl_liquidation"]
                rows.append({"column": label, "instrument": sym, **v})
        return pd.DataFrame(rows).set_index(["column", "instrument"])

    def to_sim_result(self) -> SimResult:
        """The book as a :class:`~backtest.result.SimResult` of kind ``'book'``, so that metrics
        and reports take it unchanged. The required series of a book:

        * ``equity``, ``equity_usd``, ``cum_funding``, ``cum_fees``, ``capital_added``: the account's;
        * ``notional``: the **net** notional ``sum_k N_k`` (signed, settlement currency; an option
          leg counts with its delta-equivalent notional);
        * ``leverage``: the **gross** leverage ``sum_k |N_k| / equity`` (``gross_leverage``);
        * ``position``: the **number of open positions** (a book has no single contract count;
          it is non-zero exactly when the account holds something, which is what the metrics
          read: ``exposure_time``).

        Also ``gross_notional``, ``margin_ratio``, ``margin_ratio_adverse``, the account's
        distance to liquidation ``liq_distance`` and, when run with betas, ``beta_exposure`` and
        ``beta_exposure_coin``. Fills, funding
        and margin calls are the book's records; liquidations are one record per account
        liquidation event (a cross liquidation closes several positions at once: its fees and
        deficit summed, the first position's instrument), so that the metrics count events and
        the equity they cost once. Per-instrument attribution stays on the BookResult.
        """
        need = ("equity", "equity_usd", "gross_leverage", "cum_funding", "cum_fees", "capital_added")
        missing = [s for s in need if s not in self.series] + [s for s in ("position", "notional")
                                                                 if s not in self.positions]
        if missing:
            raise KeyError(f"to_sim_result needs the series {missing}; run with them")
        pos = self.positions["position"]
        notional = self.positions["notional"]
        series = {
            "equity": self.series["equity"],
            "equity_usd": self.series["equity_usd"],
            "position": (pos != 0.0).sum(axis=1).astype(np.float64),
            "notional": notional.sum(axis=1),
            "leverage": self.series["gross_leverage"],
            "gross_notional": np.abs(notional).sum(axis=1),
            "cum_funding": self.series["cum_funding"],
            "cum_fees": self.series["cum_fees"],
            "capital_added": self.series["capital_added"],
        }
        for name in ("margin_ratio", "margin_ratio_adverse", "liq_distance") + EXPOSURE_SERIES:
            if name in self.series:
                series[name] = self.series[name]
        records = dict(self.records)
        records["liquidations"] = liquidation_events(self.records["liquidations"])
        meta = {k: v for k, v in self.meta.items() if k != "price_usd"}
        meta.update(instrument="book", symbols=list(self.symbols))
        return SimResult(kind="book", currency=str(self.meta["settle"]), index=self.index, columns=self.columns,
                         series=series, records=records, price_usd=np.asarray(self.meta["price_usd"]),
                         initial_capital=np.asarray(self.meta["settings"]["initial_capital"], dtype=np.float64),
                         meta=meta, underlying=None)


def benchmark_index(benchmark: str | None, symbols: Sequence[str]) -> int:
    """The instrument the betas are measured against: ``benchmark`` (a symbol of the book), or
    the first instrument."""
    if benchmark is None:
        return 0
    if benchmark not in symbols:
        raise EngineInputError(f"benchmark {benchmark!r} is not an instrument of the book {list(symbols)}; "
                               "give one of its symbols (the betas' benchmark)")
    return list(symbols).index(benchmark)


def liquidation_events(liq: np.ndarray) -> np.ndarray:
    """One record per account liquidation event from the per-position records: consecutive
    records of one column and bar with the same ``equity_before``/``equity_after`` are one
    event (a cross liquidation); its clearance fees, deficit and size are summed."""
    if not len(liq):
        return liq.copy()
    key = np.stack([liq["col"], liq["bar"]], axis=1)
    new = np.ones(len(liq), dtype=bool)
    new[1:] = ((key[1:] != key[:-1]).any(axis=1) | (liq["equity_before"][1:] != liq["equity_before"][:-1])
               | (liq["equity_after"][1:] != liq["equity_after"][:-1]))
    starts = np.flatnonzero(new)
    out = liq[starts].copy()
    for f in ("clearance_fee", "deficit", "size"):
        out[f] = np.add.reduceat(liq[f], starts)
    return out


# --------------------------------------------------------------------------------------------
# Running the kernel
# --------------------------------------------------------------------------------------------

def _market(bars: BookBars, specs: list[MarketSpec], paths: OptionPaths) -> nb.BookMarket:
    n, kk = bars.n, bars.k
    prev = np.full((n, kk), np.nan)
    tabs = [s.tier_arrays(leg.timestamp) for s, leg in zip(specs, bars.legs)]
    nv = max(t[0].shape[0] for t in tabs)
    nt = max(t[0].shape[1] for t in tabs)
    tiers = np.zeros((kk, nv, nt, 5))
    ntiers = np.ones((kk, nv), dtype=np.int64)
    ver = np.zeros((n, kk), dtype=np.int64)
    for k, (leg, (stacked, n_t, version)) in enumerate(zip(bars.legs, tabs)):
        f = int(bars.first_bar[k])
        prev[f, k] = leg.mark_open[0]   # at its first bar: the mark open (no earlier close)
        prev[f + 1:, k] = leg.mark_close[:-1]
        tiers[k, : stacked.shape[0], : stacked.shape[1]] = stacked
        ntiers[k, : n_t.shape[0]] = n_t
        ver[f:, k] = version
    listed = np.ascontiguousarray(bars.listed)
    # events that end a quiet stretch: bar 0, every funding print, a tier-table change, a listing,
    # an option leg's roll (``other``: any event but a print at the bar's open instant, which a stretch may start with)
    ev = np.zeros(n, dtype=bool)
    other = np.zeros(n, dtype=bool)
    other[0] = True
    for k in range(kk):
        fb = bars.funding_bar(k)
        ok = (fb >= 0) & (fb < n)
        ev[fb[ok]] = True
        other[fb[ok & ~bars.legs[k].fe_at_open.astype(bool)]] = True
    other[bars.first_bar[bars.first_bar < n]] = True
    other[1:] |= (ver[1:] != ver[:-1]).any(axis=1)
    if paths.roll.shape[1]:
        # an option leg's first contract, settlement or early roll at close t - 1 acts at bar t's
        # open (settlement in step 1, the roll's sale and re-purchase in step 3)
        other[1:] |= (paths.roll[:-1] != 0).any(axis=1)
    ev |= other
    nxt = np.minimum.accumulate(np.where(ev, np.arange(n), n)[::-1])[::-1].astype(np.int64)
    return nb.BookMarket(
        open=bars.prices("open"), mark_open=bars.prices("mark_open"), mark_high=bars.prices("mark_high"),
        mark_low=bars.prices("mark_low"), mark_close=bars.prices("mark_close"), prev_mark_close=prev,
        listed=listed, tiers=tiers, ntiers=ntiers, tier_ver=ver,
        cs=np.array([float(s.contract_size) for s in specs]), lot=np.array([float(s.lot_size) for s in specs]),
        min_notional=np.array([float(s.min_notional) for s in specs]),
        liq_fee=np.array([float(s.liquidation_fee_rate) for s in specs]),
        inverse=bool(specs[0].inverse), usd_k=np.argmax(listed, axis=1).astype(np.int64),
        nxt=np.ascontiguousarray(nxt), open_prints_only=ev & ~other, mmr_max=float(tiers[..., 2].max()),
        o_k=paths.k, o_roll=np.ascontiguousarray(paths.roll), o_old=np.ascontiguousarray(paths.old),
        o_val=np.ascontiguousarray(paths.val), o_adv=np.ascontiguousarray(paths.adv),
        o_unit=np.ascontiguousarray(paths.unit), o_dfee=np.ascontiguousarray(paths.dfee), o_fee_rate=paths.fee_rate,
        o_fee_cap=paths.fee_cap, o_slip=paths.slip)


def _funding(bars: BookBars) -> tuple[nb.BookFunding, np.ndarray]:
    """Every instrument's prints sorted as the reference pays them: by book bar, those at the
    open instant first, then by instrument and print. Also returns each print's time."""
    parts = []
    for k, leg in enumerate(bars.legs):
        e = leg.fe_bar.shape[0]
        parts.append((leg.fe_bar + bars.first_bar[k], leg.fe_at_open, np.full(e, k), np.arange(e), leg.fe_rate,
                      leg.fe_mark, leg.fe_time))
    bar, at_open, ks, es, rate, mark, time = (np.concatenate([p[i] for p in parts]) for i in range(7))
    order = np.lexsort((es, ks, ~at_open.astype(bool), bar))
    fe = nb.BookFunding(bar=bar[order].astype(np.int64), k=ks[order].astype(np.int64),
                        at_open=at_open[order].astype(np.bool_), rate=rate[order].astype(np.float64),
                        mark=mark[order].astype(np.float64))
    return fe, time[order].astype(np.int64)


def _params(inp: BookInputs) -> nb.BookParams:
    a0 = inp.legs[0]  # the account-level settings (every leg carries the account's)
    pol = inp.policy
    return nb.BookParams(
        init_cap=a0["initial_capital"], thr=a0["call_threshold"], resp=a0["call_response"].astype(np.int64),
        tau=a0["call_target"], reserve=a0["reserve"], after_liq=a0["after_liq"].astype(np.int64),
        excess=a0["excess"].astype(np.int64), slip=a0["slippage"],
        pol_kind=pol["policy_kind"].astype(np.int64), pol_maxdd=pol["max_drawdown"], pol_floor=pol["floor"],
        pol_mult=pol["multiplier"], pol_ratchet=pol["ratchet"].astype(np.bool_), pol_maxexp=pol["max_exposure"],
        alone=inp.intrabar == Intrabar.ALONE,
        isolated=np.array([a["margin_mode"] == MarginMode.ISOLATED for a in inp.legs], dtype=np.bool_),
        lev=np.array([a["leverage"] for a in inp.legs], dtype=np.float64),
        fee=np.array([a["fee_rate"] for a in inp.legs], dtype=np.float64),
        coll=inp.collateral.astype(np.bool_), lag=np.int64(inp.lag), target=inp.target, obits=_order_bits(inp.target, inp.lag))


def _order_bits(target: np.ndarray, lag: int) -> np.ndarray:
    """uint64 (ceil((n - lag) / 64), m): bit ``r % 64`` of word ``r // 64`` of column j set when
    target row ``r`` of column j holds a value for some instrument (the rows that reach a bar);
    the quiet stretches read where the next order is from it. One pass over the target in its
    memory order (the engine's ``target_scan_nb``), then an OR over the instruments."""
    n, kk, m = target.shape
    tgt = np.ascontiguousarray(target)
    flat = tgt.reshape(-1).view()
    flat.flags.writeable = False  # the engine's read-only view (engine.core._flat): one compiled scan
    bits, _ = engine_nb.target_scan_nb(flat, kk * m, 1, n, kk * m, max(n - lag, 0))
    return np.ascontiguousarray(np.bitwise_or.reduce(bits.reshape(bits.shape[0], kk, m), axis=1))


def first_record_caps(target: np.ndarray, n: int, kk: int, lag: int, resp: np.ndarray) -> np.ndarray:
    """First guess of each column's record counts, int64 (3, n_cols) for fills, margin calls and
    liquidations: one order per target entry that reaches a bar; reduce cuts, calls and
    liquidations are rarer, a few. The kernel counts every record it produces, and a run in
    which a column produced more than its guess is run again with the exact counts (records are
    output, never dropped)."""
    m = target.shape[2]
    orders = (~np.isnan(target[: max(0, n - lag)])).sum(axis=(0, 1)).astype(np.int64)
    reduce = resp == CallResponse.REDUCE
    return np.stack([orders + 8 + np.where(reduce, 8 * kk, 0), np.full(m, 8 + n // 64),
                     np.full(m, 4 * kk + 4)]).astype(np.int64)


# Under this many bar-columns (bars x columns) a book runs on the serial driver
# (``simulate_book_serial_nb``), at or over it on the parallel one (``simulate_book_nb``, columns on
# the threads). Compiling the parallel driver costs ~14 s more CPU on a first run; on two threads
# it saves at most about half the run: under 0.1 s at this size (K = 2; benchmarks/README.md,
# "Books"), and the main job's book (3 columns x 18,984 bars) is under it.
PARALLEL_MIN_BAR_COLUMNS = 250_000


def _run(mkt, fe, prm, n: int, kk: int, m: int, sslot: np.ndarray, pslot: np.ndarray,
         caps: np.ndarray) -> tuple[nb.BookOutputs, np.ndarray]:
    jj = mkt.o_k.shape[0]
    starts = np.zeros_like(caps)
    np.cumsum(caps[:, :-1], axis=1, out=starts[:, 1:])
    bufs = [np.empty(int(caps[r].sum()) + 1, dtype=dt)  # + the spare slot
            for r, dt in enumerate((BOOK_RECORD_DTYPES["fills"], BOOK_RECORD_DTYPES["margin_calls"],
                                    BOOK_RECORD_DTYPES["liquidations"]))]
    o = nb.BookOutputs(
        series=np.empty((int((sslot >= 0).sum()), m, n)), sslot=sslot,
        pseries=np.empty((int((pslot >= 0).sum()), kk + jj, m, n)), pslot=pslot,
        fills=bufs[0], calls=bufs[1], liqs=bufs[2], rstart=starts, rcap=caps,
        counts=np.zeros_like(caps), fpos=np.zeros((m, fe.bar.shape[0])), quiet=np.zeros(m, dtype=np.int64))
    # small books run one column after the other: the same numbers, a fraction of the first compile
    driver = nb.simulate_book_nb if n * m >= PARALLEL_MIN_BAR_COLUMNS else nb.simulate_book_serial_nb
    driver(mkt, fe, prm, o, np.zeros(m, dtype=nb.account_state_dt),
           np.zeros((m, kk), dtype=nb.position_state_dt), np.zeros((m, jj), dtype=nb.option_state_dt),
           np.zeros((m, kk), dtype=nb.position_state_dt),
           np.zeros((m, kk + 1), dtype=np.bool_), np.zeros((m, kk)), np.zeros((m, 14, 2 * kk + 4)),
           np.zeros((m, kk), dtype=np.int64))
    return o, starts


def simulate_book(bars: BookBars, target: Any, specs: Sequence[MarketSpec], settings: BookSettings | None = None,
                  columns: Sequence | pd.Index | None = None, series: Sequence[str] | None = None,
                  betas: Any = None, benchmark: str | None = None) -> BookResult:
    """Simulate a book (several perpetuals in one account) for many columns at once.

    Parameters
    ----------
    bars : K instruments on one bar index (:class:`BookBars`; later listings start at their first bar).
    target : float64 (n_bars, K, n_cols) or (n_bars, K): each instrument's signed target
        exposure as a multiple of the account's equity (negative = short); NaN keeps the
        position. Row ``t`` is traded at bar ``t + lag``; a row that would reach an instrument
        before its first bar must be NaN.
    specs : one MarketSpec per instrument, in the book's order (all linear in one settlement
        currency, or all inverse in one coin).
    settings : account, policy, per-instrument legs and the intrabar convention
        (docs/mechanics.md, "Books").
    columns : labels of the columns (default 0..n_cols-1).
    series : names of ``BOOK_SERIES`` and ``POSITION_SERIES`` to store (default all). A large
        sweep that needs the account's equity only saves the (n_bars, K, n_cols) arrays
        (``series=("equity",)``); ``liq_price`` costs a price solve per position and bar,
        ``liq_distance`` one solve per margin group and bar.
    betas : each instrument's beta to ``benchmark``: (K,), (n_bars, K) or ``{symbol: beta or
        (n_bars,) array}``; NaN where unknown. Given, the account series gain ``beta_exposure``
        and ``beta_exposure_coin`` (:mod:`backtest.book.exposure`; an option leg counts with its
        delta times its underlying's beta). The runner passes the rolling beta the beta-weighted
        basket strategy sizes with (``strategies.book_strategies.book_betas``); None: no beta series.
    benchmark : the symbol the betas are measured against (its coin is the unit of
        ``beta_exposure_coin``); default the first instrument.

    Returns
    -------
    BookResult (its :meth:`BookResult.to_sim_result` feeds metrics and reports). The numbers
    are those of :func:`backtest.book.simulate_book_reference` (property-tested).
    """
    inp = check_book_inputs(bars, target, specs, settings)
    n, kk, m = bars.n, bars.k, inp.n_cols
    if columns is None:
        cols = pd.RangeIndex(m)
    else:
        cols = columns if isinstance(columns, pd.Index) else pd.Index(list(columns))
        if len(cols) != m:
            raise EngineInputError(f"columns has {len(cols)} labels for {m} columns; give one label per column")
    wanted = tuple(BOOK_SERIES) + tuple(POSITION_SERIES) if series is None else tuple(series)
    unknown = [s for s in wanted if s not in BOOK_SERIES and s not in POSITION_SERIES]
    if unknown:
        raise EngineInputError(f"unknown series {unknown}; choose from {', '.join(BOOK_SERIES + POSITION_SERIES)}")
    s_keep = [s for s in BOOK_SERIES if s in wanted]
    p_keep = [s for s in POSITION_SERIES if s in wanted]
    sslot = np.array([s_keep.index(s) if s in s_keep else -1 for s in BOOK_SERIES], dtype=np.int64)
    pslot = np.array([p_keep.index(s) if s in p_keep else -1 for s in POSITION_SERIES], dtype=np.int64)

    mkt = _market(bars, inp.specs, inp.paths)
    fe, fe_time = _funding(bars)
    prm = _params(inp)
    caps = first_record_caps(inp.target, n, kk, inp.lag, prm.resp)
    o, starts = _run(mkt, fe, prm, n, kk, m, sslot, pslot, caps)
    if (o.counts > caps).any():
        caps = np.maximum(caps, o.counts)
        o, starts = _run(mkt, fe, prm, n, kk, m, sslot, pslot, caps)
    records = {name: _compact(buf, starts[r], o.counts[r])
               for r, (name, buf) in enumerate((("fills", o.fills), ("margin_calls", o.calls),
                                                ("liquidations", o.liqs)))}
    records["funding"] = _funding_records(o.fpos, fe, fe_time, mkt)
    records = {name: records[name] for name in BOOK_RECORD_DTYPES}
    out = {s: o.series[i].T for i, s in enumerate(s_keep)}
    pos = {s: o.pseries[i].transpose(2, 0, 1) for i, s in enumerate(p_keep)}
    settle = str(inp.specs[0].settle)
    price_usd = mkt.mark_close[np.arange(n), mkt.usd_k] if mkt.inverse else np.ones(n)
    names = tuple(bars.symbols) + tuple(leg.label() for leg in inp.options)
    if inp.options and "position" in pos and "notional" in pos:
        out.update(option_outputs(pos["position"], pos["notional"], inp.paths, mkt.mark_close, price_usd,
                                  bool(mkt.inverse)))
    bench = None
    if betas is not None:
        bench = benchmark_index(benchmark, bars.symbols)
        if "notional" not in pos or "equity" not in out:
            raise EngineInputError("betas give the beta-weighted exposure, which needs the series 'notional' and "
                                   "'equity'; add them to series=, or leave betas out")
        out.update(beta_exposure(pos["notional"], out["equity"], book_betas(betas, n, bars.symbols), mkt.o_k,
                                 mkt.mark_close[:, bench], price_usd))
    meta = {
        "settle": settle, "inverse": bool(mkt.inverse), "bar_ms": int(bars.bar_ms), "lag": inp.lag,
        "beta_benchmark": None if bench is None else bars.symbols[bench],
        "allow_lookahead": bool(inp.settings.account.allow_lookahead),
        "symbols": list(bars.symbols),
        "option_legs": [leg.label() for leg in inp.options],
        "options_collateral": inp.collateral.tolist(),
        "settings": {**{k: v.tolist() for k, v in inp.legs[0].items() if k not in ("margin_mode", "leverage",
                                                                                 "fee_rate")},
                     **{k: v.tolist() for k, v in inp.policy.items()},
                     "intrabar": inp.intrabar.tolist(),
                     "margin_mode": [a["margin_mode"].tolist() for a in inp.legs],
                     "leverage": [a["leverage"].tolist() for a in inp.legs],
                     "fee_rate": [a["fee_rate"].tolist() for a in inp.legs]},
        "price_usd": price_usd,
        # the smallest equity that can still trade: the cheapest instrument's smallest order over
        # its leverage setting, per column (metrics: ``ruined``)
        "min_equity_usd": np.min([s.min_order_usd(float(bars.legs[k].mark_close[-1])) / inp.legs[k]["leverage"]
                                  for k, s in enumerate(inp.specs)], axis=0).tolist(),
    }
    return BookResult(series=out, positions=pos, records=records, symbols=names, columns=cols,
                      index=bars.index, meta=meta)


def _compact(buf: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each column's records (``counts[j]`` from ``starts[j]``), in column order: moved to the
    front of ``buf`` in place (the engine's ``compact_nb``; a fancy-indexed copy of millions of
    records cost more than the kernel's bars in a sweep) and returned as a view of it."""
    n = engine_nb.compact_nb(buf, counts, starts)
    return buf[:n]


def _funding_records(fpos: np.ndarray, fe: nb.BookFunding, fe_time: np.ndarray, mkt: nb.BookMarket) -> np.ndarray:
    """Funding records from the position that paid each print (column, then print order: the
    order the kernel paid them), the amount by the kernel's own formula (``funding_amount_nb``),
    hence its amounts bit for bit (:func:`backtest.book.nb.funding_records_nb`)."""
    counts = (fpos != 0.0).sum(axis=1)
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    out = np.empty(int(counts.sum()), dtype=BOOK_RECORD_DTYPES["funding"])
    nb.funding_records_nb(fpos, fe, fe_time, mkt.cs, mkt.inverse, out, starts)
    return out
