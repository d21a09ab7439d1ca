"""Monte Carlo paths for books, puts and products: one path at a time through their simulators.

The perps run their paths as engine columns (:mod:`backtest.stress.paths`); the book engine, the
puts simulator and the products simulator have no such route, so each path is assembled as data
(``StationaryBootstrap.path``'s MarketData; for a book, one per symbol) and run as ``backtest run``
runs the history: targets recomputed on the path, the simulator, then ``compute_metrics``. Cost:
one simulation per path (a book of two symbols with option legs over a month of hours: tens of
milliseconds a path, measured in ``docs/stress.md``), hence the separate, smaller path counts
(``[stress.monte_carlo] book_paths`` and ``instrument_paths``).

**The joint bootstrap of a book** (:class:`JointBootstrap`): one draw of block indices per path,
the SAME indices for every symbol, so a path's bar ``j`` of every symbol is the same history bar
(its trade and mark OHLC relative to the previous close, its funding prints, its volume and
implied volatility): the symbols' co-movement and their funding stay aligned. It needs every
symbol listed on the book's first bar and no missing bar (the bootstrap's condition).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from backtest.data.book import BookData
from backtest.stress.book import book_with
from backtest.stress.bootstrap import StationaryBootstrap
from backtest.stress.common import ShockError
from backtest.stress.montecarlo import QUANTILES, MonteCarloResult
from backtest.stress.paths import PATH_METRICS

Log = Callable[[str], None]


class JointBootstrap:
    """Stationary-bootstrap paths of a book: every symbol on the same block indices.

    Parameters
    ----------
    book : the history; every symbol listed from the book's first bar (``first_bar == 0``), bars
        without gaps.
    mean_block, horizon, seed : as :class:`~backtest.stress.bootstrap.StationaryBootstrap`; the
        indices of path ``k`` are those the single-symbol bootstrap of the first symbol draws for
        ``k`` (same seed, same number of bars), used for every symbol.
    """

    def __init__(self, book: BookData, mean_block: float, horizon: int | None = None, seed: int = 0) -> None:
        late = [s for s, f in zip(book.symbols, book.bars.first_bar) if int(f) != 0]
        if late:
            raise ShockError(f"the joint bootstrap needs every symbol from the book's first bar; {late} start later: "
                             "give a [data] start on or after their listing")
        self.book = book
        self.boots = [StationaryBootstrap(md, mean_block, horizon=horizon, seed=seed) for md in book.data]
        self.mean_block, self.horizon, self.seed = self.boots[0].mean_block, self.boots[0].horizon, self.boots[0].seed

    def draw(self, k: int) -> np.ndarray:
        """The history units (bar ``i + 1`` of the history) of path ``k``'s bars after the first,
        int64 (horizon,), shared by every symbol."""
        return self.boots[0].draw(k)[0]

    def path(self, k: int) -> BookData:
        """Path ``k``: the book with every symbol's data rebuilt from the same units."""
        idx = self.draw(k)
        data = [b.assemble(idx, label=f"joint bootstrap path {k}") for b in self.boots]
        return book_with(self.book, data, f"joint bootstrap path {k} (mean block {self.mean_block:g}, seed {self.seed})")


def _pick(metrics: dict) -> dict[str, float]:
    out = {}
    for key in PATH_METRICS:
        v = metrics.get(key)
        out[key] = np.nan if v is None else float(v)
    return out


def _result(samples: list[tuple[int, str, dict]], n_paths: int, boot: Any, bar_ms: int,
            quantiles: Sequence[float]) -> MonteCarloResult:
    idx = pd.MultiIndex.from_tuples([(k, lab) for k, lab, _ in samples], names=["path", "column"])
    frame = pd.DataFrame([m for _, _, m in samples], index=idx, columns=list(PATH_METRICS))
    hist = pd.DataFrame()
    hist.index.name = "column"
    return MonteCarloResult(samples=frame, history=hist, n_paths=n_paths, mean_block=boot.mean_block,
                            horizon_bars=boot.horizon, bar_ms=bar_ms, seed=boot.seed,
                            quantile_levels=tuple(float(q) for q in quantiles))


def _check_paths(n_paths: Any) -> int:
    if isinstance(n_paths, bool) or not isinstance(n_paths, (int, np.integer)) or n_paths < 1:
        raise ShockError(f"n_paths={n_paths!r} must be a whole number >= 1")
    return int(n_paths)


def _progress(log: Log | None, what: str, done: int, n: int) -> None:
    if log is not None and (done % max(1, n // 10) == 0 or done == n):
        log(f"monte carlo {what}: {done}/{n} paths")


def run_monte_carlo_book(book_cfg: Any, book: BookData, specs: Sequence[Any], *, n_paths: int, mean_block: float,
                         horizon: int | None = None, seed: int = 0, quantiles: Sequence[float] = QUANTILES,
                         log: Log | None = None) -> MonteCarloResult:
    """A ``[[book]]`` (:class:`backtest.runner.config.BookConfig`) on ``n_paths`` joint-bootstrap
    paths of its data: per path its targets, :func:`backtest.runner.book.run_book` (the book
    engine) and ``compute_metrics`` in the settlement currency;
    ``samples`` holds :data:`~backtest.stress.paths.PATH_METRICS` per path and column (the run's
    column labels). ``history`` is left empty (the run has it)."""
    from backtest.metrics import compute_metrics
    from backtest.runner.book import run_book
    from backtest.runner.labels import relabel

    n_paths = _check_paths(n_paths)
    boot = JointBootstrap(book, mean_block, horizon=horizon, seed=seed)
    rows = []
    for k in range(n_paths):
        run, grid = run_book(book_cfg, boot.path(k), specs)
        res, _ = relabel(run.result, grid)
        rows += [(k, str(lab), _pick(m)) for lab, m in compute_metrics(res)["columns"].items()]
        _progress(log, f"book {book_cfg.name}", k + 1, n_paths)
    return _result(rows, n_paths, boot, book.bars.bar_ms, quantiles)


def run_monte_carlo_instrument(simulate: Callable[[Any], tuple[Any, pd.Index]], md: Any, *, n_paths: int,
                               mean_block: float, horizon: int | None = None, seed: int = 0,
                               quantiles: Sequence[float] = QUANTILES, what: str = "",
                               log: Log | None = None) -> MonteCarloResult:
    """A puts or products table on ``n_paths`` stationary-bootstrap paths of ``md`` (the perps'
    paths: same seed, same path ``k``), one path at a time: ``simulate(path_md)`` returns
    ``(SimResult, column grid)`` as the run's ``_puts``/``_products`` do; metrics in the
    settlement currency. A put or a product is never liquidated: its ``liquidations`` count is
    0 on every path, so its liquidation probability is 0 (what the report shows, with the rule
    of three as its bound)."""
    from backtest.metrics import compute_metrics
    from backtest.runner.labels import relabel

    n_paths = _check_paths(n_paths)
    boot = StationaryBootstrap(md, mean_block, horizon=horizon, seed=seed)
    rows = []
    for path in boot.paths(n_paths):
        res, grid = simulate(path.data)
        res, _ = relabel(res, grid)
        for lab, m in compute_metrics(res)["columns"].items():
            vals = _pick(m)
            if np.isnan(vals["liquidations"]):  # a simulator without liquidations: none happened
                vals["liquidations"] = 0.0
            rows.append((path.index, str(lab), vals))
        _progress(log, what, path.index + 1, n_paths)
    return _result(rows, n_paths, boot, md.bar_ms, quantiles)


__all__ = ["JointBootstrap", "run_monte_carlo_book", "run_monte_carlo_instrument"]
