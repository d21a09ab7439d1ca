"""Sweep summary: a ranked table and a heatmap of a metric by two grid levels.

Both are built from the metrics the report stores (USD basis, the basis of the report's
comparison), so ``sweep.csv`` and ``metrics.json`` never disagree.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from backtest.runner.checks import sweep_target
from backtest.runner.config import SYMBOL_AXIS, ConfigError, RunConfig
from backtest.runner.labels import format_value

SHOWN = ("total_return", "max_drawdown", "sharpe", "calmar")  # printed next to the ranked metric


def _check_metric(metric: str) -> None:
    from backtest.report import RANKABLE

    if metric not in RANKABLE:
        close = difflib.get_close_matches(metric, RANKABLE, n=1)
        raise ConfigError(f"sweep.metric: {metric!r} is not a rankable metric"
                          + (f" (did you mean {close[0]!r}?)" if close else f"; choose one of {', '.join(RANKABLE)}"))


def sweep_table(metrics: Mapping[str, Any], name: str, levels: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every column of result ``name`` with its grid levels and USD metrics, best first.

    Parameters
    ----------
    metrics : the ``metrics.json`` document of the run.
    name : the swept simulation.
    levels : its level frame (index = column labels, one column per grid level).
    metric : rankable USD metric; order as in the report (``LOWER_IS_BETTER`` keys ascending),
        null values last, ties by total return, then column order.

    Returns
    -------
    DataFrame with ``rank``, ``column`` (the label), ``col`` (its position in the simulation, as
    in ``equity.parquet``), one column per level, then every scalar metric.
    """
    from backtest.report.collect import rank

    _check_metric(metric)
    doc = metrics["results"][name]
    order = rank({name: doc}, metric)
    cols = doc["usd"]["columns"]
    position = {lab: i for i, lab in enumerate(levels.index)}
    rows = []
    for r in order:
        label = r["column"]
        scalars = {k: v for k, v in cols[label].items() if not isinstance(v, (dict, list))}
        rows.append({"rank": r["rank"], "column": label, "col": position[label], **levels.loc[label].to_dict(),
                     **scalars})
    return pd.DataFrame(rows)


HEATMAP_STATS = ("median", "mean", "best", "worst", "max", "min")


def heatmap_grid(table: pd.DataFrame, x: str, y: str, metric: str, stat: str = "median") -> pd.DataFrame:
    """``metric`` by ``y`` (rows) and ``x`` (columns), one cell per (x, y) pair in the table,
    in the order the values first appear in the grid.

    When other levels vary too, a cell holds ``stat`` of the metric over the columns with that
    (x, y) (the levels not on the axes): ``"median"`` (the default: what a choice of x and y gives
    whatever the rest), ``"mean"``, ``"best"`` / ``"worst"`` (max or min, reversed for metrics where
    lower is better), ``"max"``, ``"min"``. Null values are left out; a cell with none is null.
    """
    from backtest.report.collect import LOWER_IS_BETTER

    if stat not in HEATMAP_STATS:
        raise ConfigError(f"sweep.heatmap_stat: {stat!r} is not one of {list(HEATMAP_STATS)}")
    for axis, level in (("x", x), ("y", y)):
        if level not in table.columns:
            raise ConfigError(f"sweep.{axis}: {level!r} is not a column of the sweep table")
    grid_order = table.sort_values("col", kind="stable")
    vals = pd.to_numeric(grid_order[metric], errors="coerce").astype(float)
    frame = pd.DataFrame({"x": grid_order[x].to_numpy(), "y": grid_order[y].to_numpy(), "v": vals.to_numpy()})
    cells = frame.groupby(["y", "x"], sort=False, dropna=False)["v"]
    lower = metric in LOWER_IS_BETTER
    how = {"best": "min" if lower else "max", "worst": "max" if lower else "min"}.get(stat, stat)
    agg = getattr(cells, how)()  # pandas skips NaN; all NaN -> NaN
    xs = list(dict.fromkeys(frame["x"]))
    ys = list(dict.fromkeys(frame["y"]))
    return agg.unstack("x").reindex(index=ys, columns=xs)


def _signed(metric: str) -> bool:
    """Whether ``metric`` takes either sign (returns, ratios, money), so its colour scale is
    centred on 0; a lower-is-better metric (drawdowns, counts) is >= 0 and uses its range."""
    from backtest.metrics import METRIC_UNITS

    return METRIC_UNITS.get(metric) in ("fraction", "ratio", "money") and not _lower_is_better(metric)


