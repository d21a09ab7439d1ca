"""Step 1 of a report: the raw numbers of every result, in the shape they are stored.

:class:`RunData` is exactly what the output folder holds (``metrics.json``, ``equity.parquet``,
``events.parquet``, ``config.json``), so a report built from fresh results and one rebuilt from
stored files go through the same build and render steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from backtest.metrics import COLUMN_KEYS, LOWER_IS_BETTER, METRIC_UNITS, column_labels, compute_metrics, index_ms
from backtest.metrics.compute import returns_and_drawdown
from backtest.report.attribution import attribution, is_book
from backtest.report.named_periods import check_periods, named_period_frame
from backtest.report.periods import period_frames
from backtest.report.trades import round_trips, trade_metrics
from backtest.result import SimResult

SCHEMA_VERSION = 1
SERIES_KEYS = ["result", "column", "col", "bar", "timestamp"]
EVENT_KEYS = ["result", "kind", "column", "col", "bar", "timestamp"]
DERIVED = ("return", "growth", "drawdown")

RANKABLE = tuple(k for k in COLUMN_KEYS if METRIC_UNITS[k] in
                 ("money", "fraction", "ratio", "bars", "days", "count", "leverage"))


class ReportError(ValueError):
    """Bad input to the report builder; the message names the value and the fix."""


# Keys of metrics.json that building a page reads (written by :func:`collect`), checked when a
# stored folder is loaded so a damaged file is refused by name instead of failing in the build.
STORED_KEYS = {
    "": ("schema_version", "title", "notes", "created_ms", "comparison", "results"),
    "comparison": ("rank_by", "order", "rows"),
    "result": ("kind", "currency", "columns", "series", "settle", "usd"),
    "basis": ("basis", "currency", "columns", "n_bars", "bar_ms", "bars_per_year", "start_ms", "end_ms"),
    "row": ("rank", "result", "column"),
}


@dataclass
class RunData:
    """Everything a report is built from (and everything that is stored).

    Attributes
    ----------
    metrics : the ``metrics.json`` document (see ``docs/reports.md``).
    series : long table, one row per (result, column, bar): ``equity.parquet``.
    events : long table, one row per record of any kind: ``events.parquet``.
    config : the resolved run configuration: ``config.json``.
    periods, drawdowns : returns by calendar year and month, and the worst drawdown spells, of
        every column in both bases (``periods.parquet``, ``drawdowns.parquet``); computed from
        ``series`` by :func:`backtest.report.periods.period_frames` when not given.
    named : the named periods of ``metrics['named_periods']`` per result, column and basis
        (``named_periods.parquet``); computed by
        :func:`backtest.report.named_periods.named_period_frame` when not given.
    trades : the round trips of every perpetual column (:func:`backtest.report.trades.round_trips`,
        with a ``result`` column; ``trades.parquet``), None when not computed (a folder written
        before round trips existed).
    sweep_oos : the stitched out-of-sample growth of a sweep with a split
        (:func:`backtest.runner.oos.stitched_frame`; ``oos_equity.parquet``), None otherwise.
    """

    metrics: dict
    series: pd.DataFrame
    events: pd.DataFrame
    config: dict
    periods: pd.DataFrame | None = None
    drawdowns: pd.DataFrame | None = None
    named: pd.DataFrame | None = None
    trades: pd.DataFrame | None = None
    sweep_oos: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self.period_tables()
        self.named_table()

    def named_table(self) -> pd.DataFrame:
        """The named periods' table, computed from ``series`` and ``events`` if a caller cleared it."""
        if self.named is None:
            self.named = named_period_frame(self.metrics, self.series, self.events)
        return self.named

    def period_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(periods, drawdowns), computed from ``series`` if a caller cleared them."""
        if self.periods is None or self.drawdowns is None:
            self.periods, self.drawdowns = period_frames(self.metrics, self.series)
        return self.periods, self.drawdowns


def jsonable(obj: Any) -> Any:
    """A strict-JSON copy: numpy values to Python, non-finite floats to None, unknown objects to str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return str(obj)


