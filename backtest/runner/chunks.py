"""A sweep's column grid in chunks: each chunk simulated, reduced to metrics rows, dropped.

The swept ``[[perp]]`` has ``strategy sets x filter sets x policies`` columns (strategy outer,
policies inner: column ``c = (i_base * n_filter + i_filter) * n_policy + i_policy``, as
:func:`strategies.build_targets` lays them out). A chunk of columns needs the targets of the
strategy sets it touches only, so a chunk's memory (targets, engine outputs, the series the
metrics read) grows with its columns, not with the grid's. Columns are simulated independently
by the engine, so a column's numbers do not depend on the chunk it was simulated in (tested:
one chunk and many give the same metrics, bit for bit).

The parts:

- :class:`SweepTask` holds what every chunk needs (data, market, the swept config, the grid's
  labels); it is pickled once per worker (processes, Dask: scattered).
- :func:`simulate_columns` simulates any set of columns of the grid (a chunk, or the top N
  columns whose equity the report shows).
- :func:`run_chunk` is one chunk's work: simulate, compute both bases' metrics, return the
  metrics rows (and the chunk's equity when every column's equity is wanted).
- :class:`ChunkStore` keeps finished chunks in the run folder (atomic writes), so a killed
  sweep run again computes only the missing ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from backtest.runner.config import ConfigError, PerpConfig
from backtest.runner.labels import account_levels, level_frame, make_labels

# Bytes per bar and column a chunk holds at its peak (measured with benchmarks/bench_sweep.py on
# the BTC 1h data, 26,280 bars: see benchmarks/README.md "Sweeps"): the target (the signal and
# policy multipliers repeated, the product: 4 arrays), the kernel's outputs (equity, position,
# 2 more), the series the metrics derive and read (equity_usd, capital_added, cum_funding,
# cum_fees, leverage, notional: 6) and the compiled pass's copies: 16 float64 arrays, rounded up.
# A chunk now holds fewer (one target, the equity and position, three running totals and the
# leverage, no copies for the metrics: peak RSS 1.11 GB instead of 1.51 GB at 1,000 columns,
# benchmarks/README.md "Sweeps"); the figure is kept, so chunk sizes, and the chunk size a
# resumed sweep adopts, stay those of earlier runs, erring on the safe side.
CHUNK_BYTES_PER_CELL = 8 * 16
# Default sweep memory: this share of the memory available when the sweep starts (the rest is
# left to the data, the metrics table, the report and everything else on the machine).
DEFAULT_MEMORY_SHARE = 0.25
# ... and at most this: chunks beyond a few hundred columns run no faster (benchmarks/README.md,
# "Sweeps"), so a large machine does not make a sweep hold gigabytes for nothing
DEFAULT_MEMORY_CAP = 1_000_000_000
# Metric units stored as nullable integers / booleans in the metrics table; every other scalar
# metric is a nullable float (null: undefined, as None in metrics.json).
_INT_UNITS = ("bars", "count", "time")
_BOOL_UNITS = ("bool",)
BASES = ("usd", "settle")


@dataclass(frozen=True)
class Grid:
    """The swept ``[[perp]]``'s columns, known before any data is loaded.

    Attributes
    ----------
    base : the strategy's parameter sets (:meth:`strategies.base.Strategy.grid`).
    n_filter, n_policy : sizes of the filter grid (1 without a filter) and of the policy list.
    columns : MultiIndex of every column's levels, as :func:`strategies.build_targets` makes it.
    labels : readable labels (:func:`backtest.runner.labels.make_labels`), one per column.
    account : the ``account.<field>`` levels of the per-column account settings that vary
        (:func:`backtest.runner.labels.account_levels`).
    """

    base: tuple[Any, ...]
    n_filter: int
    n_policy: int
    columns: pd.MultiIndex
    labels: tuple[str, ...]
    account: dict[str, list[Any]] = dataclasses.field(default_factory=dict, compare=False)
    # ``[sweep.grid]`` axes (``account.<field>`` -> values), innermost after the policies; their
    # product is ``n_axis`` columns per built target column
    axes: dict[str, list[Any]] = dataclasses.field(default_factory=dict)

    @property
    def n_cols(self) -> int:
        return len(self.labels)

    @property
    def n_axis(self) -> int:
        return int(np.prod([len(v) for v in self.axes.values()], dtype=np.int64)) if self.axes else 1

    def axis_values(self, cols: np.ndarray) -> dict[str, list[Any]]:
        """The ``[sweep.grid]`` values of the columns ``cols``, by Account field name (the last
        axis varies fastest)."""
        out: dict[str, list[Any]] = {}
        rest = np.asarray(cols, dtype=np.int64) % self.n_axis
        for key in reversed(list(self.axes)):
            vals = self.axes[key]
            out[key.split(".", 1)[1]] = [vals[i] for i in (rest % len(vals)).tolist()]
            rest = rest // len(vals)
        return out

    def levels(self) -> pd.DataFrame:
        """One row per column (index = label), one column per grid level (then the varying
        account settings)."""
        lv = level_frame(self.columns)
        for name, values in self.account.items():
            lv[name] = pd.Series(values, dtype=object)
        lv.index = pd.Index(self.labels, name="column")
        return lv


def sweep_grid(perp: PerpConfig, axes: dict[str, list[Any]] | None = None) -> Grid:
    """The :class:`Grid` of ``perp`` (its strategy, filter and policy lists; no data read), times
    the ``[sweep.grid]`` ``axes`` (``account.<field>`` -> values; innermost, the last fastest).

    The level tuples are those :func:`strategies.combine.signals` and
    :func:`strategies.build_targets` give their columns; :func:`simulate_columns` checks every
    chunk's columns against them, so the two cannot drift apart silently.
    """
    import strategies
    from strategies.policies import expand

    s = perp.strategy
    strat = strategies.get(s.name)
    base = strat.grid(s.params or None)
    tuples = [t if isinstance(t, tuple) else (t,) for t in strat.columns(base)]
    names = list(strat.columns(base[:1]).names)
    n_filter = 1
    if s.filter is not None:
        fstrat = strategies.get(s.filter)
        fgrid = fstrat.grid(s.filter_params or None)
        fcols = fstrat.columns(fgrid)
        n_filter = len(fgrid)
        tuples = [bt + (fstrat.name,) + (ft if isinstance(ft, tuple) else (ft,)) for bt in tuples for ft in fcols]
        names += ["filter"] + [f"filter.{n}" for n in fcols.names]
    variants = expand(list(perp.policies))
    axes = dict(axes or {})
    account = perp.account.model_dump()
    for key in axes:
        field = key.split(".", 1)[1]
        if not isinstance(account[field], (str, bool, int, float)) and account[field] is not None:
            raise ConfigError(f"sweep.grid.{key} is an axis and [perp.account] {field} lists one value per column; "
                              f"keep one of the two (the axis, or a single {field} in [perp.account])")
    tuples = [t + (p.label(),) for t in tuples for p in variants]
    for key, values in axes.items():
        tuples = [t + (v,) for t in tuples for v in values]
    columns = pd.MultiIndex.from_tuples(tuples, names=names + ["policy"] + list(axes))
    labels = tuple(make_labels(columns, account)[0])  # as `backtest run` labels them
    return Grid(base=tuple(base), n_filter=n_filter, n_policy=len(variants), columns=columns, labels=labels,
                account=account_levels(account, len(columns)), axes=axes)


def _loaded_modules() -> list[str]:
    from strategies.modules import loaded

    return list(loaded())


@dataclass(frozen=True)
class SweepTask:
    """What every chunk of one sweep needs; pickled once per worker.

    Attributes
    ----------
    perp : the swept ``[[perp]]`` config; ``where`` its path in the config (``perp[0]``).
    data : the run's ``MarketData``; ``spec`` its ``MarketSpec``.
    grid : the columns (:func:`sweep_grid`).
    full_equity : also return every column's equity (``--full-equity``).
    modules : the user modules to load first (resolved files or dotted names).
    """

    perp: PerpConfig
    where: str
    data: Any
    spec: Any
    grid: Grid
    full_equity: bool = False
    # the user modules (config ``module``) loaded in the process that made the task: a worker
    # process loads them too before building targets, so their strategies and policies exist
    modules: tuple[str, ...] = dataclasses.field(default_factory=lambda: tuple(_loaded_modules()))


@dataclass
class ChunkOutput:
    """One chunk's reduction: ``metrics`` (:func:`metrics_frame`), and with ``full_equity`` the
    chunk's ``equity`` (n_bars, chunk columns; settlement currency, labels as columns)."""

    metrics: pd.DataFrame
    equity: pd.DataFrame | None = None


