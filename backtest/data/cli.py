"""``backtest download``: fetch candles, mark/index candles, funding and market specs with ccxt.

ccxt and pandas are imported inside the command so that ``backtest --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

KINDS_HELP = "ohlcv, mark, index, funding, markets"
DEFAULT_KINDS = ["ohlcv", "mark", "funding", "markets"]

HELP = (
    "Download OHLCV, mark/index OHLCV, funding history and market specs with ccxt into the Parquet store.\n\n"
    "Files: <data-dir>/<exchange>/<symbol-dir>/{ohlcv,mark,index}-<tf>.parquet and funding.parquet, where "
    "symbol-dir is the symbol with '/' and ':' replaced by '_'. Each page is merged into the store atomically "
    "as it arrives. Exit code 2 with a one-line 'error: ...' on invalid input (exchange, symbol, kind, "
    "timeframe, date, a data folder that cannot be written); 1 when the exchange, the network or the disk "
    "fails (the store keeps every page fetched so far)."
)

EPILOG = (
    "Examples:\n\n"
    "  backtest download -e binanceusdm -s BTC/USDT:USDT -s ETH/USDT:USDT -t 1h --since 2021-01-01\n\n"
    "  backtest download -e binancecoinm -s BTC/USD:BTC -k ohlcv,mark,funding --since 2022-01-01 --until 2023-01-01\n\n"
    "  backtest download -e okx -s BTC/USDT:USDT -t 4h -k ohlcv,mark --since 1672531200000 --quiet\n\n"
    "Re-running a command only fetches what is missing; an interrupted run resumes where it stopped."
)


def _split(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return list(dict.fromkeys(out))


def register(app: typer.Typer) -> None:
    """Add the ``download`` command to the top-level app."""

    @app.command("download", help=HELP, epilog=EPILOG)
    def download(
        exchange: str = typer.Option(
            ..., "--exchange", "-e", help="ccxt exchange id, e.g. binanceusdm, binancecoinm, bybit, okx."),
        symbol: list[str] = typer.Option(
            ..., "--symbol", "-s",
            help="ccxt symbol; repeat or comma-separate for several. Perpetuals: BTC/USDT:USDT (USDT-margined), "
                 "BTC/USD:BTC (coin-margined)."),
        timeframe: list[str] = typer.Option(
            ["1h"], "--timeframe", "-t", help="ccxt candle timeframe (1m, 5m, 1h, 4h, 1d, ...); repeatable."),
        kind: list[str] = typer.Option(
            DEFAULT_KINDS, "--kind", "-k",
            help=f"what to fetch, repeatable or comma-separated: {KINDS_HELP}. ohlcv = trade candles, "
                 "mark/index = mark/index price candles, funding = funding-rate history, markets = contract "
                 "specs and leverage tiers (<data-dir>/markets/<exchange>.json)."),
        since: Optional[str] = typer.Option(
            None, "--since",
            help="start, ISO date/time UTC (2021-01-01, 2021-01-01T08:00:00Z) or ms since the epoch. Needed for a "
                 "new dataset unless ccxt knows the listing date; an existing dataset resumes from its end."),
        until: Optional[str] = typer.Option(
            None, "--until",
            help="end (exclusive), same formats; default now. Only candles closed by then are stored."),
        data_dir: Optional[Path] = typer.Option(
            None, "--data-dir", "-d",
            help="store root (default: $BACKTEST_DATA_DIR; else data/ of the source checkout the package runs "
                 "from; else ./data in the working directory)."),
        limit: Optional[int] = typer.Option(
            None, "--limit", min=1, help="rows per request (default: the largest ccxt declares for the endpoint)."),
        retries: int = typer.Option(
            5, "--retries", min=1,
            help="attempts per request on network errors, rate limits and timeouts (exponential backoff from 1 s; "
                 "each retry is printed)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing but errors."),
        version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,  # noqa: ARG001
                                     help="Print the version and exit."),
    ) -> None:
        """``backtest download`` (help text: HELP)."""
        from backtest.data.download import DownloadError, DownloadInputError, Retry
        from backtest.exits import (
            EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_raises,
        )
        from backtest.data.download import download as run

        err = _console(stderr=True)
        out = _console()
        kinds = _split(kind)
        reporter = _Reporter(out, quiet=quiet)
        try:
            with sigterm_raises(), reporter:
                results = run(exchange, _split(symbol), kinds, _split(timeframe), since=since, until=until,
                              root=data_dir.resolve() if data_dir is not None else None, limit=limit, retry=Retry(attempts=retries), progress=reporter)
        except DownloadInputError as exc:
            _fail(err, exc, EXIT_INPUT)
        except DownloadError as exc:
            _fail(err, exc, EXIT_FAILURE)
        except ValueError as exc:  # invalid input or data, e.g. an unreadable stored file
            _fail(err, exc, EXIT_INPUT)
        except KeyboardInterrupt:
            err.print("interrupted: the store keeps every page fetched so far; run the same command to resume",
                      markup=False, highlight=False)
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except Terminated:
            # the write in progress removed its temporary file on the way out (atomic_write)
            err.print("error: terminated (SIGTERM); the store keeps every page fetched so far; run the same "
                      "command to resume", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=EXIT_TERMINATED) from None
        if not quiet:
            for r in results:
                out.print(r.describe(), markup=False, highlight=False, soft_wrap=True)
                for n in r.notes:
                    out.print(f"  note: {n}", markup=False, highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    from backtest.runner.cli import print_version  # one definition for every command

    print_version(value)


def _fail(err, exc: BaseException, code: int) -> None:  # noqa: ANN001
    """Print ``error: <one line>`` on stderr and exit with ``code``."""
    text = " ".join(str(exc).split())
    err.print(f"error: {text}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=code) from None


def _console(stderr: bool = False):  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


class _Reporter:
    """Progress sink: a rich progress bar on a terminal, plain lines otherwise, nothing if quiet.

    A message (a retry and its wait) is printed as a line in both modes, so a run that waits
    on the exchange says so; on a terminal it is printed above the bar."""

    def __init__(self, console, *, quiet: bool) -> None:  # noqa: ANN001
        self.console = console
        self.quiet = quiet
        self.live = (not quiet) and console.is_terminal
        self.bar: Any = None  # a rich Progress on a terminal
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "_Reporter":
        if self.live:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                                transient=False)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, p) -> None:  # noqa: ANN001
        if self.quiet:
            return
        if p.message:
            self.console.print(f"{p.label}: {p.message}", markup=False, highlight=False, soft_wrap=True)
        if self.bar is not None and (p.stop > p.start or p.label in self.tasks):
            # a zero-span report (the market loading's retries) draws no bar
            tid = self.tasks.get(p.label)
            if tid is None:
                tid = self.tasks[p.label] = self.bar.add_task(p.label, total=max(1, p.stop - p.start), info="")
            info = p.message or f"{p.rows} rows, {p.requests} req"
            self.bar.update(tid, completed=p.at - p.start, info=info)