def _find_key(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


THRESHOLD_KEYS = ("margin_call_threshold", "call_threshold")


def margin_call_threshold(result: SimResult) -> list[float] | None:
    """Per-column margin-call threshold found anywhere in ``result.meta`` under the key
    ``margin_call_threshold`` or ``call_threshold`` (scalar or one value per column); None when
    not stated."""
    raw = next((v for k in THRESHOLD_KEYS if (v := _find_key(result.meta, k)) is not None), None)
    if raw is None:
        return None
    arr = np.atleast_1d(np.asarray(raw, dtype=np.float64))
    if arr.shape[0] not in (1, result.n_cols):
        return None
    return [float(x) for x in np.broadcast_to(arr, (result.n_cols,))]


PRICE_SERIES = ("price", "mark_close", "mark", "close")


def price_line(result: SimResult) -> tuple[np.ndarray | None, str | None]:
    """The underlying's price per bar for the price plot, and where it came from.

    First found: the result's ``underlying`` price; a series ``price``/``mark_close``/``mark``/``close`` (first column);
    ``price_usd`` when it is not constant 1 (coin-settled results: the coin's USD price); for
    perps and puts ``|notional / position| / meta['contract_size']`` (default contract size 1)
    from the first column holding a position at each bar (NaN where every column is flat).
    """
    if getattr(result, "underlying", None) is not None:
        return np.asarray(result.underlying, dtype=np.float64), "underlying (mark close)"
    for key in PRICE_SERIES:
        if key in result.series:
            return np.asarray(result.series[key][:, 0], dtype=np.float64), f"series {key!r}"
    pu = np.asarray(result.price_usd, dtype=np.float64)
    if np.any(np.abs(pu - 1.0) > 1e-12):
        return pu, "price_usd"
    if result.kind in ("perp", "put"):
        pos = np.nan_to_num(np.asarray(result.series["position"], dtype=np.float64))
        notional = np.asarray(result.series["notional"], dtype=np.float64)
        held = pos != 0
        if held.any():
            first = np.argmax(held, axis=1)
            rows = np.arange(result.n_bars)
            cs = float(result.meta.get("contract_size", 1.0) or 1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                px = np.abs(notional[rows, first] / pos[rows, first]) / cs
            px[~held.any(axis=1)] = np.nan
            return px, "|notional / position| / contract_size"
    return None, None


def _series_frame(name: str, result: SimResult, labels: list[str]) -> pd.DataFrame:
    n, m = result.n_bars, result.n_cols
    ts = index_ms(result.index)
    cols = {
        "result": np.full(n * m, name, dtype=object),
        "column": np.repeat(np.asarray(labels, dtype=object), n),
        "col": np.repeat(np.arange(m, dtype=np.int32), n),
        "bar": np.tile(np.arange(n, dtype=np.int32), m),
        "timestamp": np.tile(ts, m),
        "price_usd": np.tile(np.asarray(result.price_usd, dtype=np.float64), m),
    }
    px, _ = price_line(result)
    cols["underlying_price"] = np.tile(px if px is not None else np.full(n, np.nan), m)
    # column-major flattening: all bars of column 0, then column 1, ...
    for key in sorted(result.series):
        cols[key] = np.asarray(result.series[key], dtype=np.float64).T.reshape(-1)
    for basis, suffix in (("settle", ""), ("usd", "_usd")):
        rd = returns_and_drawdown(result, basis)
        for key in DERIVED:
            cols[key + suffix] = rd[{"return": "returns"}.get(key, key)].T.reshape(-1)
    df = pd.DataFrame(cols)
    df["result"] = df["result"].astype("string")
    df["column"] = df["column"].astype("string")
    return df


def _field_value(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8")
    return arr


def _events_frame(name: str, result: SimResult, labels: list[str]) -> pd.DataFrame:
    ts = index_ms(result.index)
    frames = []
    for kind in sorted(result.records):
        rec = result.records[kind]
        bar = np.asarray(rec["bar"], dtype=np.int64)
        col = np.asarray(rec["col"], dtype=np.int64)
        data: dict[str, Any] = {
            "result": [name] * len(rec), "kind": [kind] * len(rec),
            "column": [labels[c] for c in col], "col": col, "bar": bar, "timestamp": ts[bar],
        }
        for field in rec.dtype.names or ():
            if field in ("bar", "col"):
                continue
            out = field if field not in data else f"{field}_field"
            data[out] = _field_value(rec[field])
        frames.append(pd.DataFrame(data))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({
        "result": pd.Series([], dtype="string"), "kind": pd.Series([], dtype="string"),
        "column": pd.Series([], dtype="string"), "col": pd.Series([], dtype=np.int64),
        "bar": pd.Series([], dtype=np.int64), "timestamp": pd.Series([], dtype=np.int64)})


def baseline_columns(res: dict) -> list[str]:
    """The baseline columns of a result (its ``metrics.json`` entry): every column when the
    result's ``meta`` has ``baseline: true``, the labels listed when it is a list, else none."""
    flag = (res.get("meta") or {}).get("baseline")
    if flag is True:
        return list(res["columns"])
    if isinstance(flag, list):
        return [c for c in res["columns"] if c in set(flag)]
    return []


def rank(results_doc: dict, rank_by: str) -> list[dict]:
    """Rank every (result, column) by the USD metric ``rank_by``: surviving columns before ruined
    ones, then by the value (null values last), ties by USD total return (higher first), then by
    result and column order.

    Baseline columns (:func:`baseline_columns`) take their place in that order but no rank
    number (``rank`` None, ``baseline`` True): the ranks 1, 2, ... count the other columns only,
    so a baseline is never the best of a comparison."""
    lower = rank_by in LOWER_IS_BETTER
    rows = []
    order = 0
    for name, res in results_doc.items():
        base = set(baseline_columns(res))
        for label, m in res["usd"]["columns"].items():
            rows.append({"result": name, "column": label, "value": m.get(rank_by),
                         "_tie": m.get("total_return"), "_ruined": m.get("ruined"), "_order": order,
                         "_base": label in base})
            order += 1

    def key(r: dict) -> tuple:
        # a ruined column ranks after every surviving one, whatever the metric: stopped early, it
        # pays no more fees or funding and holds no leverage, which would otherwise look best
        v, t = r["value"], r["_tie"]
        return (bool(r["_ruined"]), v is None, (v if lower else -v) if v is not None else 0.0,
                -t if t is not None else math.inf, r["_order"])

    rows.sort(key=key)
    out, n = [], 0
    for r in rows:
        if not r["_base"]:
            n += 1
        out.append({"rank": None if r["_base"] else n, "result": r["result"], "column": r["column"],
                    "value": r["value"], "baseline": r["_base"]})
    return out


def collect(results: Mapping[str, Any], *, title: str, config: Mapping | None = None,
            notes: str = "", rank_by: str = "calmar", periods: Sequence = ()) -> RunData:
    """Compute the raw numbers of a report (step 1 of 4).

    Parameters
    ----------
    results : report name -> simulation result; several results are compared side by side
        (in USD). A book (anything with ``to_sim_result()``, ``positions`` and ``symbols``: the
        book engine's result, the runner's ``BookRun``) is reported from its SimResult, plus an
        ``attribution`` block per instrument (:func:`backtest.report.attribution.attribution`).
    title, notes : shown at the top of the report.
    config : the resolved run configuration (stored as ``config.json``).
    rank_by : per-column metric key (USD basis) that ranks the comparison table; one of
        :data:`RANKABLE`. Keys in :data:`LOWER_IS_BETTER` rank ascending, others descending.
        Baseline columns (``meta['baseline']``) are ranked without a rank number (:func:`rank`).
    periods : named periods ``(name, start_ms, end_ms)`` (int ms UTC, end exclusive), each
        measured per result and column (:mod:`backtest.report.named_periods`); stored in
        ``metrics.json`` as ``named_periods`` and measured in ``named_periods.parquet``.
    """
    if not isinstance(results, Mapping) or not results:
        raise ReportError("results must be a non-empty mapping name -> SimResult")
    if rank_by not in RANKABLE:
        raise ReportError(f"rank_by={rank_by!r} is not a rankable metric; use one of {list(RANKABLE)}")
    try:
        named = check_periods(periods)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    docs: dict[str, Any] = {}
    series, events = [], []
    trade_frames: list[pd.DataFrame] = []
    for name, given in results.items():
        if not isinstance(name, str) or not name:
            raise ReportError(f"result name {name!r} must be a non-empty string")
        res = given.to_sim_result() if is_book(given) else given
        if not isinstance(res, SimResult):
            raise ReportError(f"results[{name!r}] is a {type(res).__name__}, expected a SimResult")
        labels = column_labels(res)
        docs[name] = {
            "kind": res.kind,
            "currency": res.currency,
            "columns": labels,
            "initial_capital": dict(zip(labels, jsonable(np.asarray(res.initial_capital, dtype=float)))),
            "series": sorted(res.series),
            "records": sorted(res.records),
            "margin_call_threshold": margin_call_threshold(res),
            "price_source": price_line(res)[1],
            "meta": jsonable(res.meta),
            "settle": compute_metrics(res, currency="settle"),
            "usd": compute_metrics(res, currency="usd"),
        }
        if is_book(given):
            docs[name]["attribution"] = attribution(given.positions, given.symbols, labels, res.currency)
        if res.kind == "perp" and res.underlying is not None:
            trips = round_trips(res)
            docs[name]["trades"] = trade_metrics(trips, labels)
            trips.insert(0, "result", name)
            trade_frames.append(trips)
        series.append(_series_frame(name, res, labels))
        events.append(_events_frame(name, res, labels))
    ev = pd.concat([e for e in events if len(e.columns)], ignore_index=True) \
        if any(len(e.columns) for e in events) else _empty_events()
    for key in ("result", "kind", "column"):
        ev[key] = ev[key].astype("string")
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "title": str(title),
        "notes": str(notes or ""),
        "created_ms": int(time.time() * 1000),
        "comparison": {
            "rank_by": rank_by,
            "order": "ascending" if rank_by in LOWER_IS_BETTER else "descending",
            "basis": "usd",
            "rows": rank(docs, rank_by),
        },
        "results": docs,
        "named_periods": [{"name": n, "start_ms": a, "end_ms": b} for n, a, b in named],
    }
    # a named period holding no bar of a result raises NamedPeriodError (a ValueError) here
    trades = pd.concat(trade_frames, ignore_index=True) if trade_frames else None
    return RunData(metrics=metrics, series=pd.concat(series, ignore_index=True), events=ev,
                   config=jsonable(dict(config or {})), trades=trades)
