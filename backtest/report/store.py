"""Step 4 of a report: store it atomically, load it back, re-render it.

A report folder is written complete into a temporary sibling folder and then renamed into
place, so a failed run never leaves a half-written report and never damages an earlier one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from backtest.report.build import TOP_COLUMNS, build_report
from backtest.report.collect import SCHEMA_VERSION, STORED_KEYS, ReportError, RunData, collect
from backtest.report.figures import MAX_POINTS
from backtest.report.render import render_html

FILES = ("metrics.json", "config.json", "equity.parquet", "events.parquet", "periods.parquet",
         "drawdowns.parquet", "report.html")
# written only when the report has named periods / perpetual results (their round trips)
OPTIONAL_FILES = ("named_periods.parquet", "trades.parquet")
# what a folder must hold to be loaded (the period tables of an older folder are recomputed from
# equity.parquet, and so are the named periods; report.html is absent after `--no-html`;
# named_periods.parquet is written only for a run with named periods)
REQUIRED = ("metrics.json", "config.json", "equity.parquet", "events.parquet")

# Temporary names: ``.<name>.<kind>-<pid>-<32 hex>@<host>``. The pid and host say who owns one, so
# a later run removes exactly those whose process is gone (SIGKILL, power loss) and never a live
# run's, another machine's (a shared folder) or anything not named so.
_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|staging|old)-(?P<pid>\d+)-[0-9a-f]{32}@(?P<host>[A-Za-z0-9_.-]+)$")
# names of earlier versions (no owner in the name): removed only once a day old
LEGACY_RE = re.compile(r"^\..+\.(?:(?:tmp|staging)-[0-9a-f]{32}|old-[0-9a-f]{8})$")
LEGACY_AGE_S = 86_400


def temp_path(target: Path, kind: str) -> Path:
    """A hidden sibling of ``target`` owned by this process (``kind``: tmp, staging or old)."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex}@{_HOST}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary folders (and files) a killed run left in ``folder``; returns them.

    Only names this module makes are touched: those of this host whose process is gone, and
    those of earlier versions (no owner in the name) at least a day old.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # missing or unreadable: nothing of ours to remove
        return removed
    for p in entries:
        m = TEMP_RE.match(p.name)
        if m is not None:
            stale = m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"]))
        elif LEGACY_RE.match(p.name):
            try:
                stale = time.time() - p.lstat().st_mtime >= LEGACY_AGE_S
            except OSError:
                stale = False
        else:
            continue
        if not stale:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _write_series(path: Path, df: pd.DataFrame) -> None:
    df.to_parquet(path, index=False)


def _write_events(path: Path, df: pd.DataFrame) -> None:
    df.to_parquet(path, index=False)


def _write_html(path: Path, run: RunData, max_points: int, top: int | None = None) -> None:
    # top: the best-ranked columns plotted per result; default the run config's top_n, else 5
    if top is None:
        cfg = run.config.get("config") if isinstance(run.config, dict) else None
        top = cfg.get("top_n") if isinstance(cfg, dict) else None
        top = top if isinstance(top, int) and not isinstance(top, bool) and top >= 1 else TOP_COLUMNS
    path.write_text(render_html(build_report(run, max_points=max_points, top=top)), encoding="utf-8")


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    if not out_dir.is_dir():
        raise ReportError(f"out_dir {out_dir} exists and is not a folder; remove it or choose another path")
    if _exchange(tmp, out_dir):
        shutil.rmtree(tmp)  # now holds the previous report
        return
    old = temp_path(out_dir, "old")
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old)


