"""`backtest run`, `backtest sweep` and `backtest report`.

Exit codes: 0 success; 2 invalid input (config, data, settings), with the reason on stderr;
1 an unexpected failure (one line; ``--debug`` shows the traceback). A failed run writes nothing
into ``reports/`` (reports are written atomically).
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Optional

import typer

EXIT_INPUT = 2
EXIT_FAILURE = 1


def _log_for(quiet: bool):
    if quiet:
        return lambda msg: None
    if sys.stderr.isatty():
        from rich.console import Console

        console = Console(stderr=True)
        return lambda msg: console.log(msg)
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        raise exc
    input_errors = (ValueError, FileNotFoundError, KeyError)
    code = EXIT_INPUT if isinstance(exc, input_errors) else EXIT_FAILURE
    text = str(exc).strip() or type(exc).__name__
    print(f"error: {text}", file=sys.stderr)
    raise typer.Exit(code=code)


def _config(path: Optional[Path]):
    from backtest.runner.config import MAIN_JOB, load_config

    src = path or MAIN_JOB
    cfg = load_config(src)
    return cfg, {"path": str(src), "toml": tomllib.loads(Path(src).read_text())}


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        config: Optional[Path] = typer.Argument(None, help="TOML run config; omitted: the main job on the embedded data."),
        reports_dir: Optional[Path] = typer.Option(None, "--reports-dir", "-o", help="Where report folders go (default: the config's reports_dir, 'reports')."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (batch jobs)."),
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks on failure."),
    ) -> None:
        """Run a backtest described by CONFIG and write reports/<run-id>/ (metrics.json,
        equity.parquet, events.parquet, config.json, report.html)."""
        from backtest.runner.run import execute

        try:
            cfg, src = _config(config)
            out = execute(cfg, reports_dir=reports_dir, log=_log_for(quiet), source_config=src)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
            _fail(exc, debug)
        print(out.out_dir / "report.html")

    @app.command("sweep")
    def sweep(
        config: Path = typer.Argument(..., help="TOML run config with a [sweep] table and a grid in [[perp]]."),
        reports_dir: Optional[Path] = typer.Option(None, "--reports-dir", "-o"),
        top: int = typer.Option(20, "--top", help="Rows of the ranked table printed."),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
        debug: bool = typer.Option(False, "--debug"),
    ) -> None:
        """Run a parameter/policy grid as columns of one simulation; print a ranked table and
        write sweep.csv and heatmap.html (metric by two parameters) into the report folder."""
        from backtest.runner.config import ConfigError
        from backtest.runner.run import execute
        from backtest.runner.sweep import write_sweep

        try:
            cfg, src = _config(config)
            if cfg.sweep is None or not cfg.perp:
                raise ConfigError(f"{config}: a sweep needs a [sweep] table (x, y, metric) and a [[perp]] grid")
            out = execute(cfg, reports_dir=reports_dir, log=_log_for(quiet), source_config=src)
            table = write_sweep(out, cfg)
        except Exception as exc:  # noqa: BLE001
            _fail(exc, debug)
        if not quiet:
            with_cols = [c for c in table.columns if c in (*table.columns[: table.columns.get_loc("total_return")], cfg.sweep.metric, "total_return", "max_drawdown")]
            print(table[list(dict.fromkeys(with_cols))].head(top).to_string(index=False))
        print(out.out_dir / "heatmap.html")

    @app.command("report")
    def report(
        run_dir: Path = typer.Argument(..., help="A report folder written by `backtest run`."),
        debug: bool = typer.Option(False, "--debug"),
    ) -> None:
        """Re-render report.html from the stored results, without re-simulating."""
        from backtest.report import rerender

        try:
            path = rerender(run_dir)
        except Exception as exc:  # noqa: BLE001
            _fail(exc, debug)
        print(path if str(path).endswith(".html") else Path(path) / "report.html")
