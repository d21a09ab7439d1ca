"""Runs described by a config file: ``backtest run``, ``backtest sweep``, ``backtest report``.

See ``docs/runner.md`` for the config reference, the commands and the output folder.
"""

from backtest.runner.checks import check_settings
from backtest.runner.config import ConfigError, RunConfig, load_config, main_job, parse_config
from backtest.runner.labels import readable_labels, relabel
from backtest.runner.run import RunOutcome, execute
from backtest.runner.sweep import heatmap_grid, sweep_table

__all__ = ["ConfigError", "RunConfig", "RunOutcome", "check_settings", "execute", "heatmap_grid", "load_config",
           "main_job", "parse_config", "readable_labels", "relabel", "sweep_table"]