def _take(value: Any, cols: np.ndarray, n_cols: int, where: str) -> Any:
    """A per-column setting restricted to ``cols``: a list of one value per column is taken at
    ``cols``; a single value applies to every column and is kept."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    arr = list(value)
    if len(arr) != n_cols:
        raise ConfigError(f"{where}: {len(arr)} values for the sweep's {n_cols} columns; give one value, "
                          f"or one per column (strategy grid x policies, strategy outer)")
    return [arr[c] for c in cols.tolist()]


def _take_policy(policy: Any, local: np.ndarray) -> Any:
    """The engine :class:`~backtest.engine.settings.Policy` of ``build_targets`` (one value per
    built column in every field) restricted to the built columns ``local``."""
    out = {}
    for f in dataclasses.fields(policy):
        v = getattr(policy, f.name)
        out[f.name] = [v[i] for i in local.tolist()] if isinstance(v, list) else np.asarray(v)[local]
    return type(policy)(**out)


def simulate_columns(task: SweepTask, cols: Sequence[int] | np.ndarray, series: tuple[str, ...] | None = None):
    """Simulate the grid columns ``cols`` (ascending global positions) as one engine run.

    Only the strategy sets those columns use are computed (every filter set and policy of them,
    then the wanted columns taken), so the memory follows ``len(cols)``.

    Returns
    -------
    SimResult with the columns in the order of ``cols``, labelled with the grid's readable labels.
    """
    from backtest.engine import Account, simulate_perp
    from strategies.policies import build_targets

    from strategies.modules import load_module

    for ref in task.modules:  # loaded once per process (a no-op where the task was made)
        load_module(ref)
    g = task.grid
    cols = np.asarray(cols, dtype=np.int64)
    if len(cols) == 0 or cols.min() < 0 or cols.max() >= g.n_cols or np.any(np.diff(cols) <= 0):
        raise ValueError(f"columns must be distinct ascending positions in 0..{g.n_cols - 1}")
    per_base = g.n_filter * g.n_policy
    inner = cols // g.n_axis  # the built target column of each (the [sweep.grid] axes are innermost)
    bases = np.unique(inner // per_base)
    s = task.perp.strategy
    target, policy, built = build_targets(
        task.data, s.name, [g.base[b] for b in bases.tolist()], task.perp.policies, filter=s.filter,
        filter_params=s.filter_params or None, spec=task.spec)
    # global column c sits at built position (rank of its base set) * per_base + c % per_base
    local = np.searchsorted(bases, inner // per_base) * per_base + inner % per_base
    n_levels = len(g.columns.names)
    want = g.columns[cols]  # whole-index takes: a lookup per column costs ~1 ms
    if g.axes:  # the [sweep.grid] account axes are levels of the grid, not of build_targets
        want = want.droplevel(list(range(n_levels - len(g.axes), n_levels)))
    got = built[local]
    if not want.equals(got):  # pragma: no cover - guards sweep_grid against a change of build_targets' layout
        raise RuntimeError(f"sweep grid out of step with build_targets: columns {list(want[:2])} built as "
                           f"{list(got[:2])}")
    acc = task.perp.account.model_dump()
    values = {k: _take(v, cols, g.n_cols, f"{task.where}.account.{k}") for k, v in acc.items()}
    values.update(g.axis_values(cols))
    tgt = target.to_numpy()
    if not np.array_equal(local, np.arange(tgt.shape[1])):
        # the columns wanted out of those built; when they are all of them (a chunk of whole
        # strategy sets) the built array is used as it is, in either memory order (the engine
        # reads both without a copy), instead of a gathered copy of ~60 MB per 300 columns
        tgt = tgt[:, local]
    del target
    labels = pd.Index([g.labels[c] for c in cols.tolist()], dtype=object, name="column")
    return simulate_perp(task.data, tgt, task.spec, Account(**values), _take_policy(policy, local),
                         columns=labels, series=series)


def _dtype(key: str) -> str:
    from backtest.metrics import METRIC_UNITS

    unit = METRIC_UNITS.get(key)
    return "Int64" if unit in _INT_UNITS else "boolean" if unit in _BOOL_UNITS else "Float64"


def same_bases(result: Any) -> bool:
    """Whether the settlement-currency metrics of ``result`` are its USD metrics: the settlement
    currency is worth exactly 1 USD at every bar (``price_usd`` all ones: a linear perp settled
    in USDT) and ``equity_usd`` is ``equity``. :func:`backtest.metrics.compute_metrics` then
    reads the same numbers in both bases (the USD conversion factor is ``price_usd``, the
    settlement one is 1), so the two results are equal, bit for bit."""
    price = np.asarray(result.price_usd)
    if not (price.shape == (result.n_bars,) and np.all(price == 1.0)):
        return False
    eq, eq_usd = result.series["equity"], result.series["equity_usd"]
    return eq_usd is eq or np.array_equal(eq_usd, eq)


def metrics_frame(result: Any, cols: np.ndarray) -> pd.DataFrame:
    """Every scalar metric of every column of ``result``, both bases, as one row per column.

    Columns: ``col`` (global grid position), ``column`` (label), the USD metrics under their
    keys (as in ``sweep.csv``), the settlement-currency ones as ``settle.<key>``, and the event
    counts as ``events.<kind>``. Types follow the metric's unit (counts, bars and times nullable
    integers, flags nullable booleans, the rest nullable floats), so null stays null (None in
    ``metrics.json``) and every value is stored exactly.
    """
    from backtest.metrics import compute_metrics

    out: dict[str, Any] = {"col": np.asarray(cols, dtype=np.int64),
                           "column": pd.array([str(c) for c in result.columns], dtype="string")}
    docs: dict[str, dict] = {}
    for basis in BASES:
        if basis == "settle" and same_bases(result):
            doc = docs["usd"]  # the same inputs, hence the same numbers: computed once
        else:
            doc = docs[basis] = compute_metrics(result, currency=basis)
        rows = list(doc["columns"].values())
        prefix = "" if basis == "usd" else "settle."
        for key in rows[0]:
            if key == "event_counts":
                if basis == "usd":  # the same in both bases
                    for kind in rows[0][key]:
                        out[f"events.{kind}"] = pd.array([r[key][kind] for r in rows], dtype="Int64")
                continue
            out[prefix + key] = pd.array([r[key] for r in rows], dtype=_dtype(key))
    return pd.DataFrame(out)


# The series a chunk's engine run stores: the metrics and the full equity read only the equity
# and the series derived from it and the records (the position among them), not the margin
# ratio or the liquidation price, which the kernel would otherwise write for every bar.
CHUNK_SERIES = ("equity",)


def run_chunk(task: SweepTask, bounds: tuple[int, int]) -> ChunkOutput:
    """One chunk's work: simulate columns ``bounds[0] .. bounds[1] - 1`` and reduce them."""
    c0, c1 = bounds
    cols = np.arange(c0, c1, dtype=np.int64)
    res = simulate_columns(task, cols, series=CHUNK_SERIES)
    frame = metrics_frame(res, cols)
    equity = None
    if task.full_equity:
        equity = pd.DataFrame(np.array(res.series["equity"]), columns=list(res.columns))
    return ChunkOutput(metrics=frame, equity=equity)