def cell_count(table: pd.DataFrame, x: str, y: str) -> int:
    """Columns behind each heatmap cell (the grid is a product: the same for every cell)."""
    return int(len(table) // max(1, table[[x, y]].drop_duplicates().shape[0]))


def heatmap_title(title: str, metric: str, x: str, y: str, stat: str, per_cell: int) -> str:
    """The heatmap's title: the metric, its axes and what a cell holds."""
    what = (f"{stat} over the {per_cell} columns of each cell (levels not on the axes)" if per_cell > 1
            else "one column per cell")
    return f"{title}: {metric} (USD) by {x} and {y}; {what}"


def heatmap_html(grid: pd.DataFrame, x: str, y: str, metric: str, title: str, subtitle: str | None = None) -> str:
    """A self-contained HTML page with one plotly heatmap of ``grid`` (from :func:`heatmap_grid`);
    ``subtitle`` (:func:`heatmap_title`) replaces the default title when given."""
    import plotly.graph_objects as go

    # nested lists (not arrays) so the page holds plain JSON numbers; NaN -> null (an empty cell)
    z = [[None if math.isnan(v) else float(v) for v in row] for row in grid.to_numpy(dtype=float)]
    fig = go.Figure(go.Heatmap(z=z, x=[format_value(c) for c in grid.columns],
                               y=[format_value(i) for i in grid.index],
                               colorscale="RdYlGn", reversescale=_lower_is_better(metric),  # green = good
                               zmid=0.0 if _signed(metric) else None,  # a loss red, a gain green, 0 yellow
                               colorbar={"title": {"text": metric}}, texttemplate="%{z:.3g}",
                               hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric}=%{{z:.4g}}<extra></extra>"))
    # first grid value at the top, as in the ranked table and the config
    fig.update_layout(title=subtitle or f"{title}: {metric} (USD) by {x} and {y}", xaxis_title=x, yaxis_title=y,
                      xaxis={"type": "category"}, yaxis={"type": "category", "autorange": "reversed"})
    return fig.to_html(full_html=True, include_plotlyjs=True)


def _lower_is_better(metric: str) -> bool:
    from backtest.report.collect import LOWER_IS_BETTER

    return metric in LOWER_IS_BETTER


class SweepFiles:
    """The ``extras`` of :func:`backtest.runner.run.execute` for a sweep: ``sweep.csv`` (the
    ranked table) and ``heatmap.html``, built before anything is written. After the run,
    :attr:`table` holds the ranked table (for printing). ``html=False`` (``--no-html``) leaves
    ``heatmap.html`` out."""

    def __init__(self, cfg: RunConfig, html: bool = True) -> None:
        if cfg.sweep is None:
            raise ConfigError("a sweep needs a [sweep] table: x (a column level), y (default 'policy'), "
                              "metric (default 'sharpe')")
        self.cfg = cfg
        self.sweep = cfg.sweep
        self.target = sweep_target(cfg)
        self.table: pd.DataFrame | None = None
        self.html = html

    def __call__(self, run: Any, levels: dict[str, pd.DataFrame]) -> dict[str, str]:
        sw, name = self.sweep, self.target.name
        lv = levels[name]
        for axis, level in (("x", sw.x), ("y", sw.y)):
            if level not in lv.columns:
                raise ConfigError(f"sweep.{axis}: {level!r} is not a column level of [[perp]] {name!r}; "
                                  f"levels: {', '.join(lv.columns)}")
        table = sweep_table(run.metrics, name, lv, sw.metric)
        grid = heatmap_grid(table, sw.x, sw.y, sw.metric, sw.heatmap_stat)
        self.table = table
        files = {"sweep.csv": table.to_csv(index=False)}
        if self.html:
            files["heatmap.html"] = heatmap_html(grid, sw.x, sw.y, sw.metric, self.cfg.title, heatmap_title(
                self.cfg.title, sw.metric, sw.x, sw.y, sw.heatmap_stat, cell_count(table, sw.x, sw.y)))
        return files


def sweep_files(cfg: RunConfig, html: bool = True) -> SweepFiles:
    """:class:`SweepFiles` of ``cfg`` (:class:`ConfigError` without a ``[sweep]`` table)."""
    return SweepFiles(cfg, html)


def format_table(table: pd.DataFrame, metric: str, top: int) -> str:
    """The first ``top`` rows: rank, column label, the ranked metric and a few others."""
    keys = [metric] + [k for k in SHOWN if k != metric]
    return table[["rank", "column", *keys]].head(top).to_string(index=False)


def format_oos_table(chosen: pd.DataFrame, metric: str) -> str:
    """In sample vs out of sample, one row per fold: its OOS span, the column chosen in sample
    (IS rank 1) and its ranking metric, total return and max drawdown on both spans (the
    fractions in percent), for printing after the ranked table."""
    from backtest.data.timeutil import iso

    def pct(v: Any) -> str:
        return "" if v is None or v is pd.NA or v != v else f"{100 * float(v):.2f} %"

    def num(v: Any) -> str:
        return "" if v is None or v is pd.NA or v != v else f"{float(v):.4g}"

    rows = []
    for _, r in chosen[chosen["is_rank"] == 1].sort_values("fold").iterrows():
        rows.append({"fold": int(r["fold"]),
                     "out of sample": f"{iso(int(r['oos_start']))[:10]}..{iso(int(r['oos_end']))[:10]}",
                     "column": r["column"], f"IS {metric}": num(r[f"is.{metric}"]),
                     f"OOS {metric}": num(r[f"oos.{metric}"]), "IS return": pct(r["is.total_return"]),
                     "OOS return": pct(r["oos.total_return"]), "IS max DD": pct(r["is.max_drawdown"]),
                     "OOS max DD": pct(r["oos.max_drawdown"])})
    return "in sample vs out of sample (each fold's in-sample winner):\n" + pd.DataFrame(rows).to_string(index=False)


# ---------------------------------------------------------------------------------------------
# `backtest sweep`: the grid in chunks under a memory budget, resumable, on any executor


def ranked_order(table: pd.DataFrame, name: str, metric: str) -> list[dict]:
    """The report's ranking (:func:`backtest.report.collect.rank`: surviving columns first, then
    ``metric``, nulls last, ties by total return, then grid order) of the metrics table's rows."""
    from backtest.report.collect import rank

    _check_metric(metric)

    def plain(values: pd.Series) -> list:
        return [None if v is pd.NA else (v.item() if hasattr(v, "item") else v) for v in values.astype(object)]

    cols = {lab: {metric: m, "total_return": t, "ruined": r} for lab, m, t, r in zip(
        table["column"].tolist(), plain(table[metric]), plain(table["total_return"]), plain(table["ruined"]))}
    return rank({name: {"usd": {"columns": cols}}}, metric)


def ranked_table(table: pd.DataFrame, levels: pd.DataFrame, name: str, metric: str) -> pd.DataFrame:
    """``sweep.csv``: every column best first, as :func:`sweep_table` (``rank``, ``column``,
    ``col``, the levels, every USD scalar metric), from the chunked sweep's metrics table."""
    order = ranked_order(table, name, metric)
    pos = {lab: i for i, lab in enumerate(table["column"].tolist())}
    rows = np.asarray([pos[r["column"]] for r in order], dtype=np.int64)
    usd = [c for c in table.columns if c not in ("col", "column", SYMBOL_AXIS) and "." not in c]
    out = table.iloc[rows].reset_index(drop=True)
    lv = levels.iloc[out["col"].to_numpy()].reset_index(drop=True)
    return pd.concat([pd.DataFrame({"rank": np.arange(1, len(out) + 1), "column": out["column"], "col": out["col"]}),
                      lv, out[usd]], axis=1)


# ---------------------------------------------------------------------------------------------
# symbols as a grid axis ([sweep.grid] symbol = [...]): the grid on each symbol's data, symbol outer


@dataclass
class SymbolData:
    """One swept symbol's inputs: ``symbol`` (None: the ``[data]`` symbol without a symbol axis),
    its ``MarketData``, ``MarketSpec``, the spec's fingerprint and the data's notes."""

    symbol: str | None
    data: Any
    spec: Any
    market_fp: str
    notes: list[str]


@dataclass
class SymbolRun:
    """One symbol's part of a sweep: its inputs, its name in the report (``<result> <symbol>``),
    its chunk task and store, its chunks (all, and those still to run), and ``offset``: the
    position of its first column in the whole grid (symbol outer: ``offset = i_symbol * n_cols``)."""

    leg: SymbolData
    name: str
    task: Any
    store: Any
    bounds: list[tuple[int, int]]
    todo: list[tuple[int, int]]
    per_chunk: int
    offset: int


def symbol_label(symbol: str, label: str) -> str:
    """A column label with the symbol level first: ``symbol=ETH/USDT:USDT|slow_days=50|policy=const(1)``."""
    return f"{SYMBOL_AXIS}={format_value(symbol)}|{label}"


def symbol_folder(i: int, symbol: str) -> str:
    """The chunk folder of the ``i``-th symbol (``0-BTC_USDT_USDT``): its position keeps two
    symbols that write alike apart, the name keeps the folder readable."""
    import re

    return f"{i}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", symbol)


def symbol_levels(grid: Any, symbols: list[str] | None) -> pd.DataFrame:
    """The levels of the whole sweep, one row per column in grid order: ``grid.levels()``
    without a symbol axis, else a ``symbol`` level first, the grid repeated for each symbol
    (symbol outer) and the labels starting with the symbol (:func:`symbol_label`)."""
    lv = grid.levels()
    if symbols is None:
        return lv
    parts = []
    for sym in symbols:
        part = lv.copy()
        part.insert(0, SYMBOL_AXIS, pd.Series([sym] * len(part), index=part.index, dtype=object))
        part.index = pd.Index([symbol_label(sym, lab) for lab in lv.index], name=lv.index.name)
        parts.append(part)
    return pd.concat(parts)


def load_symbol(cfg: RunConfig, symbol: str, log: Callable[[str], None], data_symbol: tuple[Any, Any, str]
                ) -> SymbolData:
    """``symbol``'s data and market as ``[data]``'s symbol is loaded (same exchange, timeframe,
    window, store or sample; the spec from the exchange's markets file); the ``[data]`` symbol's
    ``data_symbol = (md, spec, market_fp)`` is reused when ``symbol`` is that one.

    Raises
    ------
    ConfigError
        ``symbol`` has no data or no market spec: names it and the fix (download it, or take it
        out of ``[sweep.grid] symbol``).
    """
    from backtest.data import default_root
    from backtest.market import MarketSpecError, load_market
    from backtest.runner.run import load_data, market_fingerprint

    d = cfg.data
    if symbol == d.symbol:
        md, spec, fp = data_symbol
        return SymbolData(symbol, md, spec, fp, list(md.notes))
    log(f"loading {d.exchange} {symbol} {d.timeframe} ({d.start or 'first bar'} .. {d.end or 'last bar'})")
    try:
        spec = load_market(d.exchange, symbol, data_dir=d.root or default_root())
    except MarketSpecError as exc:
        raise ConfigError(f"sweep.grid.symbol: {symbol!r}: {exc}; correct the symbol, or take it out of "
                          "[sweep.grid] symbol") from None
    try:
        md = load_data(cfg.model_copy(update={"data": d.model_copy(update={"symbol": symbol})}))
    except FileNotFoundError as exc:
        raise ConfigError(f"sweep.grid.symbol: {symbol!r}: {exc}; or take it out of [sweep.grid] symbol") from None
    log(f"  {md.n} bars from {md.source}; {len(md.funding)} funding prints")
    for note in md.notes:
        log(f"  note: {symbol}: {note}")
    return SymbolData(symbol, md, spec, market_fingerprint(spec), list(md.notes))


def symbol_metrics(r: SymbolRun) -> pd.DataFrame:
    """The stored metrics rows of one symbol's chunks, with ``col`` its position in the whole
    grid and, with a symbol axis, a ``symbol`` column after ``column`` (the labels carry it already)."""
    table = pd.concat([r.store.metrics(b) for b in r.bounds], ignore_index=True)
    if r.leg.symbol is not None:
        table["col"] = table["col"] + r.offset
        table.insert(2, SYMBOL_AXIS, pd.array([r.leg.symbol] * len(table), dtype="string"))
    return table


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: ``table`` is ``sweep.csv`` (every column, best first);
    ``computed`` / ``reused`` count the chunks simulated now and those found from an earlier start."""

    run_id: str
    out_dir: Path
    table: pd.DataFrame
    chunks: int
    chunk_columns: int
    computed: int
    reused: int
    executor: str
    seconds: float
    oos: pd.DataFrame | None = None  # sweep_oos.csv (a sweep with a split): per fold the chosen columns


def _sweep_memory(setting: Any, override: Any) -> tuple[int, str]:
    """Bytes for the chunks in flight and where the figure comes from."""
    from backtest.runner import budget
    from backtest.runner.chunks import DEFAULT_MEMORY_CAP, DEFAULT_MEMORY_SHARE

    for value, where in ((override, "--memory"), (setting, "sweep.memory")):
        if value is not None:
            n = budget.parse_size(value, where)
            if n is None:
                raise ConfigError(f"{where}={value!r}: a sweep's chunks need a memory size such as '2GB'")
            return n, where
    avail, source = budget.available_memory()
    if avail is None:
        return DEFAULT_MEMORY_CAP, f"{budget.fmt_bytes(DEFAULT_MEMORY_CAP)} ({source})"
    n = min(int(avail * DEFAULT_MEMORY_SHARE), DEFAULT_MEMORY_CAP)
    return n, f"{DEFAULT_MEMORY_SHARE:.0%} of {source}, at most {budget.fmt_bytes(DEFAULT_MEMORY_CAP)}"


def run_sweep(cfg: RunConfig, *, reports_dir: str | Path | None = None, log: Callable[[str], None] | None = None,
              source_config: dict[str, Any] | None = None, html: bool = True, memory: Any = None,
              workers: int | None = None, scheduler: Any = None, full_equity: bool = False,
              quiet: bool = False, executor: Any = None) -> SweepOutcome:
    """Run ``backtest sweep``: the swept ``[[perp]]``'s grid in chunks, the report of the best.

    Steps: check the config; load the data; split the grid's columns into chunks sized to the
    memory (``memory`` / ``[sweep] memory``, else a share of the available memory); run every
    chunk not already stored in ``<run folder>/chunks/`` on the executor (each chunk simulated,
    reduced to its metrics rows and stored as it finishes); rank every column; simulate the
    ``[sweep] report_columns`` best again (the same numbers: columns are independent) with the
    config's other simulations (the baselines); write the report folder. With a
    ``[sweep.grid] symbol`` axis all of this runs once per symbol on that symbol's data (symbol
    outer, one chunk store per symbol), then one ranking over every symbol; the report holds each
    symbol's share of the best columns as a result ``<name> <symbol>`` (docs/runner.md, "Grids").

    Parameters
    ----------
    cfg : a validated config with a ``[sweep]`` table.
    reports_dir, log, source_config, html : as :func:`backtest.runner.run.execute`.
    memory : bytes or a size (``'2GB'``) for the chunks in flight; overrides ``[sweep] memory``.
    workers : local processes (overrides ``[sweep] workers``); scheduler : a Dask scheduler
        address (overrides ``[sweep] scheduler``). executor : an :class:`~backtest.runner.executors.Executor`
        to use instead (tests: a ``DaskExecutor`` on a ``LocalCluster``).
    full_equity : also write every column's equity (``equity-full-<c0>-<c1>.parquet``, one
        file per chunk: bars x columns, settlement currency).
    quiet : no progress bar.

    Returns
    -------
    SweepOutcome

    Output folder: the report of ``backtest run`` holding the best columns and the baselines,
    plus ``sweep.csv`` (every column ranked), ``sweep_metrics.parquet`` (every column, every
    metric, both bases), ``heatmap.html`` (unless ``html=False``) and the full equity if asked;
    with a split also ``sweep_folds.parquet``, ``sweep_oos.csv``, ``oos_equity.parquet`` and the
    in-sample vs out-of-sample section of ``report.html``.

    Raises
    ------
    ConfigError, ReportError, DataValidationError, FileNotFoundError
        As :func:`backtest.runner.run.execute`, before any chunk is simulated.
    """
    import time

    from backtest.report import collect
    from backtest.report.store import remove_stale_temporaries
    from backtest.runner import budget
    from backtest.runner.chunks import ChunkStore, SweepTask, chunk_bounds, chunk_columns, run_chunk, sweep_grid
    from backtest.runner.checks import check_settings, settings_error
    from backtest.runner.executors import ChunkProgress, executor_for
    from backtest.runner.run import _plain, _publish, _stderr, check_reports_dir, load_inputs, simulate_all

    log = log or _stderr
    t0 = time.perf_counter()
    files_maker = sweep_files(cfg, html)  # ConfigError without a [sweep] table
    sw, target = files_maker.sweep, files_maker.target
    problems = check_settings(cfg)
    if problems:
        raise settings_error(problems)
    if cfg.data.lookback_days:  # the chunks build targets on the run's bars only: never ignore it silently
        raise ConfigError("data.lookback_days: backtest sweep does not load warm-up data; remove the key, or "
                          "run the grid with backtest run (which does)")
    where = f"perp[{[p.name for p in cfg.perp].index(target.name)}]"
    symbols: list[str] | None = sw.grid.get(SYMBOL_AXIS)  # None: the [data] symbol, no symbol level
    grid = sweep_grid(target, {k: v for k, v in sw.grid.items() if k != SYMBOL_AXIS})
    levels = symbol_levels(grid, symbols)
    for axis, level in (("x", sw.x), ("y", sw.y)):
        if level not in levels.columns:
            raise ConfigError(f"sweep.{axis}: {level!r} is not a column level of [[perp]] {target.name!r}; "
                              f"levels: {', '.join(levels.columns)}")
    mem, mem_source = _sweep_memory(sw.memory, memory)
    workers = workers if workers is not None else sw.workers
    scheduler = scheduler if scheduler is not None else sw.scheduler
    reports = check_reports_dir(reports_dir if reports_dir is not None else cfg.reports_dir)
    for p in remove_stale_temporaries(reports):
        log(f"removed {p.name}, left by a run that was killed")

    # the data, the market and the run id exactly as `backtest run` makes them (one function);
    # with a symbol axis, every symbol's data and market too (all before any chunk runs), each
    # one's fingerprint in the run id
    md, spec, notes, market_fp, fingerprint, books = load_inputs(cfg, log, single=True)
    legs = [SymbolData(None, md, spec, market_fp, list(notes))] if symbols is None else [
        load_symbol(cfg, sym, log, (md, spec, market_fp)) for sym in symbols]
    if symbols is not None:
        fingerprint += "".join(f"|symbol:{leg.symbol}:data:{leg.data.fingerprint}|market:{leg.market_fp}"
                               for leg in legs)
        for leg in legs:
            notes += [f"{leg.symbol}: {n}" for n in leg.notes]
    run_id = cfg.run_id(fingerprint)
    out_dir = reports / run_id
    if (out_dir.exists() or out_dir.is_symlink()) and not out_dir.is_dir():
        from backtest.report import ReportError

        raise ReportError(f"{out_dir} exists and is not a folder, so the report of this run cannot replace it; "
                          "move the file or choose another -o/--reports-dir")

    # the report holds the best columns and the other simulations: checked as `backtest run` checks a run
    others = cfg.model_copy(update={"perp": [p for p in cfg.perp if p.name != target.name]})
    n_total = grid.n_cols * len(legs)
    keep = min(sw.report_columns, n_total)
    from backtest.engine.enums import SERIES as PERP_SERIES

    n_bars = max(int(leg.data.n) for leg in legs)
    limit, limit_source = budget.limit_for(cfg.memory_limit)
    need = budget.estimate(max(n_bars, int(md.n)), budget.columns_of(others)
                           + [(target.name, keep, len(PERP_SERIES))])
    budget.check(need, limit, limit_source, ConfigError)

    from backtest.data.timeutil import parse_timeframe
    from backtest.metrics import index_ms
    from backtest.runner import oos
    from backtest.runner.grid import kernels_loaded, plan_line

    bar_ms = parse_timeframe(cfg.data.timeframe)
    folds = oos.make_folds(index_ms(md.frame.index), bar_ms, sw) if sw.split else []
    if folds and symbols is not None:  # pragma: no cover - check_settings refuses it (checks._sweep)
        raise ConfigError("sweep.split: not supported with a [sweep.grid] symbol axis")
    ex = executor if executor is not None else executor_for(workers, scheduler)
    in_flight = getattr(ex, "workers", 1)
    n_report = keep + sum(n for _, n, _ in budget.columns_of(others))
    runs: list[SymbolRun] = []
    for i, leg in enumerate(legs):
        # one chunk store per symbol (its own folder, plan and chunk size: the symbols' bars may differ)
        folder = out_dir / "chunks" if leg.symbol is None else out_dir / "chunks" / symbol_folder(i, leg.symbol)
        store = (oos.OosChunkStore if folds else ChunkStore)(folder, run_id, grid.n_cols)
        per_chunk = store.stored_chunk_columns() or chunk_columns(int(leg.data.n), mem, in_flight)
        bounds = chunk_bounds(grid.n_cols, per_chunk)
        name = target.name if leg.symbol is None else f"{target.name} {leg.symbol}"
        log(plan_line(name, grid.n_cols, int(leg.data.n), len(bounds), per_chunk, mem, need.total, in_flight,
                      len(folds), report_columns=n_report, warm=kernels_loaded()))
        store.start(per_chunk)
        todo = [b for b in bounds if not store.has(b, full_equity)]
        log(f"sweeping {name}: {grid.n_cols} columns x {leg.data.n} bars in {len(bounds)} chunk(s) of up to "
            f"{per_chunk} columns (memory {budget.fmt_bytes(mem)}: {mem_source}); "
            f"{len(bounds) - len(todo)} already done, {len(todo)} to run on {ex.name}")
        g = grid if leg.symbol is None else dataclasses.replace(
            grid, labels=tuple(symbol_label(leg.symbol, lab) for lab in grid.labels))
        task = SweepTask(perp=target, where=where, data=leg.data, spec=leg.spec, grid=g, full_equity=full_equity)
        runs.append(SymbolRun(leg, name, task, store, bounds, todo, per_chunk, i * grid.n_cols))
    n_chunks = sum(len(r.bounds) for r in runs)
    n_todo = sum(len(r.todo) for r in runs)
    progress = ChunkProgress(n_chunks, n_chunks - n_todo, quiet=quiet)
    try:
        for r in runs:  # the symbols one after the other: each one's data goes to the workers once
            fn, shared = ((oos.run_oos_chunk, oos.OosTask(r.task, tuple(folds), oos.span_keys(sw.metric))) if folds
                          else (run_chunk, r.task))
            for i, out in ex.map(fn, shared, r.todo):
                r.store.save(r.todo[i], out)
                where_chunk = "" if r.leg.symbol is None else f"{r.leg.symbol} "
                progress.advance(f"{where_chunk}columns {r.todo[i][0]}..{r.todo[i][1] - 1}")
    finally:
        progress.close()
        if executor is None:
            ex.close()

    table = pd.concat([symbol_metrics(r) for r in runs], ignore_index=True)
    if table["col"].tolist() != list(range(n_total)):  # a stored chunk that is not what its name says
        folders = ", ".join(str(r.store.folder) for r in runs)
        raise RuntimeError(f"the stored chunks in {folders} do not cover columns 0..{n_total - 1} in "
                           "order; delete the chunks folder and run the sweep again")
    ranked = ranked_table(table, levels, target.name, sw.metric)
    best = np.sort(ranked["col"].to_numpy()[:keep])

    log(f"simulating the best {keep} column(s) of {target.name} for the report, and the other simulations")
    from backtest.runner.chunks import simulate_columns

    # each symbol's best columns are a result of their own: prices of different symbols never
    # share a result (its price line and axis), and every column keeps its symbol's data
    results: dict[str, Any] = {}
    all_levels: dict[str, pd.DataFrame] = {}
    tops: dict[int, tuple[Any, np.ndarray]] = {}  # run index -> (result, its global columns, ascending)
    for k, r in enumerate(runs):
        mine = best[(best >= r.offset) & (best < r.offset + grid.n_cols)]
        if len(mine):
            top_k = simulate_columns(r.task, mine - r.offset)
            results[r.name] = top_k
            all_levels[r.name] = levels.iloc[mine]
            tops[k] = (top_k, mine)
    book_runs: dict[str, Any] = {}
    if others.perp or others.puts or others.products or others.book:
        res, lv = simulate_all(others, md, spec, log, books=books, book_runs=book_runs)
        clash = sorted(set(res) & set(results))
        if clash:
            raise ConfigError(f"simulation name {clash[0]!r} is also the name of a symbol's result of the sweep; "
                              "rename that simulation")
        results.update(res)
        all_levels.update(lv)
    for rname, res_ in results.items():
        for note in res_.meta.get("notes", []):
            if "allow_lookahead = true" in note:
                notes.append(f"{rname}: {note}")
    resolved: dict[str, Any] = {
        "run_id": run_id,
        "config": cfg.model_dump(mode="json"),
        "source_config": source_config,
        "data": {"source": str(md.source), "fingerprint": md.fingerprint, "bars": int(md.n),
                 "first_bar": str(md.frame.index[0]), "last_bar": str(md.frame.index[-1]), "notes": notes},
        "market": {"exchange": spec.exchange, "symbol": spec.symbol, "inverse": spec.inverse, "settle": spec.settle,
                   "contract_size": spec.contract_size, "taker_fee": spec.taker_fee,
                   "liquidation_fee_rate": spec.liquidation_fee_rate, "fingerprint": market_fp},
        "columns": {n: {"levels": list(lv.columns),
                        "values": {lab: [_plain(v) for v in row] for lab, row in zip(lv.index, lv.to_numpy())}}
                    for n, lv in all_levels.items()},
    }
    if symbols is not None:  # each swept symbol's data and market ("data"/"market": the [data] symbol's)
        resolved["symbols"] = {str(leg.symbol): {
            "source": str(leg.data.source), "fingerprint": leg.data.fingerprint, "bars": int(leg.data.n),
            "first_bar": str(leg.data.frame.index[0]), "last_bar": str(leg.data.frame.index[-1]),
            "inverse": leg.spec.inverse, "settle": leg.spec.settle, "market_fingerprint": leg.market_fp}
            for leg in legs}
    log("computing the report's metrics")
    run = collect({n: book_runs.get(n, r) for n, r in results.items()}, title=cfg.title, config=resolved,
                  notes="\n".join(notes), rank_by=cfg.rank_by)
    run.metrics["sweep"] = {
        "result": target.name, "metric": sw.metric, "columns": n_total, "report_columns": keep,
        "chunks": n_chunks, "chunk_columns": max(r.per_chunk for r in runs), "table": "sweep_metrics.parquet",
        "heatmap_stat": sw.heatmap_stat,
        "note": f"the report shows the best {keep} of {n_total} columns of {target.name!r} by {sw.metric}; "
                "sweep.csv and sweep_metrics.parquet hold every column"}
    if symbols is not None:
        run.metrics["sweep"]["symbols"] = list(symbols)
        run.metrics["sweep"]["results"] = [r.name for r in runs if r.name in results]
    files: dict[str, Any] = {"sweep.csv": ranked.to_csv(index=False)}
    best_col = int(ranked["col"].iloc[0])
    k_best = best_col // grid.n_cols
    run.metrics["sweep"]["robustness"] = _robustness(ranked, levels, sw.metric, *tops[k_best], bar_ms)
    if folds:
        task, top = runs[0].task, tops[0][0]
        log(f"out of sample: {len(folds)} fold(s), the best {sw.oos_columns} in-sample column(s) of each")
        span_store = runs[0].store if isinstance(runs[0].store, oos.OosChunkStore) else None
        if span_store is None:  # pragma: no cover - a split always makes an OosChunkStore
            raise RuntimeError("a sweep with a split needs its span store")
        spans = pd.concat([span_store.spans(b) for b in runs[0].bounds], ignore_index=True)
        chosen = oos.choose(spans, target.name, sw.metric, sw.oos_columns)
        block, stitched = _out_of_sample(task, folds, chosen, sw, md, best_col,
                                         _usd_returns(top, best, best_col))
        run.metrics["sweep"]["oos"] = block
        files["sweep_folds.parquet"] = _parquet_bytes(spans)
        files["sweep_oos.csv"] = chosen.to_csv(index=False)
        run.sweep_oos = stitched  # oos_equity.parquet, read back by `backtest report` for the page's section
    metrics_bytes = _parquet_bytes(table)
    files["sweep_metrics.parquet"] = metrics_bytes
    if html:
        files["heatmap.html"] = heatmap_html(
            heatmap_grid(ranked, sw.x, sw.y, sw.metric, sw.heatmap_stat), sw.x, sw.y, sw.metric, cfg.title,
            heatmap_title(cfg.title, sw.metric, sw.x, sw.y, sw.heatmap_stat, cell_count(ranked, sw.x, sw.y)))
    if full_equity:  # named by the columns' positions in the whole grid (symbol outer)
        for r in runs:
            for b in r.bounds:
                files[f"equity-full-{b[0] + r.offset}-{b[1] + r.offset}.parquet"] = r.store.equity_path(b)
    log(f"writing report {out_dir}")
    out_dir = _publish(run, out_dir, files, html)
    seconds = time.perf_counter() - t0
    log(f"done in {seconds:.1f} s")
    files_maker.table = ranked
    return SweepOutcome(run_id=run_id, out_dir=out_dir, table=ranked, chunks=n_chunks,
                        chunk_columns=max(r.per_chunk for r in runs), computed=n_todo, reused=n_chunks - n_todo,
                        executor=ex.name, seconds=seconds,
                        oos=chosen if folds else None)


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def _robustness(ranked: pd.DataFrame, levels: pd.DataFrame, metric: str, top: Any, best: np.ndarray,
                bar_ms: int) -> dict[str, Any]:
    """:func:`backtest.runner.robust.robustness` of the best-ranked column (its USD returns
    from the report's simulation ``top`` of the columns ``best``, ascending positions in the
    whole grid, among them the best column's)."""
    from backtest.metrics import bars_per_year
    from backtest.runner.robust import robustness

    best_col = int(ranked["col"].iloc[0])
    return robustness(ranked, levels, metric, best_col, _usd_returns(top, best, best_col), bars_per_year(bar_ms))


def _usd_returns(top: Any, best: np.ndarray, col: int) -> np.ndarray:
    """USD bar returns (n_bars,) of grid column ``col``, one of the columns ``best`` (ascending)
    simulated for the report as ``top``."""
    from backtest.metrics import returns_and_drawdown

    i = int(np.searchsorted(best, col))
    return returns_and_drawdown(top.select([i]), "usd")["returns"][:, 0]


def _out_of_sample(task: Any, folds: list, chosen: pd.DataFrame, sw: Any, md: Any, best_col: int,
                   best_returns: np.ndarray) -> tuple[dict, pd.DataFrame]:
    """The ``sweep.oos`` block and the stitched OOS growth of each fold's IS winner (the winners
    simulated again: the same numbers, columns are independent), next to the growth on the
    same bars of ``best_col``, the best column of the whole data (USD returns ``best_returns``)."""
    from backtest.metrics import returns_and_drawdown
    from backtest.runner import oos
    from backtest.runner.chunks import simulate_columns

    winners = chosen[chosen["is_rank"] == 1].sort_values("fold")
    by_fold = dict(zip(winners["fold"].tolist(), winners["col"].tolist()))
    used = [f for f in folds if f.index in by_fold]
    cols = np.unique(np.asarray([by_fold[f.index] for f in used], dtype=np.int64))
    res = simulate_columns(task, cols)
    returns = returns_and_drawdown(res, "usd")["returns"]
    pos = [int(np.searchsorted(cols, by_fold[f.index])) for f in used]
    bars, growth = oos.stitched_growth(returns, pos, used)
    # each stitched bar belongs to the earliest fold holding it (stitched_growth's rule)
    owner = np.full(len(bars), -1, dtype=np.int64)
    for f in used:
        owner[(bars >= f.oos_first) & (bars < f.oos_end) & (owner < 0)] = f.index
    labels = [task.grid.labels[by_fold[int(k)]] for k in owner.tolist()]
    hind = oos.hindsight_growth(best_returns, bars)
    stitched = oos.stitched_frame(md.frame.index, bars, growth, owner, labels, hind)
    total = float(growth[-1] - 1.0) if len(growth) else None
    hindsight = {"column": task.grid.labels[best_col], "col": int(best_col),
                 "return": float(hind[-1] - 1.0) if len(hind) else None}
    return oos.oos_block(chosen, folds, sw, sw.metric, total, int(len(bars)), hindsight), stitched
