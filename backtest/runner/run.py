"""Execute a run configuration: check it, load data, build targets, simulate, write the report."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from backtest.result import SimResult
from backtest.runner.checks import check_settings, settings_error, unknown_fields
from backtest.runner.book import BookRun, load_book, option_columns, run_book
from backtest.runner.config import BookConfig, ConfigError, PerpConfig, ProductConfig, PutsConfig, RunConfig
from backtest.runner.labels import relabel

Log = Callable[[str], None]
# extra files of a report folder, computed from the collected report data and the column levels
# before anything is written: (run data, {result name: level frame}) -> {file name: text}
Extras = Callable[[Any, dict[str, pd.DataFrame]], Mapping[str, str]]


@dataclass
class RunOutcome:
    """What :func:`execute` did.

    Attributes
    ----------
    run_id : ``<title slug>-<12 hex digits>`` (see :meth:`RunConfig.run_id`).
    out_dir : the report folder (absolute).
    results : simulation name -> result, with the readable column labels of the report (a
        ``[[book]]``'s as a SimResult of kind ``'book'``).
    books : ``[[book]]`` name -> :class:`~backtest.runner.book.BookRun` (its result and
        per-position series, same labels).
    levels : simulation name -> level frame (index = column label, one column per grid level).
    metrics : the ``metrics.json`` document written.
    notes : data notes (fallbacks, filled or missing ranges).
    seconds : wall time of the run.
    """

    run_id: str
    out_dir: Path
    results: dict[str, SimResult]
    levels: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    books: dict[str, BookRun] = field(default_factory=dict)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


COMPILING = "compiling kernels for {what} (first run only: later runs load them from the numba cache)"


@contextlib.contextmanager
def compile_notice(status: Log | None, what: str) -> Iterator[None]:
    """Say on ``status`` when numba compiles kernels during the block, and how long it took.

    Kernels are compiled on first use and cached on disk (``cache=True``), so the first run in
    a new environment spends most of its time here, silently otherwise. The first outermost
    compilation of the block logs :data:`COMPILING` (once per block, however many kernels, or
    nested helpers, it compiles); at the end, ``"  compiled in <s> s"``. A block that compiles
    nothing (a warm cache) logs nothing. ``status=None``: no listener, nothing said.
    """
    if status is None:
        yield
        return
    from numba.core import event

    state = {"depth": 0, "t0": 0.0, "seconds": 0.0, "said": False}

    class Notice(event.Listener):
        def on_start(self, ev: Any) -> None:  # noqa: ARG002 - numba's Listener interface
            if state["depth"] == 0:
                state["t0"] = time.perf_counter()
                if not state["said"]:
                    state["said"] = True
                    status(COMPILING.format(what=what))
            state["depth"] += 1

        def on_end(self, ev: Any) -> None:  # noqa: ARG002
            state["depth"] -= 1
            if state["depth"] == 0:
                state["seconds"] += time.perf_counter() - state["t0"]

    with event.install_listener("numba:compile", Notice()):
        yield
    if state["said"]:
        status(f"  compiled in {state['seconds']:.1f} s")


def load_data(cfg: RunConfig) -> Any:
    """The run's :class:`~backtest.data.marketdata.MarketData` (``[data]`` table)."""
    from backtest.data import load_market_data

    d = cfg.data
    iv = tuple(d.iv.split("/")) if d.iv else None
    return load_market_data(d.exchange, d.symbol, d.timeframe, root=d.root, start=d.start, end=d.end, iv=iv,
                            allow_mark_fallback=d.allow_mark_fallback, allow_gaps=d.allow_gaps,
                            allow_partial_range=d.allow_partial_range, allow_extreme_funding=d.allow_extreme_funding)


def load_warmup(cfg: RunConfig, md: Any, log: Log = _stderr) -> tuple[Any, list[str]]:
    """The data the indicators warm up on (``[data] lookback_days`` before the first bar, then
    the run's bars), and its notes; ``(None, [])`` without a lookback.

    Targets are computed on it and only their rows of the run's bars are traded, so a strategy
    with a 200-day average trades from ``start`` instead of 200 days later. The bars before the
    store's first bar cannot be loaded: the note says how many days were.

    Raises
    ------
    DataValidationError
        The run's bars are not the last bars of the longer load (never expected: same store).
    """
    from backtest.data import load_market_data

    d = cfg.data
    if not d.lookback_days or md is None or md.n == 0:
        return None, []
    first = int(md.timestamps[0])
    early = first - int(round(d.lookback_days * 86_400_000))
    iv = tuple(d.iv.split("/")) if d.iv else None
    warm = load_market_data(d.exchange, d.symbol, d.timeframe, root=d.root, start=early, end=d.end, iv=iv,
                            allow_mark_fallback=d.allow_mark_fallback, allow_gaps=d.allow_gaps,
                            allow_partial_range=True, allow_extreme_funding=d.allow_extreme_funding)
    k0 = int(np.searchsorted(warm.timestamps, first))
    if warm.n - k0 != md.n or not np.array_equal(warm.timestamps[k0:], md.timestamps):
        from backtest.data import DataValidationError

        raise DataValidationError(f"the warm-up load of {d.symbol} ({warm.n} bars) does not end with the run's "
                                  f"{md.n} bars; remove [data] lookback_days or report this")
    got = k0 * md.bar_ms / 86_400_000
    notes = [f"warm-up: {k0} bars ({got:g} days) before {md.frame.index[0]} loaded for the indicators "
             f"(lookback_days = {d.lookback_days:g}); trading starts at the first bar"]
    if got < d.lookback_days:
        notes[0] += f"; the store holds only {got:g} of the {d.lookback_days:g} days asked for before it"
    for note in notes:
        log(f"  note: {note}")
    return warm, notes


def _warm_rows(frame: pd.DataFrame, md: Any) -> pd.DataFrame:
    """The rows of targets computed on the warm-up data that are the run's bars."""
    return frame.iloc[len(frame) - md.n:]


def load_inputs(cfg: RunConfig, log: Log = _stderr, single: bool | None = None
                ) -> tuple[Any, Any, list[str], str, str, dict[str, tuple[Any, list[Any]]]]:
    """The data, the market and the books of a run, with the fingerprint its run id is made
    from (one rule for ``backtest run`` and ``backtest sweep``): ``(md, spec, notes, market_fp,
    fingerprint, books)``. The [data] symbol is loaded for the single-instrument simulations
    (``single``; default: the config has some); a run of books only loads the books' symbols."""
    from backtest.data import default_root
    from backtest.market import load_market

    d = cfg.data
    if single is None:
        single = bool(cfg.perp or cfg.puts or cfg.products)
    md = spec = None
    notes: list[str] = []
    fingerprint = market_fp = ""
    if single:
        log(f"loading {d.exchange} {d.symbol} {d.timeframe} ({d.start or 'first bar'} .. {d.end or 'last bar'})")
        md = load_data(cfg)
        spec = load_market(d.exchange, d.symbol, data_dir=d.root or default_root())
        notes = list(md.notes)
        log(f"  {md.n} bars from {md.source}; {len(md.funding)} funding prints")
        for note in notes:
            log(f"  note: {note}")
        market_fp = market_fingerprint(spec)
        fingerprint = f"data:{md.fingerprint}|market:{market_fp}"
    books = load_books(cfg, log)
    for name, (book, specs) in books.items():
        for note in book.notes:
            notes.append(f"{name}: {note}")
            log(f"  note: {name}: {note}")
        # appended only when there are books: a run without books keeps its id
        fingerprint += f"|book:{name}:{book.fingerprint}:" + ",".join(market_fingerprint(sp) for sp in specs)
    return md, spec, notes, market_fp, fingerprint, books


def market_fingerprint(spec: Any) -> str:
    """sha256 hex of a market spec's content (contract terms, fees, tier tables and history)."""
    def plain(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (list, tuple)):
            return [plain(x) for x in obj]
        return obj

    blob = json.dumps(plain(spec), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _settings(cls: type, values: dict[str, Any], where: str) -> Any:
    bad = unknown_fields(cls, values, where)
    if bad:
        raise ConfigError("\n".join(bad))
    return cls(**values)


def perp_account(cfg: PerpConfig) -> Any:
    """The engine :class:`~backtest.engine.settings.Account` of a ``[[perp]]`` table."""
    from backtest.engine import Account

    return Account(**cfg.account.model_dump())


def simulate_perp_config(cfg: PerpConfig, md: Any, spec: Any, account: Any = None,
                         warm: Any = None) -> tuple[SimResult, pd.Index]:
    """Simulate a ``[[perp]]`` table on ``md`` as ``backtest run`` does: the strategy's targets
    (computed on ``md``) x the policies, the table's account, ``simulate_perp``.

    Parameters
    ----------
    cfg : the ``[[perp]]`` table.
    md, spec : market data and market spec (the run's, or a stressed copy: shocks, bootstrap paths).
    account : an :class:`~backtest.engine.settings.Account` replacing the table's (a shocked
        account: :class:`backtest.stress.SlippageShock`); None: :func:`perp_account` of ``cfg``.
    warm : the warm-up data (``[data] lookback_days`` earlier bars, then ``md``'s) the targets are
        computed on, only ``md``'s rows traded (:func:`load_warmup`); None: the targets from ``md``.

    Returns
    -------
    (the result with the grid's columns, the column index of the grid: :func:`backtest.runner.labels.relabel`
    makes the report's labels from it).
    """
    from backtest.engine import simulate_perp
    from strategies.policies import build_targets

    # with a warm-up (``warm``: earlier bars, then md's) the indicators see the earlier bars and
    # only md's rows are traded
    target, policy, columns = build_targets(warm if warm is not None else md, cfg.strategy.name,
                                            cfg.strategy.params or None, cfg.policies,
                                            filter=cfg.strategy.filter,
                                            filter_params=cfg.strategy.filter_params or None, spec=spec)
    if warm is not None:
        target = _warm_rows(target, md)
    account = perp_account(cfg) if account is None else account
    return simulate_perp(md, target, spec, account, policy, columns=columns), columns


def _puts(cfg: PutsConfig, where: str, md: Any, spec: Any, warm: Any = None) -> tuple[SimResult, pd.Index]:
    from backtest.options import PutSettings, simulate_puts

    values = dict(cfg.settings)
    hold = columns = None
    if cfg.strategy is not None:
        import strategies
        from strategies.long_put import settings_of

        sig = strategies.signals(warm if warm is not None else md, "long_put", cfg.strategy.params or None,
                                 filter=cfg.strategy.filter, filter_params=cfg.strategy.filter_params or None)
        if warm is not None:
            sig = _warm_rows(sig, md)
        hold = sig.to_numpy(dtype=np.float64)
        values = settings_of(sig.columns) | values
        columns = sig.columns
    settings = _settings(PutSettings, values, f"{where}.settings")
    # a coin account is named after the coin by the simulator; a USD account after the margin
    # currency of a linear market (USDT), else USD
    currency = None if settings.settlement == "coin" else ("USD" if spec.inverse else spec.settle)
    res = simulate_puts(md, settings, hold=hold, columns=columns, currency=currency)
    return res, res.columns


def _products(cfg: ProductConfig, where: str, md: Any, spec: Any) -> tuple[SimResult, pd.Index]:
    from backtest.products import ProductSettings, simulate_product

    settings = _settings(ProductSettings, dict(cfg.settings), f"{where}.settings")
    # products are bought with USD (investment), whatever margins the backing perp
    res = simulate_product(md, settings, currency="USD" if spec.inverse else spec.settle)
    return res, res.columns


def load_books(cfg: RunConfig, log: Log = _stderr) -> dict[str, tuple[Any, list[Any]]]:
    """Every ``[[book]]``'s data (``load_book_data`` on the run's ``[data]`` exchange, timeframe,
    range and allow_* settings) and its instruments' market specs, by book name."""
    from backtest.data import default_root
    from backtest.market import load_market

    d = cfg.data
    out = {}
    for b in cfg.book:
        log(f"loading book {b.name}: {d.exchange} {', '.join(b.symbols)} {d.timeframe} "
            f"({d.start or 'first bar'} .. {d.end or 'last bar'})")
        book = load_book(b, d)
        specs = [load_market(d.exchange, s, data_dir=d.root or default_root()) for s in book.symbols]
        log(f"  {book.bars.n} bars; funding prints: "
            + ", ".join(f"{s} {len(md.funding)}" for s, md in zip(book.symbols, book.data)))
        out[b.name] = (book, specs)
    return out


def _book(cfg: BookConfig, run: RunConfig, loaded: tuple[Any, list[Any]] | None) -> tuple[BookRun, pd.Index]:
    book, specs = loaded if loaded is not None else load_books(run.model_copy(update={"book": [cfg]}),
                                                                lambda _: None)[cfg.name]
    return run_book(cfg, book, specs)


def simulate_all(cfg: RunConfig, md: Any, spec: Any, log: Log = _stderr,
                 books: Mapping[str, tuple[Any, list[Any]]] | None = None,
                 book_runs: dict[str, BookRun] | None = None, status: Log | None = None,
                 warm: Any = None, before_book: Callable[[dict[str, SimResult]], Any] | None = None,
                 ) -> tuple[dict[str, SimResult], dict[str, pd.DataFrame]]:
    """Run every simulation of ``cfg``; results carry readable column labels.

    ``books`` gives each ``[[book]]`` (by name) its loaded ``(BookData, specs)``; each simulated
    book is also put in ``book_runs`` (with the report's labels), when given. ``status``: where
    to say that kernels are compiling (:func:`compile_notice`), None to say nothing. ``warm``:
    the warm-up data of :func:`load_warmup` (strategies and policies are computed on it).
    ``before_book`` is called once before the first book, with the results so far (the wait for
    the book kernels compiled in a second process, :mod:`backtest.precompile`).

    Raises
    ------
    ConfigError
        Listing the settings problem of every simulation that failed validation (a ValueError
        from a strategy, policy, engine or instrument); nothing is returned then.
    """
    jobs: list[tuple[str, str, Callable[[], tuple[SimResult, pd.Index]]]] = []
    for k, p in enumerate(cfg.perp):
        jobs.append((p.name, f"perp[{k}]", partial(simulate_perp_config, p, md, spec, warm=warm)))
    for k, q in enumerate(cfg.puts):
        jobs.append((q.name, f"puts[{k}]", partial(_puts, q, f"puts[{k}]", md, spec, warm)))
    for k, r in enumerate(cfg.products):
        jobs.append((r.name, f"products[{k}]", partial(_products, r, f"products[{k}]", md, spec)))
    for k, b in enumerate(cfg.book):
        jobs.append((b.name, f"book[{k}]", partial(_book, b, cfg, (books or {}).get(b.name))))
    results: dict[str, SimResult] = {}
    levels: dict[str, pd.DataFrame] = {}
    errors: list[str] = []
    for name, where, job in jobs:
        if before_book is not None and where.startswith("book["):
            before_book(results)
            before_book = None
        log(f"simulating {name}")
        try:
            res: Any
            with compile_notice(status, name):
                res, grid = job()
        except ConfigError as exc:  # already '<path>: <reason>' lines
            errors.extend(str(exc).splitlines())
            continue
        except ValueError as exc:  # settings, strategy, policy, engine or instrument validation
            errors.append(f"{where}: [{name}] {exc}")
            continue
        if isinstance(res, BookRun):
            results[name], levels[name] = relabel(res.result, grid)
            if book_runs is not None:
                book_runs[name] = res.relabel(results[name])
        else:
            results[name], levels[name] = relabel(res, grid)
        log(f"  {results[name].n_cols} column(s)")
    if errors:
        raise settings_error(errors)
    return results, levels


def check_reports_dir(reports_dir: str | Path) -> Path:
    """The absolute reports folder, checked before anything is loaded or simulated.

    It may be missing (it is created when the report is written) but then its parent must be
    a folder; nothing on the path may be a file, and the folder that will receive the report
    must be writable.

    Raises
    ------
    ReportError
        Naming the path and the fix (another ``-o``/``reports_dir``, or create the parent).
    """
    from backtest.report import ReportError

    path = Path(reports_dir).absolute()
    fix = "choose another -o/--reports-dir (or reports_dir in the config)"
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise ReportError(f"reports folder {path}: {p} is not a folder (a file is in the way); "
                                  f"move it or {fix}")
            break
    if not path.exists() and not path.parent.is_dir():
        raise ReportError(f"reports folder {path}: its parent {path.parent} does not exist; create it or {fix}")
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise ReportError(f"reports folder {path}: {target} is not writable (read-only or not yours); make it "
                          f"writable or {fix}")
    return path


def _check_run_dir(out_dir: Path) -> None:
    from backtest.report import ReportError

    if (out_dir.exists() or out_dir.is_symlink()) and not out_dir.is_dir():
        raise ReportError(f"{out_dir} exists and is not a folder, so the report of this run cannot replace it; "
                          "move the file or choose another -o/--reports-dir")


def _publish(run: Any, out_dir: Path, files: Mapping[str, str | bytes | Path], html: bool = True,
             top: int | None = None) -> Path:
    """Write the report (and extra files) so the folder appears complete or not at all; a file's
    value is text, bytes, or a Path linked (else copied) into the folder (a sweep's chunk files)."""
    from backtest.report import store_run
    from backtest.report.store import _fsync_tree, _swap_into_place, temp_path

    if not files:
        return store_run(run, out_dir, html=html, top=top)
    out_dir = out_dir.resolve()
    staging = temp_path(out_dir, "staging")
    try:
        store_run(run, staging, html=html, top=top)
        for name, content in files.items():
            if isinstance(content, Path):
                try:
                    os.link(content, staging / name)
                except OSError:
                    shutil.copyfile(content, staging / name)
            elif isinstance(content, bytes):
                (staging / name).write_bytes(content)
            else:
                (staging / name).write_text(content, encoding="utf-8")
        _fsync_tree(staging)
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def execute(cfg: RunConfig, *, reports_dir: str | Path | None = None, log: Log = _stderr,
            source_config: dict[str, Any] | None = None, extras: Extras | None = None,
            html: bool = True, status: Log | None = None) -> RunOutcome:
    """Run every simulation of ``cfg`` on one data set and write one comparison report.

    Parameters
    ----------
    cfg : the validated run configuration.
    reports_dir : parent folder of the report (default ``cfg.reports_dir``); the report goes to
        ``<reports_dir>/<run id>`` and replaces an earlier report of the same id.
    log : receives progress lines.
    source_config : the config as written (path and parsed TOML), stored in ``config.json``.
    extras : computes extra files of the report folder (``backtest sweep``: ``sweep.csv``,
        ``heatmap.html``) before anything is written.
    html : False (``--no-html``) writes the machine outputs only, no ``report.html``.
    status : progress for a person at a terminal, besides ``log``: that kernels are compiling
        (the first run in an environment) and for how long (:func:`compile_notice`); None (batch
        jobs, ``--quiet``) adds nothing to ``log``'s lines.

    Returns
    -------
    RunOutcome

    Raises
    ------
    ConfigError
        Every settings problem (found before loading data, or by the simulations), together;
        or the memory estimate exceeds the limit (``budget.py``), before simulating.
    ReportError
        The reports folder cannot receive the report (a file in the way, a missing parent,
        read-only), before loading the data; or the run's own folder is a file, before simulating.
    DataValidationError, FileNotFoundError
        The data cannot be loaded (missing file, unknown symbol, empty range).

    Temporary folders of killed runs (dead pid, this host) in the reports folder are removed first.

    Nothing is written unless every step succeeds; the folder is moved into place complete, so
    a failing run never leaves a half-written report and never damages an earlier one.
    """
    from backtest.report import collect

    from backtest.report.store import remove_stale_temporaries
    from backtest.runner import budget
    from backtest.precompile import start_book_precompile

    t0 = time.perf_counter()
    problems = check_settings(cfg)
    if problems:
        raise settings_error(problems)
    # everything that can fail without the data fails here, in the first second
    reports = check_reports_dir(reports_dir if reports_dir is not None else cfg.reports_dir)
    limit, limit_source = budget.limit_for(cfg.memory_limit)
    for p in remove_stale_temporaries(reports):
        log(f"removed {p.name}, left by a run that was killed")

    md, spec, notes, market_fp, fingerprint, books = load_inputs(cfg, log)
    warm, warm_notes = load_warmup(cfg, md, log)
    notes += warm_notes
    if warm is not None:  # the earlier bars change the targets: part of what the id is made from
        fingerprint += f"|warmup:{warm.fingerprint}"

    run_id = cfg.run_id(fingerprint)
    out_dir = reports / run_id
    _check_run_dir(out_dir)
    if limit_source not in ("memory_limit", budget.ENV):
        limit, limit_source = budget.limit_for(None)  # what is left now that the data is loaded
    sims = budget.columns_of(cfg) + [_book_columns(b, books[b.name][0]) for b in cfg.book]
    bars = max(([int(md.n)] if md is not None else []) + [int(bk.bars.n) for bk, _ in books.values()])
    need = budget.estimate(bars, sims)
    if limit is None:
        log(f"  note: memory not checked: {limit_source}")
    budget.check(need, limit, limit_source, ConfigError)

    plan = _stress_plan(cfg, md, spec, books)  # before simulating: a bad window or shock fails here

    book_runs: dict[str, BookRun] = {}
    # a first run compiles the book kernels in a second process meanwhile (None: not worth it)
    ahead = start_book_precompile(cfg, status)
    with ahead or contextlib.nullcontext():
        results, levels = simulate_all(cfg, md, spec, log, books=books, book_runs=book_runs, status=status, warm=warm,
                                       before_book=None if ahead is None else partial(ahead.ready, cfg=cfg,
                                                                                      status=status))
    from backtest.runner.advice import run_warnings

    for warning in run_warnings(results, cfg.data.lookback_days):  # stated on stderr and in the report's notes
        notes.append(f"warning: {warning}")
        log(f"warning: {warning}")
    # a look-ahead the user allowed is stated where a reader of the report sees it
    for name, res in results.items():
        for note in res.meta.get("notes", []):
            if "allow_lookahead = true" in note:
                notes.append(f"{name}: {note}")
                log(f"  note: {name}: {note}")

    if cfg.baselines and md is not None:
        results[BASELINES], levels[BASELINES] = simulate_baselines(md, spec, log)

    resolved = {
        "run_id": run_id,
        "config": cfg.model_dump(mode="json"),
        "source_config": source_config,
        "data": None if md is None else {
            "source": str(md.source), "fingerprint": md.fingerprint, "bars": int(md.n),
            "first_bar": str(md.frame.index[0]), "last_bar": str(md.frame.index[-1]), "notes": notes},
        "market": None if spec is None else {
            "exchange": spec.exchange, "symbol": spec.symbol, "inverse": spec.inverse, "settle": spec.settle,
            "contract_size": spec.contract_size, "taker_fee": spec.taker_fee,
            "liquidation_fee_rate": spec.liquidation_fee_rate, "fingerprint": market_fp},
        "columns": {name: {"levels": list(lv.columns),
                           "values": {lab: [_plain(v) for v in row] for lab, row in zip(lv.index, lv.to_numpy())}}
                    for name, lv in levels.items()},
    }
    if books:
        resolved["books"] = {name: _book_provenance(book, specs) for name, (book, specs) in books.items()}
    log("computing metrics")
    with compile_notice(status, "the metrics"):
        run = collect({name: book_runs.get(name, res) for name, res in results.items()}, title=cfg.title,
                      config=resolved, notes="\n".join(notes), rank_by=cfg.rank_by,
                      periods=[(p.name, *p.span_ms()) for p in cfg.period])
    files: dict[str, str | bytes] = dict(extras(run, levels)) if extras is not None else {}
    if plan is not None:
        files["stress.parquet"] = _run_stress(plan, cfg, md, spec, run, log, status, books)
    log(f"writing report {out_dir}")
    out_dir = _publish(run, out_dir, files, html, cfg.top_n)
    seconds = time.perf_counter() - t0
    log(f"done in {seconds:.1f} s")
    return RunOutcome(run_id=run_id, out_dir=out_dir, results=results, levels=levels, metrics=run.metrics,
                      notes=notes, seconds=seconds, books=book_runs)


def _stress_plan(cfg: RunConfig, md: Any, spec: Any, books: Mapping[str, tuple[Any, list[Any]]]) -> Any:
    """The checked ``[stress]`` plan (:func:`backtest.stress.report.prepare`) on the span of the
    run's data (the [data] market, else the first book's bars); None without ``[stress]``."""
    if cfg.stress is None:
        return None
    from backtest.stress.report import prepare

    if md is not None:
        span = (int(md.timestamps[0]), int(md.timestamps[-1]) + int(md.bar_ms))
    else:
        bars = next(iter(books.values()))[0].bars
        span = (int(bars.timestamp[0]), int(bars.timestamp[-1]) + int(bars.bar_ms))
    return prepare(cfg.stress, md, spec, span, books)


def _run_stress(plan: Any, cfg: RunConfig, md: Any, spec: Any, run: Any, log: Log, status: Log | None,
                books: Mapping[str, tuple[Any, list[Any]]] | None = None) -> bytes:
    """Run the ``[stress]`` plan: its block goes into ``run.metrics['stress']`` (so the page and
    ``metrics.json`` show it), its long table is returned as the bytes of ``stress.parquet``."""
    import io

    from backtest.report.collect import jsonable
    from backtest.stress.report import run_stress

    log("stress: crisis windows, shocks, monte carlo paths")
    with compile_notice(status, "the stress scenarios"):
        block, table = run_stress(plan, cfg, md, spec, run, log, books=books)
    run.metrics["stress"] = jsonable(block)
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


BASELINES = "baselines"  # backtest.runner.baselines.NAME


def simulate_baselines(md: Any, spec: Any, log: Log = _stderr) -> tuple[SimResult, pd.DataFrame]:
    """The run's baselines on its [data] market and window (:mod:`backtest.runner.baselines`:
    spot buy-and-hold, a 1x short held, cash) and their level frame."""
    from backtest.runner.baselines import baselines_result

    log(f"simulating {BASELINES} (spot buy-and-hold, 1x short held, cash)")
    res = baselines_result(md, spec)
    return res, pd.DataFrame({"baseline": list(res.columns)}, index=pd.Index(list(res.columns)))


def _book_columns(cfg: BookConfig, book: Any) -> tuple[str, int, int]:
    """(name, columns, output series) of a ``[[book]]`` for the memory estimate: the account
    series and every instrument's position series, per column."""
    import strategies
    from backtest.book import BOOK_SERIES, POSITION_SERIES
    from strategies.policies.book import expand_book

    s = cfg.strategy
    try:
        n = len(strategies.get_book(s.name).grid(s.params or None)) * len(expand_book(list(cfg.policies)))
        if s.gate is not None:
            n *= len(strategies.get(s.gate).grid(s.gate_params or None))
    except ValueError:  # reported by the settings checks
        n = 1
    hedges, legs = option_columns(cfg)
    return cfg.name, n * hedges, len(BOOK_SERIES) + (book.bars.k + legs) * len(POSITION_SERIES)


def _book_provenance(book: Any, specs: list[Any]) -> dict[str, Any]:
    """What ``config.json`` records of a book's data and markets."""
    return {
        "fingerprint": book.fingerprint, "bars": int(book.bars.n),
        "first_bar": str(book.bars.index[0]), "last_bar": str(book.bars.index[-1]), "notes": list(book.notes),
        "symbols": {s: {"source": str(md.source), "fingerprint": md.fingerprint,
                        "first_bar": str(md.frame.index[0]),
                        "market": {"exchange": sp.exchange, "inverse": sp.inverse, "settle": sp.settle,
                                   "contract_size": sp.contract_size, "taker_fee": sp.taker_fee,
                                   "liquidation_fee_rate": sp.liquidation_fee_rate,
                                   "fingerprint": market_fingerprint(sp)}}
                    for s, md, sp in zip(book.symbols, book.data, specs)},
    }


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