def store_run(run: RunData, out_dir: str | Path, *, max_points: int = MAX_POINTS, html: bool = True,
              top: int | None = None) -> Path:
    """Write every output file into a temporary sibling of ``out_dir``, then move it into place
    (step 4 of 4). An existing ``out_dir`` is replaced only once the new report is complete.

    ``html=False`` writes the machine outputs only (no ``report.html``; ``rerender`` can make it
    later from the stored files). ``top``: the best-ranked columns plotted per result (default
    the run config's ``top_n``, else :data:`~backtest.report.build.TOP_COLUMNS`)."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent)
    # mkdir (not mkdtemp, which makes a private 0700 folder) so the report gets the usual
    # permissions from the umask, like any folder the user creates
    tmp = temp_path(out_dir, "tmp")
    os.mkdir(tmp)
    try:
        _write_json(tmp / "metrics.json", run.metrics)
        _write_json(tmp / "config.json", run.config)
        _write_series(tmp / "equity.parquet", run.series)
        _write_events(tmp / "events.parquet", run.events)
        periods, drawdowns = run.period_tables()
        periods.to_parquet(tmp / "periods.parquet", index=False)
        drawdowns.to_parquet(tmp / "drawdowns.parquet", index=False)
        if run.metrics.get("named_periods"):
            run.named_table().to_parquet(tmp / "named_periods.parquet", index=False)
        if run.trades is not None:
            run.trades.to_parquet(tmp / "trades.parquet", index=False)
        if run.sweep_oos is not None:
            run.sweep_oos.to_parquet(tmp / "oos_equity.parquet", index=False)
        if html:
            _write_html(tmp / "report.html", run, max_points, top)
        _fsync_tree(tmp)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def write_report(results: Mapping[str, Any], out_dir: str | Path, *, title: str = "Backtest report",
                 config: Mapping | None = None, notes: str = "", rank_by: str = "calmar",
                 max_points: int = MAX_POINTS, html: bool = True, periods: Sequence = (),
                 top: int | None = None) -> Path:
    """Compute, build, render and store a report of one or more simulation results.

    Parameters
    ----------
    results : report name -> result. Several results (e.g. perp policies, a put strategy, an
        inverse product, a book) go into one report and are compared side by side in USD. A book
        (``to_sim_result()``, ``positions``, ``symbols``) also gets its per-instrument attribution.
    out_dir : the report folder (e.g. ``reports/<run-id>``); replaced atomically if it exists.
    title, notes : shown at the top of ``report.html``.
    config : the resolved run configuration, stored as ``config.json`` and shown in the page.
    rank_by : USD metric that ranks the comparison (see ``docs/reports.md``).
    max_points : most points per plotted line (metrics always use every bar).
    html : False writes the machine outputs only (no ``report.html``).
    periods : named periods ``(name, start_ms, end_ms)`` reported apart (``named_periods.parquet``
        and a table per result in the page); see :func:`~backtest.report.collect.collect`.
    top : the best-ranked columns of each result plotted (default 5); the tables hold every column.

    Returns
    -------
    Path of the report folder holding ``metrics.json``, ``equity.parquet``, ``events.parquet``,
    ``periods.parquet``, ``drawdowns.parquet``, ``config.json``, ``report.html`` and, with named
    periods, ``named_periods.parquet``.
    """
    run = collect(results, title=title, config=config, notes=notes, rank_by=rank_by, periods=periods)
    return store_run(run, out_dir, max_points=max_points, html=html, top=top)


def _check_metrics(doc: object, path: Path) -> None:
    """Refuse a ``metrics.json`` that lacks a key the page is built from (see ``STORED_KEYS``),
    naming the first missing key and where it is missing."""
    fix = "write the report again with `backtest run` (or restore the file)"

    def need(node: object, kind: str, where: str) -> None:
        if not isinstance(node, dict):
            raise ReportError(f"{path}: {where or 'the document'} is a {type(node).__name__}, expected an object; {fix}")
        for key in STORED_KEYS[kind]:
            if key not in node:
                raise ReportError(f"{path}: key {key!r} is missing{' in ' + where if where else ''}; "
                                  f"the file is incomplete: {fix}")

    need(doc, "", "")
    need(doc["comparison"], "comparison", "comparison")
    if not isinstance(doc["comparison"]["rows"], list):
        raise ReportError(f"{path}: comparison.rows is not a list; {fix}")
    for i, row in enumerate(doc["comparison"]["rows"]):
        need(row, "row", f"comparison.rows[{i}]")
    results = doc["results"]
    if not isinstance(results, dict) or not results:
        raise ReportError(f"{path}: results holds no result; {fix}")
    for name, res in results.items():
        need(res, "result", f"results.{name}")
        for basis in ("settle", "usd"):
            need(res[basis], "basis", f"results.{name}.{basis}")
            cols = res[basis]["columns"]
            missing = [c for c in res["columns"] if not isinstance(cols, dict) or c not in cols]
            if missing:
                raise ReportError(f"{path}: column {missing[0]!r} is missing in results.{name}.{basis}.columns; "
                                  f"the file is incomplete: {fix}")
    for i, row in enumerate(doc["comparison"]["rows"]):
        if row["result"] not in results or row["column"] not in results[row["result"]]["columns"]:
            raise ReportError(f"{path}: comparison.rows[{i}] names {row['result']!r} / {row['column']!r}, which "
                              f"is not in results; {fix}")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not UTF-8 text; write the report again with `backtest run`") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                          "write the report again with `backtest run`") from None


def load_stored(run_dir: str | Path) -> RunData:
    """Load a stored report folder back into :class:`RunData` (no re-simulation).

    Raises
    ------
    ReportError
        A file is missing, is not valid JSON / Parquet, has another schema version, or lacks a
        key the page is built from; the message names the file and the key.
    """
    run_dir = Path(run_dir)
    missing = [f for f in REQUIRED if not (run_dir / f).is_file()]
    if missing:
        raise ReportError(f"{run_dir} lacks {missing}; it is not a complete report folder "
                          "(write it again with write_report)")
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path)
    version = metrics.get("schema_version") if isinstance(metrics, dict) else None
    if version != SCHEMA_VERSION:
        raise ReportError(f"{metrics_path} has schema_version {version!r}; this code reads "
                          f"version {SCHEMA_VERSION} (write the report again with this version)")
    _check_metrics(metrics, metrics_path)
    config = _read_json(run_dir / "config.json")
    def parquet(name: str, optional: bool = False, again: str = "write the report again with `backtest run`"):
        """The table of ``run_dir / name``; None for an optional file that is not there (a
        folder written before it existed)."""
        if optional and not (run_dir / name).is_file():
            return None
        try:
            return pd.read_parquet(run_dir / name)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            first = (str(exc).splitlines() or [""])[0]
            raise ReportError(f"{run_dir / name}: not a readable Parquet file ({first}); {again}") from None

    series, events = parquet("equity.parquet"), parquet("events.parquet")
    # a folder written before these files: recomputed from equity.parquet
    periods, drawdowns = parquet("periods.parquet", optional=True), parquet("drawdowns.parquet", optional=True)
    if (periods is None) != (drawdowns is None):
        periods = drawdowns = None  # one of the pair is missing: recompute both from the same series
    # recomputed from the series when the file is missing
    named = parquet("named_periods.parquet", optional=True) if metrics.get("named_periods") else None
    trades = parquet("trades.parquet", optional=True)  # a folder written before round trips existed: none
    # a sweep with a split: the stitched out-of-sample growth of its report section
    sweep_oos = parquet("oos_equity.parquet", optional=True, again="run the sweep again with `backtest sweep`")
    return RunData(metrics=metrics, series=series, events=events, config=config, periods=periods,
                   drawdowns=drawdowns, named=named, trades=trades, sweep_oos=sweep_oos)


def rerender(run_dir: str | Path, *, max_points: int = MAX_POINTS, top: int | None = None) -> Path:
    """Rebuild ``report.html`` of a stored report from its stored files; returns its path.

    The page is written to a temporary file in the folder and renamed over the old one, so a
    failure leaves the previous page in place.
    """
    run_dir = Path(run_dir)
    run = load_stored(run_dir)
    target = run_dir / "report.html"
    remove_stale_temporaries(run_dir)
    tmp = temp_path(target, "tmp")
    try:
        _write_html(tmp, run, max_points, top)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
