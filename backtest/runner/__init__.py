"""Runs described by a config file: ``backtest run``, ``backtest sweep``, ``backtest report``."""

from backtest.runner.config import ConfigError, RunConfig, load_config, main_job, parse_config
from backtest.runner.run import RunOutcome, execute, sweep_table

__all__ = ["ConfigError", "RunConfig", "RunOutcome", "execute", "load_config", "main_job", "parse_config",
           "sweep_table"]
