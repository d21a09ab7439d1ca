"""`backtest run`, `backtest sweep` and `backtest report`.

stdout carries only results (the report path, and for ``sweep`` the ranked table unless
``--quiet``); progress goes to stderr: plain lines when stderr is not a terminal (batch jobs),
timestamped rich lines when it is.

Exit codes: 0 success; 2 invalid input (config, data, settings, a report folder that is not
one, an output folder that cannot be written, a run too large for the memory), with
``error: <reason>`` on stderr (its first line names every problem; details may follow,
indented); 130 Ctrl-C and 143 SIGTERM (one ``error:`` line, temporary files removed); 1 an
unexpected failure (``error: unexpected <type>: <message>``; ``--debug`` shows the traceback).
A failed or interrupted run writes nothing into the reports folder.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from backtest.exits import (
    ENV_ERRNOS, EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_raises,
)


@contextlib.contextmanager
def _guard(debug: bool) -> Iterator[None]:
    """Every failure of a command becomes one ``error:`` line and an exit code."""
    try:
        with sigterm_raises():
            yield
    except Terminated:
        print("error: terminated (SIGTERM); the run stopped and left nothing half-written "
              "(an earlier report of the same run id is unchanged)", file=sys.stderr)
        raise typer.Exit(code=EXIT_TERMINATED) from None
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); the run stopped and left nothing half-written", file=sys.stderr)
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes an error line and an exit code
        _fail(exc, debug)


def _log_for(quiet: bool):
    if quiet:
        return lambda _msg: None
    if sys.stderr.isatty():
        from rich.console import Console

        console = Console(stderr=True, log_path=False, highlight=False)
        return lambda msg: console.log(msg, markup=False)
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def _status_for(quiet: bool, log):
    """Progress for a person at a terminal (kernels compiling on a first run): ``log`` when
    stderr is a terminal, else None, so batch jobs' stderr keeps its lines."""
    return log if not quiet and sys.stderr.isatty() else None


def _fail(exc: BaseException, debug: bool) -> None:
    """Report ``exc`` on stderr and exit 2 (invalid input) or 1 (anything else)."""
    if debug:
        raise exc
    # every input-validation error of the project is a ValueError (ConfigError,
    # DataValidationError, MarketSpecError, StrategyError, ReportError, tomllib's decode error,
    # ...); a missing file is a FileNotFoundError
    if isinstance(exc, (ValueError, FileNotFoundError)):
        text = str(exc).strip() or type(exc).__name__
        print(f"error: {text}", file=sys.stderr)
        raise typer.Exit(code=EXIT_INPUT)
    if isinstance(exc, OSError) and exc.errno in ENV_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot write{where}: {exc.strerror}; {ENV_ERRNOS[exc.errno]} or choose another "
              "-o/--reports-dir", file=sys.stderr)
        raise typer.Exit(code=EXIT_INPUT)
    first = (str(exc).strip().splitlines() or [""])[0]
    print(f"error: unexpected {type(exc).__name__}: {first} (run again with --debug for the traceback)",
          file=sys.stderr)
    raise typer.Exit(code=EXIT_FAILURE)


def _config(path: Optional[Path]):
    """The validated config and its source (path and parsed TOML) for ``config.json``."""
    from backtest.runner.config import MAIN_JOB, parse_config, read_toml

    src = path or MAIN_JOB
    doc = read_toml(src)
    return parse_config(doc, source=str(src), base=Path(src).parent), {"path": str(src), "toml": doc}


