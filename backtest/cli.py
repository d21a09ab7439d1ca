"""Command-line entry point: ``backtest`` (or ``python -m backtest``).

Each command lives with its area (``backtest/data/cli.py`` for ``download``,
``backtest/runner/cli.py`` for ``run``, ``sweep`` and ``report``); this module only assembles them.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="backtest",
    help="Backtest leveraged bearish crypto strategies (short perps, puts, inverse products, books).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    from backtest.runner.cli import print_version  # one definition, on every command too

    print_version(value)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Backtest leveraged bearish crypto strategies (short perps, puts, inverse products, books)."""


def _register() -> None:
    from backtest.data import cli as data_cli
    from backtest.runner import cli as runner_cli

    data_cli.register(app)
    runner_cli.register(app)


_register()


def main() -> None:
    app()
