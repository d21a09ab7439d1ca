"""`backtest download` (placeholder until the data layer lands)."""

import typer


def register(app: typer.Typer) -> None:
    @app.command("download")
    def download() -> None:
        """Download OHLCV, mark OHLCV and funding history with ccxt into the Parquet store."""
        raise typer.Exit(code=2)