def chunk_bounds(n_cols: int, per_chunk: int) -> list[tuple[int, int]]:
    """``[(c0, c1), ...]`` covering ``0 .. n_cols`` in chunks of ``per_chunk`` columns."""
    if per_chunk < 1:
        raise ValueError(f"per_chunk={per_chunk} must be at least 1")
    return [(c0, min(n_cols, c0 + per_chunk)) for c0 in range(0, n_cols, per_chunk)]


def chunk_columns(n_bars: int, memory: int, workers: int = 1) -> int:
    """Columns per chunk for ``memory`` bytes shared by ``workers`` chunks in flight
    (:data:`CHUNK_BYTES_PER_CELL` per bar and column), at least 1."""
    return max(1, int(memory // (max(1, workers) * max(1, n_bars) * CHUNK_BYTES_PER_CELL)))


class ChunkStore:
    """Finished chunks of one sweep in ``<run folder>/chunks/``, written atomically.

    ``plan.json`` records the run id, the number of columns and the chunk size; a sweep of the
    same run id and columns started again adopts that chunk size (the memory available may
    differ between the two starts) and finds the finished chunks by their column range:
    ``metrics-<c0>-<c1>.parquet`` (and ``equity-<c0>-<c1>.parquet`` with ``--full-equity``).
    """

    def __init__(self, folder: Path, run_id: str, n_cols: int) -> None:
        self.folder = Path(folder)
        self.run_id = run_id
        self.n_cols = n_cols

    def _plan(self) -> dict | None:
        try:
            plan = json.loads((self.folder / "plan.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(plan, dict) or plan.get("run_id") != self.run_id or plan.get("columns") != self.n_cols:
            return None
        return plan

    def stored_chunk_columns(self) -> int | None:
        """The chunk size of an earlier start of this sweep, if its plan is here."""
        plan = self._plan()
        per = plan.get("chunk_columns") if plan else None
        return per if isinstance(per, int) and per >= 1 else None

    def start(self, per_chunk: int) -> None:
        """Record the plan; an earlier plan with another chunk size makes its chunks obsolete
        (they are removed)."""
        if self.stored_chunk_columns() != per_chunk and self.folder.exists():
            for p in self.folder.glob("*.parquet"):
                p.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(self.folder / "plan.json", lambda tmp: tmp.write_text(json.dumps(
            {"run_id": self.run_id, "columns": self.n_cols, "chunk_columns": per_chunk}), encoding="utf-8"))

    def _name(self, kind: str, bounds: tuple[int, int]) -> Path:
        return self.folder / f"{kind}-{bounds[0]}-{bounds[1]}.parquet"

    def has(self, bounds: tuple[int, int], equity: bool) -> bool:
        return self._name("metrics", bounds).is_file() and (not equity or self._name("equity", bounds).is_file())

    def save(self, bounds: tuple[int, int], out: ChunkOutput) -> None:
        """Store a finished chunk: the equity first, the metrics last (their file marks the chunk done)."""
        if out.equity is not None:
            self._write(self._name("equity", bounds), lambda tmp: out.equity.to_parquet(tmp, index=False))
        self._write(self._name("metrics", bounds), lambda tmp: out.metrics.to_parquet(tmp, index=False))

    def metrics(self, bounds: tuple[int, int]) -> pd.DataFrame:
        return pd.read_parquet(self._name("metrics", bounds))

    def equity_path(self, bounds: tuple[int, int]) -> Path:
        return self._name("equity", bounds)

    @staticmethod
    def _write(path: Path, write: Any) -> None:
        """Write to a temporary sibling, fsync, rename over ``path``: a file is there complete or
        not at all, whenever the process is killed."""
        from backtest.report.store import temp_path

        tmp = temp_path(path, "tmp")
        try:
            write(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