def print_version(value: bool) -> None:
    """``--version`` (eager, on the app and on every command): print the version and exit."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("bearish-backtest")
        except PackageNotFoundError:  # running from a checkout that was never installed
            v = "unknown (not installed)"
        typer.echo(f"backtest {v}")
        raise typer.Exit()


def shown_path(path: Path) -> str:
    """A path as every command prints it: absolute, symlinks and ``..`` resolved."""
    return str(Path(path).resolve())


def run_summary(metrics: dict, top: int) -> str:
    """The ``top`` best-ranked columns of a run's comparison (``metrics.json``), one line each:
    rank, result, column, the ranked metric, return, max drawdown (percent) and liquidations;
    baselines shown in their place, unranked."""
    from backtest.metrics import METRIC_UNITS

    comp = metrics["comparison"]
    key = comp["rank_by"]
    rows, ranked = [], 0
    for r in comp["rows"]:
        if not r["baseline"]:
            if ranked >= top:
                continue
            ranked += 1
        m = metrics["results"][r["result"]]["usd"]["columns"][r["column"]]
        rows.append(("-" if r["rank"] is None else str(r["rank"]), r["result"], r["column"],
                     _fmt(m.get(key), METRIC_UNITS.get(key)), _fmt(m.get("total_return"), "fraction"),
                     _fmt(m.get("max_drawdown"), "fraction"), _fmt(m.get("liquidations"), "count")))
    head = ("rank", "result", "column", key, "return", "max drawdown", "liquidations")
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = [f"best {ranked} column(s) by {key} (USD), with the baselines:"]
    for row in (head, *rows):
        lines.append("  " + "  ".join(x.ljust(w) if k < 3 else x.rjust(w) for k, (x, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def _fmt(v, unit) -> str:  # noqa: ANN001
    """A metric as printed: fractions in percent, counts whole, ratios to 3 digits; '-' for none."""
    if v is None or isinstance(v, (dict, list)):
        return "-"
    if unit == "fraction":
        return f"{100 * v:.2f} %"
    if unit == "count" or isinstance(v, bool):
        return f"{int(v)}"
    return f"{v:.3g}"


def percent_table(table, keys):  # noqa: ANN001, ANN201
    """``table`` with the metrics among ``keys`` whose unit is a fraction written in percent
    (``-12.30 %``), for printing."""
    from backtest.metrics import METRIC_UNITS

    out = table.copy()
    for k in dict.fromkeys(keys):  # each once
        if k in out.columns and METRIC_UNITS.get(k) == "fraction":
            out[k] = [_fmt(None if v is None or v != v else float(v), "fraction") for v in out[k]]
    return out


Reports = typer.Option(None, "--reports-dir", "-o",
                       help="Parent folder of the report (default: the config's reports_dir, 'reports').")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress on stderr; stdout gets only the output path.")
Debug = typer.Option(False, "--debug", help="On failure, raise with the full traceback.")
Version = typer.Option(False, "--version", callback=print_version, is_eager=True,
                       help="Print the version and exit.")
NoHtml = typer.Option(False, "--no-html",
                      help="Write the machine outputs only (JSON, Parquet, CSV; no HTML page); print the folder.")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        config: Optional[Path] = typer.Argument(
            None, help="TOML run config; omitted: the main job (BTC short 2021-11..2023 on the embedded data)."),
        reports_dir: Optional[Path] = Reports,
        top: Optional[int] = typer.Option(
            None, "--top", min=1, help="Best-ranked columns of each result plotted and printed after the run "
                                       "(default: the config's top_n, 5)."),
        no_html: bool = NoHtml,
        quiet: bool = Quiet,
        debug: bool = Debug,
        version: bool = Version,  # noqa: ARG001 (read by its eager callback)
    ) -> None:
        """Run the backtest described by CONFIG and write <reports-dir>/<run-id>/ (metrics.json,
        equity.parquet, events.parquet, periods.parquet, drawdowns.parquet, config.json,
        report.html); print the best columns on stderr and report.html's path on stdout (with
        --no-html: the folder's)."""
        from backtest.runner.run import execute

        with _guard(debug):
            cfg, src = _config(config)
            if top is not None:
                cfg = cfg.model_copy(update={"top_n": top})
            log = _log_for(quiet)
            out = execute(cfg, reports_dir=reports_dir, log=log, source_config=src, html=not no_html,
                          status=_status_for(quiet, log))
            if not quiet:  # on stderr: stdout stays the path alone, for `path=$(backtest run ...)`
                print(run_summary(out.metrics, cfg.top_n), file=sys.stderr, flush=True)
        print(shown_path(out.out_dir if no_html else out.out_dir / "report.html"))

    @app.command("sweep")
    def sweep(
        config: Path = typer.Argument(..., help="TOML run config with a 'sweep' table and a grid in a 'perp' table."),
        reports_dir: Optional[Path] = Reports,
        top: int = typer.Option(20, "--top", min=0, help="Rows of the ranked table printed."),
        memory: Optional[str] = typer.Option(
            None, "--memory", help="Memory for the chunks in flight ('2GB', '512MiB'); default [sweep] memory, "
                                   "else a quarter of the available memory, at most 1 GB."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                              help="Local worker processes (default [sweep] workers, else 1)."),
        scheduler: Optional[str] = typer.Option(
            None, "--scheduler", help="Dask scheduler address (tcp://host:8786): run the chunks on that cluster."),
        full_equity: bool = typer.Option(False, "--full-equity",
                                         help="Also write every column's equity (equity-full-*.parquet)."),
        no_html: bool = NoHtml,
        quiet: bool = Quiet,
        debug: bool = Debug,
        version: bool = Version,  # noqa: ARG001 (read by its eager callback)
    ) -> None:
        """Run a parameter x policy grid in chunks sized to the memory (resumable: a killed sweep
        run again computes only the missing chunks); print the ranked table; write sweep.csv and
        sweep_metrics.parquet (every column), heatmap.html (metric by sweep.x and sweep.y) and the
        report of the best [sweep] report_columns columns; print heatmap.html's path (with
        --no-html: no HTML file, the folder's path)."""
        from backtest.runner.sweep import SHOWN, format_oos_table, format_table, run_sweep

        with _guard(debug):
            cfg, src = _config(config)
            out = run_sweep(cfg, reports_dir=reports_dir, log=_log_for(quiet), source_config=src,
                            html=not no_html, memory=memory, workers=workers, scheduler=scheduler,
                            full_equity=full_equity, quiet=quiet)
        if not quiet:  # fractions (returns, drawdowns) in percent
            print(format_table(percent_table(out.table, (cfg.sweep.metric, *SHOWN)), cfg.sweep.metric, top))
            if out.oos is not None:
                print(format_oos_table(out.oos, cfg.sweep.metric))
        print(shown_path(out.out_dir if no_html else out.out_dir / "heatmap.html"))

    @app.command("report")
    def report(
        run_dir: Path = typer.Argument(..., help="A report folder written by `backtest run` or `backtest sweep`."),
        top: Optional[int] = typer.Option(
            None, "--top", min=1, help="Best-ranked columns of each result plotted (default: the run's top_n)."),
        quiet: bool = Quiet,  # noqa: ARG001 (accepted on every command; the path is all it prints)
        debug: bool = Debug,
        version: bool = Version,  # noqa: ARG001 (read by its eager callback)
    ) -> None:
        """Re-render report.html from the folder's stored files (no data, no simulation); print its path."""
        from backtest.report import rerender

        with _guard(debug):
            if not run_dir.is_dir():
                raise FileNotFoundError(f"{run_dir} is not a folder; pass a report folder such as reports/<run-id>")
            path = rerender(run_dir, top=top)
        print(shown_path(path))
