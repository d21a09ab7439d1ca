"""Monte Carlo paths run as engine columns: a ``[[perp]]`` table's strategy x policies on many
bootstrap paths, reduced to the few numbers the Monte Carlo reports per path and column, without a
``SimResult`` per path.

Per path the work is the engine's own compiled code, called with arguments built once:

* the paths' bars come as arrays for all paths at once (:meth:`StationaryBootstrap.batch`), each
  path's engine inputs by :meth:`PerpBars.from_arrays` (the loader's price checks, the engine's
  funding-to-bar rule);
* the targets: :func:`strategies.build_targets`, once for all paths when the strategy and a
  policy read no market column (they then see only the bar times, which every path shares: a
  market whose ``col`` refuses to answer proves it), else on the path's own frame;
* the simulation: the kernel behind :func:`backtest.engine.simulate_perp`
  (``nb.simulate_dense_nb``, the specialisation ``simulate_perp`` picks for runs of this size; the
  sparse one gives the same numbers), with the account, policy and tier arrays of the
  ``[[perp]]`` built once;
* the metrics: the series the kernel stored and the engine's derived series
  (``core._derived``: cumulative funding, fees, capital added) go through the metrics' compiled
  pass (:func:`backtest.metrics.nb.column_metrics_nb`), the pass ``compute_metrics`` runs.

So the numbers are those of ``simulate_perp`` + ``compute_metrics`` on the path's MarketData,
bit for bit (``tests/stress/test_paths.py``); no rule is copied and nothing new is compiled.
The calls run with one numba thread: a path's columns are a few thousand bar-columns, where a
parallel region's start costs more than the work (on a loaded 2-core machine, up to 10 ms a
call, measured).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numba
import numpy as np
import pandas as pd

from backtest.data.marketdata import funding_to_bars
from backtest.stress.bootstrap import PathBatch
from backtest.stress.common import ShockError

# what the Monte Carlo keeps per path and column (settlement currency); the first four come from
# the metrics' pass, the counts and the first liquidation's bar from the kernel's records
PATH_METRICS = ("total_return", "max_drawdown", "worst_bar_return", "funding_net", "final_equity",
                "liquidations", "first_liquidation_bar", "margin_calls")


class _NeedsData(Exception):
    """Raised by a market of bar times only when a strategy or policy reads a market column."""


def _markets(batch: PathBatch) -> tuple[Any, Callable[[int], Any]]:
    """(a market of the bar times only, ``row -> the path's market``).

    Both are :class:`strategies.frame.MarketFrame` views on the paths' shared bar times whose
    ``col`` (the way strategies and policies read data) answers from ``batch``: the first raises
    :class:`_NeedsData` for every column, so a strategy or policy that computes on it depends on
    the bar times alone (the same for every path); the second returns row ``r``'s column, the
    numbers of the path's MarketData frame (:meth:`PathBatch.frame`), built only for the columns
    read. Their ``frame`` holds the index and no column."""
    from strategies.frame import MarketDataError, MarketFrame

    bar_s = float(batch.bar_ms) / 1000.0
    empty = pd.DataFrame(index=batch.index)

    class _TimesOnly(MarketFrame):
        def col(self, name: str, *, needed_by: str = "") -> np.ndarray:
            raise _NeedsData(f"{name} ({needed_by})" if needed_by else name)

    class _Path(MarketFrame):
        row = 0
        funding: tuple[np.ndarray, np.ndarray] | None = None

        def col(self, name: str, *, needed_by: str = "") -> np.ndarray:
            if name not in batch.columns:
                who = f" (needed by {needed_by})" if needed_by else ""
                raise MarketDataError(f"market data has no column {name!r}{who}; the bootstrap paths have the "
                                      f"history's columns {list(batch.columns)}")
            if name in batch.prices or name in batch.extra:
                return (batch.prices[name] if name in batch.prices else batch.extra[name])[self.row].copy()
            got: tuple[np.ndarray, np.ndarray] | None = self.funding
            if got is None:
                rate, interval, _ = funding_to_bars(batch.timestamps, batch.bar_ms,
                                                    pd.DataFrame(batch.funding(self.row)))
                got = self.funding = (rate, interval)
            return got[0 if name == "funding_rate" else 1].copy()

    times = _TimesOnly(empty, bar_seconds=bar_s)

    def path(r: int) -> Any:
        market = _Path(empty, bar_seconds=bar_s)
        market.row = r
        return market

    return times, path


@dataclass
class _Targets:
    """The targets of one ``[[perp]]`` on the paths, from the pieces ``build_targets`` composes:
    the strategy's signals (n, ks) and each policy variant's multiplier (n,), each either shared by
    every path (it read no market column) or None (computed on each path's market)."""

    signals: np.ndarray | None
    mults: list[np.ndarray | None]
    variants: list[Any]
    policy: Any
    columns: pd.Index
    shared: np.ndarray | None  # (n, m): every path's targets, when nothing reads the path

    def on(self, market: Any, cfg: Any, spec: Any) -> np.ndarray:
        """The targets (n, m) on one path's market (the shared ones when nothing reads it)."""
        if self.shared is not None:
            return self.shared
        sig = self.signals if self.signals is not None else _signals(cfg, market).to_numpy(dtype=np.float64)
        return _compose(sig, [m if m is not None else _multiplier(v, market, spec)
                              for m, v in zip(self.mults, self.variants)])


def _signals(cfg: Any, market: Any) -> pd.DataFrame:
    import strategies

    s = cfg.strategy
    return strategies.signals(market, s.name, s.params or None, filter=s.filter,
                              filter_params=s.filter_params or None)


def _variants(cfg: Any) -> list[Any]:
    from strategies.policies.base import expand

    return expand(cfg.policies)


def _multiplier(v: Any, market: Any, spec: Any) -> np.ndarray:
    from strategies.policies.build import policy_multiplier

    return np.asarray(policy_multiplier(v, market, spec), dtype=np.float64)


def _compose(sig: np.ndarray, mults: list[np.ndarray]) -> np.ndarray:
    """``build_targets``' grid: column ``i * kp + j`` is strategy column ``i`` scaled by variant
    ``j`` (``strategies.policies.build.scale_signal``)."""
    from strategies.policies.build import scale_signal

    kp, ks = len(mults), sig.shape[1]
    return scale_signal(np.repeat(sig, kp, axis=1), np.tile(np.column_stack(mults), (1, ks)))


def _targets(cfg: Any, times: Any, first: Any, spec: Any) -> _Targets:
    """Which pieces of ``cfg``'s targets depend on the path (probed on ``times``, a market of
    bar times only), the shared ones, and the grid's columns and engine policy (``build_targets``
    on the first path's market ``first``)."""
    from strategies.policies import build_targets

    s = cfg.strategy
    _, policy, columns = build_targets(first, s.name, s.params or None, cfg.policies, filter=s.filter,
                                       filter_params=s.filter_params or None, spec=spec)
    try:
        sig = _signals(cfg, times).to_numpy(dtype=np.float64)
    except _NeedsData:
        sig = None
    mults: list[np.ndarray | None] = []
    variants = _variants(cfg)
    for v in variants:
        try:
            mults.append(_multiplier(v, times, spec))
        except _NeedsData:
            mults.append(None)
    shared = _compose(sig, mults) if sig is not None and all(m is not None for m in mults) else None  # type: ignore[arg-type]
    return _Targets(signals=sig, mults=mults, variants=variants, policy=policy, columns=columns, shared=shared)


@contextmanager
def _one_thread() -> Iterator[None]:
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@dataclass
class _Perp:
    """One ``[[perp]]``'s engine arguments, built once for all paths."""

    cfg: Any
    targets: _Targets
    labels: list[str]
    acc: dict[str, np.ndarray]
    pol: dict[str, np.ndarray]
    lag: int
    initial: np.ndarray
    scanned: tuple | None  # the shared targets' (flat, bits, caps), when every path has them


def _get(d: dict[str, np.ndarray], key: str) -> np.ndarray:
    return d[key]


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: numba types a read-only array apart from a writable one, and the run's
    own calls (``simulate_perp`` on pandas' read-only columns, ``compute_metrics`` on a broadcast
    initial capital) compiled the read-only variants; a writable argument would compile the
    kernel again (about 30 s on an empty cache)."""
    v = a.view()
    v.flags.writeable = False
    return v


def _setup(cfg: Any, account: Any, batch: PathBatch, spec: Any, markets: tuple[Any, Callable[[int], Any]],
           first_max: float) -> _Perp:
    from backtest.engine.settings import SettingsError, account_arrays, policy_arrays
    from backtest.runner.labels import level_frame, readable_labels
    from backtest.runner.run import perp_account

    account = perp_account(cfg) if account is None else account
    tg = _targets(cfg, markets[0], markets[1](0), spec)
    m = len(tg.columns)
    acc = account_arrays(account, m, spec.taker_fee, n_bars=batch.n)
    if (acc["leverage"] > first_max).any():  # simulate_perp's check, with its message
        j = int(np.argmax(acc["leverage"] > first_max))
        raise SettingsError(f"Account.leverage={acc['leverage'][j]} (column {j}) exceeds the tier maximum "
                            f"{first_max:g} of {spec.symbol}; choose a leverage setting <= {first_max:g}")
    perp = _Perp(cfg=cfg, targets=tg, labels=readable_labels(level_frame(tg.columns)), acc=acc,
                 pol=policy_arrays(tg.policy, m), lag=int(account.lag),
                 initial=_read_only(np.ascontiguousarray(acc["initial_capital"], dtype=np.float64)), scanned=None)
    if tg.shared is not None:
        perp.scanned = _scan(perp, tg.shared, batch.n)
    return perp


def _scan(perp: _Perp, target: np.ndarray, n: int) -> tuple:
    """simulate_perp's preparation of a target: its flat view, :func:`nb.target_scan_nb`'s bitmap
    and :func:`nb.record_caps_nb`'s record bounds (the dense specialisation: no position changes)."""
    from backtest.engine import core, nb

    m = target.shape[1]
    flat = core._flat(target)
    bits, has_inf = nb.target_scan_nb(*flat, n, m, min(n, max(n - perp.lag, 0)))
    if has_inf.any():
        j = int(np.argmax(has_inf))
        raise ShockError(f"[[perp]] {perp.cfg.name!r}: the target of column {perp.labels[j]!r} is infinite on a "
                         "bootstrap path; a strategy or policy must give NaN to keep the position")
    caps = nb.record_caps_nb(bits, n, perp.lag, n, perp.acc["call_response"], perp.acc["after_liq"])
    caps[3] = 0
    return flat, bits, caps


def run_paths(cfgs: Sequence[Any], batch: PathBatch, spec: Any, accounts: Sequence[Any] | None = None,
              log: Callable[[int], None] | None = None) -> list[pd.DataFrame]:
    """``[[perp]]`` tables on every path of ``batch``: :data:`PATH_METRICS` per path and column.

    Parameters
    ----------
    cfgs : :class:`backtest.runner.config.PerpConfig` tables, all run on each path.
    batch : the paths (:meth:`StationaryBootstrap.batch`).
    spec : the market spec.
    accounts : an engine ``Account`` per table replacing its own (None: the tables').
    log : called with the number of paths done, every 10 %.

    Returns
    -------
    One float64 DataFrame per table, indexed by (``path``, ``column``: the report's labels, in the
    grid's order), one column per :data:`PATH_METRICS` (NaN where the metrics block has null: a
    value that is not finite; ``first_liquidation_bar`` NaN: none).
    """
    from backtest.engine import core
    from backtest.engine.enums import SERIES
    from backtest.market import TIER_MAXLEV
    from backtest.metrics import nb as mnb
    from backtest.metrics.compute import _day_end
    from backtest.metrics.returns import bars_per_year

    n, p = batch.n, batch.keys.shape[0]
    tiers, ntiers, tier_ver = spec.tier_arrays(batch.timestamps)
    markets = _markets(batch)
    perps = [_setup(c, None if accounts is None else accounts[k], batch, spec, markets,
                    float(tiers[:, 0, TIER_MAXLEV].min())) for k, c in enumerate(cfgs)]
    keep = ["equity", "position"]  # what the dense specialisation stores
    omap = np.array([keep.index(s) if s in keep else -1 for s in SERIES], dtype=np.int64)
    dtypes = list(core.KERNEL_RECORD_DTYPES.items())
    clock = mnb.Clock(np.ones(n), _day_end(batch.timestamps), float(bars_per_year(batch.bar_ms)), False)
    res = [np.full((p, len(q.labels), len(PATH_METRICS)), np.nan) for q in perps]
    step = max(1, p // 10)
    with _one_thread():
        for r in range(p):
            bars = batch.perp_bars(r)
            market = markets[1](r)
            for q, vals in zip(perps, res):
                acc, pol = q.acc, q.pol
                m = len(q.labels)
                (tflat, trs, tcs), bits, caps = (q.scanned if q.scanned is not None
                                                 else _scan(q, q.targets.on(market, q.cfg, spec), n))
                out = np.empty((2, m, n))
                starts = np.zeros_like(caps)
                np.cumsum(caps[:, :-1], axis=1, out=starts[:, 1:])
                bufs = [np.empty(int(caps[k].sum()) + 1, dt) for k, (_, dt) in enumerate(dtypes)]
                fpos = np.zeros((m, bars.fe_bar.shape[0]))
                counts = core.call_kernel(False, bars, (tflat, trs, tcs), q.lag, spec, (tiers, ntiers, tier_ver),
                                          acc, pol, omap, out, bufs, fpos, starts, caps, bits)
                if (np.stack(counts) > caps).any():  # simulate_perp's guard: never read bad records
                    raise RuntimeError("engine error: a column wrote more records than record_caps_nb bounds; "
                                       "please report this")
                kept = {name: core._compact(bufs[k], counts[k], caps[k], starts[k])
                        for k, (name, _) in enumerate(dtypes) if name != "position_changes"}
                fill_cols = core._once(partial(np.repeat, np.arange(m, dtype=np.int64), counts[0]))
                stored = {"equity": out[0].T, "position": out[1].T}
                derived = core._derived(stored, kept, fill_cols, fpos, bars, spec, n, m,
                                        partial(_get, stored, "position"))
                # the metrics' compiled pass on the series compute_metrics gives it (each as rows)
                st = np.empty(m, dtype=mnb.column_metrics_dt)
                flows = [np.ascontiguousarray(derived[k]().T) for k in ("capital_added", "cum_funding", "cum_fees")]
                lev = np.ascontiguousarray(derived["leverage"]().T)
                mnb.column_metrics_nb(out[0], *flows, np.empty((m, 0)), out[1], lev, clock,  # type: ignore[call-arg]
                                      q.initial, st)
                if (st["first_bad_bar"] >= 0).any():
                    j = int(np.argmax(st["first_bad_bar"] >= 0))
                    raise ShockError(f"[[perp]] {q.cfg.name!r}: equity of column {q.labels[j]!r} is not finite at "
                                     f"bar {int(st['first_bad_bar'][j])} of bootstrap path {int(batch.keys[r])}")
                liq = kept["liquidations"]
                v = vals[r]
                if len(liq):  # in column order, then bar order: a column's first record is its first
                    cols, at = np.unique(liq["col"], return_index=True)
                    v[cols, 6] = liq["bar"][at]
                for k, name in enumerate(PATH_METRICS[:5]):
                    v[:, k] = st[name]
                v[:, 5] = counts[2]
                v[:, 7] = counts[1]
            if log is not None and ((r + 1) % step == 0 or r + 1 == p):
                log(r + 1)
    out_frames = []
    for q, vals in zip(perps, res):
        vals[np.isinf(vals)] = np.nan  # null in a metrics block (JSON has no inf)
        index = pd.MultiIndex.from_product([batch.keys.tolist(), q.labels], names=["path", "column"])
        out_frames.append(pd.DataFrame(vals.reshape(p * len(q.labels), -1), index=index, columns=list(PATH_METRICS)))
    return out_frames
