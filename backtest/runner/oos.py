"""Out of sample: walk-forward and train/test splits of a sweep.

Each fold has an in-sample (IS) span and the out-of-sample (OOS) span right after it. Every
column is simulated **once over the whole data** (in its chunk, as any sweep); its metrics are
then measured on each span (:func:`span_metrics`). Per fold the columns are ranked on the IS
span alone (the report's rule: surviving columns first, then the metric, nulls last, ties by
total return, then grid order) and the best ``oos_columns`` are reported on the OOS span.

What an OOS span inherits (stated in the outputs): a column's OOS span starts with the state
its single simulation has at the split, i.e. its equity (the span's returns are measured from
the equity at the close of the last IS bar), its open position, margin and the strategy's
indicator history (warm-up); a column liquidated and stopped in the IS span stays so. Nothing
of the OOS span reaches the choice: the engine and the strategies are causal (a bar's target is
filled at the next bar's open, tests/strategies check the strategies for look-ahead), every IS
metric reads the bars of its span only, and the smallest tradable equity of the ``ruined`` rule
is taken at the span's own last mark price (tests/runner/test_sweep_oos.py changes every price
after a split and gets the same IS numbers and choices, bit for bit).

The stitched OOS equity chains, fold after fold, the OOS bar returns of the column chosen
in-sample for that fold (the best one): a growth index of "trade the IS winner on the next
span". When OOS spans overlap (``step < test``) a bar belongs to the earliest fold holding it.
It is a measure of the selection, not an account: each piece is a column's own simulation
continued, not a fresh account switched at the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from backtest.runner.chunks import ChunkOutput, ChunkStore, SweepTask
from backtest.runner.config import ConfigError

# Metrics measured on every span of every column (USD basis, the ranking's), plus the ranking
# metric when it is not one of them: enough to compare IS and OOS without a row of every metric
# for every column and fold (a 100,000-column sweep of 10 folds holds 2,000,000 span rows).
SPAN_KEYS = ("total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown", "ruined")
CUMULATIVE = ("cum_funding", "cum_fees", "capital_added", "premium_paid")
GREEKS = ("delta", "gamma", "vega", "theta")
INHERITS = ("each OOS span continues the column's single simulation: it starts with the equity, position, margin and "
            "indicator history of the column at the split; its returns are measured from the equity at the close of "
            "the last in-sample bar")


def parse_duration(text: Any, where: str) -> int:
    """Milliseconds of a duration such as ``"180d"``, ``"12w"``, ``"36h"`` (units s, m, h, d, w).

    Raises
    ------
    ValueError
        Naming ``where``, the value and the form expected.
    """
    from backtest.data.timeutil import parse_timeframe

    if isinstance(text, str) and text and text[-1] in "smhdw":
        try:
            return parse_timeframe(text)
        except ValueError:
            pass
    raise ValueError(f"{where}={text!r} is not a duration; write a whole number and a unit s, m, h, d or w, "
                     "e.g. '180d' or '12w'")


@dataclass(frozen=True)
class Fold:
    """One fold: bars ``is_first .. is_end - 1`` in sample, ``oos_first .. oos_end - 1`` out of
    sample (positions in the run's bars; ``oos_first == is_end``)."""

    index: int
    is_first: int
    is_end: int
    oos_first: int
    oos_end: int


def make_folds(open_ms: np.ndarray, bar_ms: int, sweep: Any) -> list[Fold]:
    """The folds of ``sweep`` (a ``SweepConfig`` with ``split`` set) on bars opening at ``open_ms``.

    * ``walk_forward``: fold k's IS span starts ``k x step`` after the first bar (the first bar
      itself when ``anchored``) and lasts ``train`` (from its start); its OOS span is the ``test``
      after it. Only folds whose OOS span ends within the data are made.
    * ``train_test``: one fold, IS from the first bar to ``split_at`` (a date/time: the first bar
      opening at or after it; a fraction: that share of the bars, rounded), OOS to the end.

    A bar belongs to a span when its open time is in ``[start, end)``.

    Raises
    ------
    ConfigError
        No fold fits the data, or a span would hold fewer than 2 bars (the message gives the
        data's range and the lengths asked for).
    """
    from backtest.data.timeutil import iso, parse_time

    open_ms = np.asarray(open_ms, dtype=np.int64)
    n = len(open_ms)
    first, end = int(open_ms[0]), int(open_ms[-1]) + int(bar_ms)

    def at(ms: int) -> int:
        return int(np.searchsorted(open_ms, ms, side="left"))

    folds: list[Fold] = []
    if sweep.split == "train_test":
        v = sweep.split_at
        cut = int(round(v * n)) if isinstance(v, float) else at(parse_time(v))
        folds.append(Fold(0, 0, cut, cut, n))
        where = f"sweep.split_at={v!r}"
    else:
        train = parse_duration(sweep.train, "sweep.train")
        test = parse_duration(sweep.test, "sweep.test")
        step = parse_duration(sweep.step, "sweep.step") if sweep.step is not None else test
        k = 0
        while True:
            start = first + k * step
            split = start + train
            if split + test > end:
                break
            a = 0 if sweep.anchored else at(start)
            folds.append(Fold(k, a, at(split), at(split), at(split + test)))
            k += 1
        where = f"sweep.train={sweep.train!r}, test={sweep.test!r}"
        if not folds:
            raise ConfigError(f"{where}: no fold fits the data ({iso(first)} .. {iso(end)}): train + test is longer "
                              "than the data; shorten them or load more data")
    for f in folds:
        if f.is_end - f.is_first < 2 or f.oos_end - f.oos_first < 2:
            raise ConfigError(f"{where}: fold {f.index} would hold {f.is_end - f.is_first} in-sample and "
                              f"{f.oos_end - f.oos_first} out-of-sample bars of the data ({iso(first)} .. {iso(end)}); "
                              "each span needs at least 2: move the split or lengthen the spans")
    return folds


def span_result(result: Any, first: int, end: int, basis: str, spec: Any = None) -> Any:
    """``result`` restricted to bars ``first .. end - 1``, as a run that starts at the split.

    Series are sliced; the cumulative ones (funding, fees, capital added, premium) count from 0
    before the span; records are those of the span's bars (bars re-numbered). The span's
    initial capital is the equity at the close of bar ``first - 1`` (the run's initial capital
    for ``first == 0``), chosen so that :func:`backtest.metrics.compute_metrics` on ``basis``
    measures the span's first return from that equity (USD: ``equity_usd[first - 1]``). The
    smallest tradable equity (``meta['min_equity_usd']``, the ``ruined`` rule) is rescaled with
    the market ``spec`` to the mark price of the span's last bar, so an IS span reads no later
    price (without ``spec`` it is kept: the run's last bar).
    """
    from backtest.result import SimResult

    n = result.n_bars
    if not (0 <= first < end <= n):
        raise ValueError(f"span {first}..{end} is not inside the result's {n} bars")
    ser = result.series
    names = [k for k in ser if k in ("equity", "equity_usd", "position", "notional", "leverage", *CUMULATIVE, *GREEKS)]
    series: dict[str, np.ndarray] = {}
    for k in names:
        a = np.asarray(ser[k], dtype=np.float64)
        part = a[first:end]
        if k in CUMULATIVE and first > 0:
            part = np.nan_to_num(part, nan=0.0) - np.nan_to_num(a[first - 1], nan=0.0)[None, :]
        series[k] = np.ascontiguousarray(part)
    price = np.asarray(result.price_usd, dtype=np.float64)
    if first == 0:
        initial = np.asarray(result.initial_capital, dtype=np.float64)
    elif basis == "usd":
        initial = np.asarray(ser["equity_usd"], dtype=np.float64)[first - 1] / price[first]
    else:
        initial = np.asarray(ser["equity"], dtype=np.float64)[first - 1]
    records = {}
    for k, r in result.records.items():
        keep = r[(r["bar"] >= first) & (r["bar"] < end)].copy()
        keep["bar"] -= first
        records[k] = keep
    meta = dict(result.meta)
    mins = meta.get("min_equity_usd")
    if mins is not None and spec is not None and result.underlying is not None and end < n:
        # min_equity_usd = min_order_usd(last mark) / leverage (the engine's rule): the same at
        # the span's last mark
        u = np.asarray(result.underlying, dtype=np.float64)
        meta["min_equity_usd"] = (np.asarray(mins, dtype=np.float64) * spec.min_order_usd(float(u[end - 1]))
                                  / spec.min_order_usd(float(u[-1]))).tolist()
    return SimResult(kind=result.kind, currency=result.currency, index=result.index[first:end], columns=result.columns,
                     series=series, records=records, price_usd=price[first:end],
                     initial_capital=np.broadcast_to(initial, (result.n_cols,)).copy(), meta=meta,
                     underlying=None if result.underlying is None else np.asarray(result.underlying)[first:end])


def span_keys(metric: str) -> tuple[str, ...]:
    return SPAN_KEYS if metric in SPAN_KEYS else SPAN_KEYS + (metric,)


def span_metrics(result: Any, first: int, end: int, keys: Sequence[str], spec: Any = None) -> dict[str, list]:
    """USD metrics ``keys`` of every column on bars ``first .. end - 1`` (:func:`span_result`),
    as lists over the columns (None: undefined). ``spec`` (the market) rescales the ``ruined``
    rule's smallest tradable equity to the span's last mark price."""
    from backtest.metrics import compute_metrics

    doc = compute_metrics(span_result(result, first, end, "usd", spec), currency="usd")
    rows = list(doc["columns"].values())
    return {k: [r.get(k) for r in rows] for k in keys}


# ---------------------------------------------------------------------------------------------
# the sweep's chunks with their spans


@dataclass(frozen=True)
class OosTask:
    """A sweep's :class:`~backtest.runner.chunks.SweepTask` and its folds; what every chunk needs."""

    task: SweepTask
    folds: tuple[Fold, ...]
    keys: tuple[str, ...]


@dataclass
class OosChunkOutput(ChunkOutput):
    """A chunk's metrics (as any sweep's) plus ``spans``: one row per (fold, span, column)."""

    spans: pd.DataFrame | None = None


def _span_dtype(key: str) -> str:
    from backtest.runner.chunks import _dtype

    return _dtype(key)


def spans_frame(result: Any, cols: np.ndarray, folds: Sequence[Fold], keys: Sequence[str], spec: Any,
                open_ms: np.ndarray, bar_ms: int) -> pd.DataFrame:
    """Every column's ``keys`` on the IS and OOS span of every fold (long table, USD)."""
    parts = []
    labels = pd.array([str(c) for c in result.columns], dtype="string")
    for f in folds:
        for span, a, b in (("is", f.is_first, f.is_end), ("oos", f.oos_first, f.oos_end)):
            vals = span_metrics(result, a, b, keys, spec)
            part = {"fold": np.full(len(cols), f.index, dtype=np.int64), "span": span,
                    "start_ms": np.full(len(cols), int(open_ms[a]), dtype=np.int64),
                    "end_ms": np.full(len(cols), int(open_ms[b - 1]) + bar_ms, dtype=np.int64),
                    "bars": np.full(len(cols), b - a, dtype=np.int64),
                    "col": np.asarray(cols, dtype=np.int64), "column": labels}
            for k in keys:
                part[k] = pd.array(vals[k], dtype=_span_dtype(k))
            parts.append(pd.DataFrame(part))
    out = pd.concat(parts, ignore_index=True)
    out["span"] = out["span"].astype("string")
    return out


def run_oos_chunk(shared: OosTask, bounds: tuple[int, int]) -> OosChunkOutput:
    """One chunk: the sweep's chunk work (:func:`backtest.runner.chunks.run_chunk`'s metrics of
    the whole span) and the span metrics of every fold, from one simulation."""
    from backtest.metrics import index_ms, infer_bar_ms
    from backtest.runner.chunks import metrics_frame, simulate_columns

    task = shared.task
    c0, c1 = bounds
    cols = np.arange(c0, c1, dtype=np.int64)
    res = simulate_columns(task, cols)
    frame = metrics_frame(res, cols)
    equity = pd.DataFrame(np.array(res.series["equity"]), columns=list(res.columns)) if task.full_equity else None
    spans = spans_frame(res, cols, shared.folds, shared.keys, task.spec, index_ms(res.index),
                        infer_bar_ms(res.index, res.meta))
    return OosChunkOutput(metrics=frame, equity=equity, spans=spans)


class OosChunkStore(ChunkStore):
    """:class:`~backtest.runner.chunks.ChunkStore` that also keeps each chunk's span metrics
    (``spans-<c0>-<c1>.parquet``, written before the metrics file that marks the chunk done)."""

    def has(self, bounds: tuple[int, int], equity: bool) -> bool:
        return super().has(bounds, equity) and self._name("spans", bounds).is_file()

    def save(self, bounds: tuple[int, int], out: ChunkOutput) -> None:
        spans = getattr(out, "spans", None)
        if spans is not None:
            self._write(self._name("spans", bounds), lambda tmp: spans.to_parquet(tmp, index=False))
        super().save(bounds, out)

    def spans(self, bounds: tuple[int, int]) -> pd.DataFrame:
        return pd.read_parquet(self._name("spans", bounds))


# ---------------------------------------------------------------------------------------------
# choosing in sample, reporting out of sample


def choose(spans: pd.DataFrame, name: str, metric: str, top: int) -> pd.DataFrame:
    """Per fold, the ``top`` best columns of the IS span (the report's ranking rule), with their
    IS and OOS metrics side by side.

    Parameters
    ----------
    spans : the span table (:func:`spans_frame` of every chunk).
    name : the swept result; metric : the ranking metric; top : columns kept per fold.

    Returns
    -------
    DataFrame, one row per (fold, IS rank): ``fold``, ``is_rank``, ``col``, ``column``, the spans'
    ``is_start``, ``is_end``, ``oos_start``, ``oos_end`` (ms), then ``is.<key>`` and ``oos.<key>``
    for every span key. The OOS values take no part in the choice.
    """
    from backtest.runner.sweep import ranked_order

    keys = [c for c in spans.columns if c not in ("fold", "span", "start_ms", "end_ms", "bars", "col", "column")]
    rows = []
    for fold, part in spans.groupby("fold", sort=True):
        ins = part[part["span"] == "is"].sort_values("col").reset_index(drop=True)
        oos = part[part["span"] == "oos"].set_index("col")
        order = ranked_order(ins, name, metric)[:top]
        by_label = {lab: i for i, lab in enumerate(ins["column"].tolist())}
        for r in order:
            i = by_label[r["column"]]
            col = int(ins.at[i, "col"])
            row: dict[str, Any] = {"fold": int(fold), "is_rank": int(r["rank"]), "col": col, "column": r["column"],
                                   "is_start": int(ins.at[i, "start_ms"]), "is_end": int(ins.at[i, "end_ms"]),
                                   "oos_start": int(oos.at[col, "start_ms"]), "oos_end": int(oos.at[col, "end_ms"])}
            for k in keys:
                row[f"is.{k}"] = ins.at[i, k]
                row[f"oos.{k}"] = oos.at[col, k]
            rows.append(row)
    return pd.DataFrame(rows)


def stitched_growth(returns: np.ndarray, cols: Sequence[int], folds: Sequence[Fold]) -> tuple[np.ndarray, np.ndarray]:
    """The stitched OOS growth index of the chosen columns.

    Parameters
    ----------
    returns : float64 (n_bars, k), USD bar returns of the chosen columns.
    cols : for each fold, the position in ``returns`` of the column chosen for it.
    folds : the folds.

    Returns
    -------
    (bars (m,), growth (m,)): the OOS bars covered (each once: the earliest fold holding it) and
    the growth index after each, chaining ``1 + r`` of each bar's fold's column from 1.
    """
    bars, rets = [], []
    done = -1
    for f, c in zip(folds, cols):
        a = max(f.oos_first, done + 1)
        if a >= f.oos_end:
            continue
        bars.append(np.arange(a, f.oos_end))
        rets.append(returns[a:f.oos_end, c])
        done = f.oos_end - 1
    b = np.concatenate(bars) if bars else np.zeros(0, np.int64)
    r = np.concatenate(rets) if rets else np.zeros(0)
    return b, np.cumprod(1.0 + r)


def _plain(v: Any) -> Any:
    if v is pd.NA or v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def oos_block(chosen: pd.DataFrame, folds: Sequence[Fold], sweep: Any, metric: str, stitched_return: float | None,
              stitched_bars: int, hindsight: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``sweep.oos`` block of ``metrics.json``: the split, the folds with their chosen
    columns (IS and OOS values of the ranking metric, the total return and the max drawdown),
    the stitched OOS return, the hindsight comparison and what an OOS span inherits.

    ``hindsight``: the best column of the whole data (ranked with every bar known) on the
    stitched bars: ``{"column": label, "col": position, "return": its compounded return over
    the stitched OOS bars}`` (:func:`hindsight_growth`); the flattering number the stitched OOS
    return is read against."""
    from backtest.data.timeutil import iso

    out_folds = []
    for f in folds:
        part = chosen[chosen["fold"] == f.index]
        if not len(part):
            continue
        first = part.iloc[0]
        out_folds.append({
            "fold": f.index, "is_start": iso(int(first["is_start"])), "is_end": iso(int(first["is_end"])),
            "oos_start": iso(int(first["oos_start"])), "oos_end": iso(int(first["oos_end"])),
            "is_bars": f.is_end - f.is_first, "oos_bars": f.oos_end - f.oos_first,
            "chosen": [{"is_rank": int(r["is_rank"]), "column": r["column"], "col": int(r["col"]),
                        f"is_{metric}": _plain(r[f"is.{metric}"]), f"oos_{metric}": _plain(r[f"oos.{metric}"]),
                        "is_total_return": _plain(r["is.total_return"]),
                        "oos_total_return": _plain(r["oos.total_return"]),
                        "is_max_drawdown": _plain(r["is.max_drawdown"]),
                        "oos_max_drawdown": _plain(r["oos.max_drawdown"])} for _, r in part.iterrows()]})
    best = chosen[chosen["is_rank"] == 1]
    isv = pd.to_numeric(best[f"is.{metric}"], errors="coerce").astype(float)
    oosv = pd.to_numeric(best[f"oos.{metric}"], errors="coerce").astype(float)
    return {
        "split": sweep.split, "train": sweep.train, "test": sweep.test,
        "step": sweep.step if sweep.step is not None else sweep.test, "anchored": sweep.anchored,
        "split_at": sweep.split_at, "oos_columns": sweep.oos_columns, "metric": metric,
        "folds": out_folds,
        "best_is_median": _plain(float(isv.median())) if isv.notna().any() else None,
        "best_oos_median": _plain(float(oosv.median())) if oosv.notna().any() else None,
        "stitched_oos_return": stitched_return, "stitched_oos_bars": stitched_bars,
        "hindsight": hindsight,
        "inherits": INHERITS,
        "files": {"spans": "sweep_folds.parquet", "chosen": "sweep_oos.csv", "stitched": "oos_equity.parquet"},
    }


def hindsight_growth(returns: np.ndarray, bars: np.ndarray) -> np.ndarray:
    """The growth index of one column over the stitched OOS ``bars`` (from 1 before the first):
    chaining ``1 + r`` of its own bar returns ``returns`` (n_bars,) on the same bars as
    :func:`stitched_growth`, so the two lines are measured alike."""
    return np.cumprod(1.0 + np.asarray(returns, dtype=np.float64)[np.asarray(bars, dtype=np.int64)])


def stitched_frame(index: pd.DatetimeIndex, bars: np.ndarray, growth: np.ndarray, fold_of: np.ndarray,
                   labels: Sequence[str], hindsight: np.ndarray | None = None) -> pd.DataFrame:
    """``oos_equity.parquet``: ``timestamp`` (bar open), ``fold``, ``column`` (the chosen one),
    ``growth`` (the stitched index after the bar) and ``hindsight_growth`` (the whole data's
    best column on the same bars, :func:`hindsight_growth`; NaN when not given)."""
    hs = np.full(len(bars), np.nan) if hindsight is None else np.asarray(hindsight, dtype=np.float64)
    return pd.DataFrame({"timestamp": index[bars], "fold": fold_of.astype(np.int64),
                         "column": pd.array(list(labels), dtype="string"), "growth": growth,
                         "hindsight_growth": hs})
