"""Named crisis windows: dated spans of market stress, each with its source, and their measure per
result and column from a run's stored outputs (``equity.parquet``, ``events.parquet``).

A window is ``[start, end)`` in UTC; a bar belongs to it when its **open time** is inside (the
rule of the named periods, :mod:`backtest.report.named_periods`, whose measures are reused:
return, max drawdown and funding net of the window's bars, the start counting as a peak). Beside
them, per window and column: the ``liquidations`` and ``margin_calls`` records of its bars, and
the worst bar (the lowest bar return ``min(r_t)`` of its bars, as the metric
``worst_bar_return``, and the open time of that bar).

The library (:data:`CRISIS_WINDOWS`) holds the events issue 18 names and later ones; a run
measures those its data covers (``windows = "default"``) and lists the others as skipped, with
the reason (:func:`select_windows`). Users add their own windows (``[[stress.window]]``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from backtest.data.timeutil import iso, parse_time
from backtest.report.named_periods import NamedPeriodError, bars_of, records_in, records_of, window_stats
from backtest.report.periods import _columns_of
from backtest.stress.common import ShockError


@dataclass(frozen=True)
class CrisisWindow:
    """A dated window of market stress.

    Attributes
    ----------
    name : short unique name (``ftx-2022-11``).
    start, end : ISO dates/times UTC, ``[start, end)``.
    description : one line: what happened.
    source : where it is documented (URL or publication).
    """

    name: str
    start: str
    end: str
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ShockError(f"crisis window name {self.name!r} must be a non-empty string")
        a, b = self.span_ms()
        if b <= a:
            raise ShockError(f"crisis window {self.name!r}: end {iso(b)} is not after start {iso(a)}; give a later end")

    def span_ms(self) -> tuple[int, int]:
        """(start, end) in int ms UTC."""
        out = []
        for what, v in (("start", self.start), ("end", self.end)):
            try:
                ms = parse_time(v, name=f"crisis window {self.name!r} {what}")
            except ValueError as exc:
                raise ShockError(str(exc)) from None
            if ms is None:
                raise ShockError(f"crisis window {self.name!r}: {what} is missing; give an ISO date such as '2022-11-08'")
            out.append(int(ms))
        return out[0], out[1]

    def as_dict(self) -> dict:
        a, b = self.span_ms()
        return {"name": self.name, "start": self.start, "end": self.end, "start_ms": a, "end_ms": b,
                "description": self.description, "source": self.source}


# The library. Spans hold the fall and the rebound that follows it (the rebound is what hurts a
# short that survived the fall); dates are UTC.
CRISIS_WINDOWS: tuple[CrisisWindow, ...] = (
    CrisisWindow(
        "crash-2021-05-19", "2021-05-18", "2021-05-22",
        "China's financial associations bar institutions from crypto business; BTC falls about 30 % intraday on "
        "19 May, cascading liquidations, exchanges overloaded",
        "Mint, 'What sent crypto market into a 24-hour tailspin', 2021-05-20, https://www.livemint.com/market/"
        "cryptocurrency/what-sent-crypto-market-into-a-24-hour-tailspin/amp-11621531928694.html"),
    CrisisWindow(
        "flash-crash-2021-12-04", "2021-12-03", "2021-12-07",
        "weekend flash crash: BTC from about 53,000 to 42,000 within an hour on 4 December, some 2.5 bn USD of "
        "leveraged positions liquidated",
        "CryptoVibes, 'Bitcoin might consolidate until 2022 after a violent plunge sends it to $41K', 2021-12-04, "
        "https://www.cryptovibes.com/blog/2021/12/04/bitcoin-might-consolidate-until-2022-after-a-violent-plunge-"
        "sends-it-to-41k/"),
    CrisisWindow(
        "terra-luna-2022-05", "2022-05-07", "2022-05-16",
        "run on Terra's UST stablecoin and Anchor from 7 May; UST and LUNA collapse within days, about 50 bn USD "
        "of value wiped out, BTC below 27,000",
        "J. Liu, I. Makarov, A. Schoar, 'Anatomy of a Run: The Terra Luna Crash', NBER Working Paper 31160, 2023, "
        "https://www.nber.org/papers/w31160"),
    CrisisWindow(
        "celsius-3ac-2022-06", "2022-06-10", "2022-06-21",
        "Celsius pauses all withdrawals (12 June) amid the distress of Three Arrows Capital; BTC falls from about "
        "30,000 to below 18,000 by 18 June",
        "Celsius Network, 'A Memo to the Celsius Community', 2022-06-12, as reported by Benzinga, "
        "https://www.benzinga.com/news/22/06/27664587/celsius-says-its-halting-withdrawals-due-to-extreme-market-"
        "conditions"),
    CrisisWindow(
        "ftx-2022-11", "2022-11-06", "2022-11-15",
        "run on FTX after the disclosure of Alameda's balance sheet; withdrawals halted on 8 November, chapter 11 "
        "on 11 November; BTC from about 21,000 to below 16,000",
        "In re FTX Trading Ltd., chapter 11 case no. 22-11068 (Bankr. D. Del.), petition filed 2022-11-11"),
    CrisisWindow(
        "usdc-depeg-2023-03", "2023-03-09", "2023-03-16",
        "Silicon Valley Bank fails (10 March) holding 3.3 bn USD of USDC's reserves; USDC trades near 0.88 USD; "
        "the deposit backstop of 12 March sets off a sharp BTC rally (a squeeze for shorts)",
        "Board of Governors of the Federal Reserve System, 'Joint Statement by the Department of the Treasury, "
        "Federal Reserve, and FDIC', 2023-03-12, "
        "https://www.federalreserve.gov/newsevents/pressreleases/monetary20230312b.htm"),
    CrisisWindow(
        "flash-crash-2023-08-17", "2023-08-17", "2023-08-20",
        "BTC falls about 9 % (from 28,500 to 25,000) within hours on 17 August; over 1 bn USD of futures "
        "liquidated, the most since FTX",
        "CoinDesk, 'No, Elon Musk's SpaceX isn't the cause of this multi-billion-dollar bitcoin bloodbath', "
        "2023-08-18, https://www.coindesk.com/markets/2023/08/18/no-spacex-isnt-the-cause-of-this-multi-billion-"
        "dollar-bitcoin-bloodbath/"),
    CrisisWindow(
        "tariff-crash-2025-10-10", "2025-10-10", "2025-10-14",
        "100 % US tariff on Chinese imports announced on 10 October; about 19 bn USD of leveraged positions "
        "liquidated in a day (CoinGlass), the largest liquidation on record",
        "'Crypto market crash on 10.10.2025: overview', 2025-10-11, "
        "https://paragraph.com/@web3r2/crypto-market-crash-on-10-10-2025-overview"),
)


def library() -> dict[str, CrisisWindow]:
    """The library by name."""
    return {w.name: w for w in CRISIS_WINDOWS}


def windows_named(names: Iterable[str], extra: Sequence[CrisisWindow] = ()) -> list[CrisisWindow]:
    """The windows of ``names`` from the library and ``extra`` (user windows), in the order given.

    Raises
    ------
    ShockError
        A name in neither, naming it (with the closest name) and the known names.
    """
    known = library() | {w.name: w for w in extra}
    out = []
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(str(n), list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ShockError(f"unknown crisis window {n!r}; {hint}known windows: {', '.join(known)} "
                             "(or add it as a [[stress.window]])")
        out.append(known[n])
    return out


def select_windows(windows: Sequence[CrisisWindow], first_ms: int, end_ms: int
                   ) -> tuple[list[CrisisWindow], list[dict]]:
    """Split ``windows`` into those the data ``[first_ms, end_ms)`` covers whole and the others.

    Returns
    -------
    (covered, skipped): skipped as ``{"name", "start_ms", "end_ms", "reason"}``, the reason
    naming both spans.
    """
    covered, skipped = [], []
    for w in windows:
        a, b = w.span_ms()
        if first_ms <= a and b <= end_ms:
            covered.append(w)
            continue
        where = ("before" if b <= first_ms else "after" if a >= end_ms else "only partly inside")
        skipped.append({"name": w.name, "start_ms": a, "end_ms": b,
                        "reason": f"{iso(a)} .. {iso(b)} is {where} the run's data ({iso(first_ms)} .. {iso(end_ms)})"})
    return covered, skipped


WINDOW_COLUMNS = ("result", "column", "col", "basis", "window", "start_ms", "end_ms", "bars", "return",
                  "max_drawdown", "liquidations", "margin_calls", "funding_net", "worst_bar_return", "worst_bar_ms")
# a window's values of the report (key -> readable header), in the table's order
WINDOW_METRICS = (("return", "Return"), ("max_drawdown", "Max drawdown"), ("liquidations", "Liquidations"),
                  ("margin_calls", "Margin calls"), ("funding_net", "Funding net"), ("worst_bar_return", "Worst bar"))
BASES = (("settle", "growth", "return"), ("usd", "growth_usd", "return_usd"))  # as named_periods.BASES


def window_frame(metrics: Mapping, series: pd.DataFrame, events: pd.DataFrame,
                 windows: Sequence[CrisisWindow]) -> pd.DataFrame:
    """Every window per result, column and basis (``stress_windows`` rows of ``stress.parquet``).

    Parameters
    ----------
    metrics : the ``metrics.json`` document (its ``results``: columns, ``settle.bar_ms``,
        ``bars_per_year``).
    series : the ``equity.parquet`` table (``growth``, ``return``, their ``_usd`` twins,
        ``cum_funding``, ``price_usd``).
    events : the ``events.parquet`` table (``liquidations`` and ``margin_calls`` rows).
    windows : the windows to measure; a result holding no bar of a window gets no row for it
        (a book on another span).

    Returns
    -------
    DataFrame with the columns :data:`WINDOW_COLUMNS`, one row per (window, result, column, basis).
    """
    # each column's pieces, one (m,) array a (window, result, basis), joined once at the end
    # (one small DataFrame a piece, then a concat, cost more than the window statistics)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in WINDOW_COLUMNS}
    for res_name, res in metrics["results"].items():
        labels = list(res["columns"])
        m = len(labels)
        bar_ms = int(res["settle"]["bar_ms"])
        ann = float(res["settle"]["bars_per_year"])
        ms, arrays = _columns_of(series, res_name, m, ("growth", "return", "growth_usd", "return_usd", "cum_funding",
                                                       "price_usd"))
        # the result's records, selected once (not once a window)
        liq_rec, call_rec = records_of(events, "liquidations", res_name), records_of(events, "margin_calls", res_name)
        for w in windows:
            a, b = w.span_ms()
            try:
                first, last, partial = bars_of(ms, bar_ms, w.name, a, b, res_name)
            except NamedPeriodError:
                continue
            if partial:
                continue  # the run's data covers the window (select_windows); a result on a shorter span does not
            liqs = records_in(liq_rec, first, last, m)
            calls = records_in(call_rec, first, last, m)
            for basis, gkey, rkey in BASES:
                to_basis = np.ones(len(ms)) if basis == "settle" else arrays["price_usd"][:, 0]
                st = window_stats(arrays[gkey], arrays[rkey], arrays["cum_funding"], to_basis, first, last, ann)
                r = arrays[rkey][first:last + 1]
                worst = np.argmin(r, axis=0)  # the first bar of the lowest return
                piece = {
                    "result": res_name, "column": np.asarray(labels, dtype=object), "col": np.arange(m, dtype=np.int32),
                    "basis": basis, "window": w.name, "start_ms": a, "end_ms": b, "bars": last - first + 1,
                    "return": st["return"], "max_drawdown": st["max_drawdown"], "liquidations": liqs,
                    "margin_calls": calls, "funding_net": st["funding_net"],
                    "worst_bar_return": r[worst, np.arange(m)], "worst_bar_ms": ms[first + worst]}
                for c in WINDOW_COLUMNS:
                    v = piece[c]
                    parts[c].append(np.full(m, v, dtype=object) if isinstance(v, str) else
                                    np.broadcast_to(np.asarray(v), (m,)))
    if not parts["result"]:
        out = pd.DataFrame({c: pd.Series([], dtype=object) for c in WINDOW_COLUMNS})
    else:
        out = pd.DataFrame({c: np.concatenate(parts[c]) for c in WINDOW_COLUMNS})
    for c in ("result", "column", "basis", "window"):
        out[c] = out[c].astype("string")
    for c in ("start_ms", "end_ms", "bars", "liquidations", "margin_calls", "worst_bar_ms"):
        out[c] = out[c].astype(np.int64)
    out["col"] = out["col"].astype(np.int32)
    for c in ("return", "max_drawdown", "funding_net", "worst_bar_return"):
        out[c] = out[c].astype(np.float64)
    return out
