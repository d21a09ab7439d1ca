"""Command-line entry point: ``backtest`` (or ``python -m backtest``).

Each command lives with its area (``backtest/data/cli.py`` for ``download``,
``backtest/runner/cli.py`` for ``run``, ``sweep`` and ``report``); this module only assembles them.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="backtest",
    help="Backtest leveraged bearish crypto strategies (short perps, puts, inverse products).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Backtest leveraged bearish crypto strategies (short perps, puts, inverse products)."""


def _register() -> None:
    from backtest.data import cli as data_cli

    data_cli.register(app)
    try:
        from backtest.runner import cli as runner_cli
    except ImportError:  # the runner package is optional while it is being built
        return
    runner_cli.register(app)


_register()


def main() -> None:
    app()
