"""Execute a run configuration: load data, build targets, simulate, write the report."""

from __future__ import annotations

import dataclasses
import difflib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from backtest.result import SimResult
from backtest.runner.config import ConfigError, PerpConfig, ProductConfig, PutsConfig, RunConfig

Log = Callable[[str], None]


@dataclass
class RunOutcome:
    run_id: str
    out_dir: Path
    results: dict[str, SimResult]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _settings(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build a settings dataclass, naming unknown fields with a suggestion."""
    known = [f.name for f in dataclasses.fields(cls)]
    bad = [k for k in values if k not in known]
    if bad:
        hints = []
        for k in bad:
            close = difflib.get_close_matches(k, known, n=1)
            hints.append(f"{where}.{k}: unknown setting" + (f" (did you mean {close[0]!r}?)" if close else
                                                             f"; known: {', '.join(known)}"))
        raise ConfigError("\n".join(hints))
    return cls(**values)


def load_data(cfg: RunConfig) -> Any:
    from backtest.data import load_market_data

    d = cfg.data
    iv = tuple(d.iv.split("/")) if d.iv else None
    return load_market_data(d.exchange, d.symbol, d.timeframe, root=d.root, start=d.start, end=d.end, iv=iv,
                            allow_mark_fallback=d.allow_mark_fallback, allow_gaps=d.allow_gaps)


def _perp(cfg: PerpConfig, where: str, md: Any, spec: Any) -> SimResult:
    from backtest.engine import Account, simulate_perp
    from strategies.policies import build_targets

    target, policy, columns = build_targets(md, cfg.strategy.name, cfg.strategy.params or None, cfg.policies,
                                            filter=cfg.strategy.filter,
                                            filter_params=cfg.strategy.filter_params or None, spec=spec)
    account = Account(**cfg.account.model_dump())
    return simulate_perp(md, target, spec, account, policy, columns=columns)


def _puts(cfg: PutsConfig, where: str, md: Any, currency: str) -> SimResult:
    from backtest.options import PutSettings, simulate_puts

    values = dict(cfg.settings)
    hold = None
    columns = None
    if cfg.strategy is not None:
        import strategies
        from strategies.long_put import settings_of

        if cfg.strategy.name != "long_put":
            raise ConfigError(f"{where}.strategy.name={cfg.strategy.name!r}: puts take the 'long_put' strategy")
        sig = strategies.signals(md, "long_put", cfg.strategy.params or None, filter=cfg.strategy.filter,
                                 filter_params=cfg.strategy.filter_params or None)
        hold = sig.to_numpy(dtype=np.float64)
        values = settings_of(sig.columns) | values
        columns = sig.columns
    settings = _settings(PutSettings, values, f"{where}.settings")
    return simulate_puts(md, settings, hold=hold, columns=columns, currency=currency)


def _products(cfg: ProductConfig, where: str, md: Any, currency: str) -> SimResult:
    from backtest.products import ProductSettings, simulate_product

    settings = _settings(ProductSettings, dict(cfg.settings), f"{where}.settings")
    return simulate_product(md, settings, currency=currency)


def execute(cfg: RunConfig, *, reports_dir: str | Path | None = None, log: Log = _stderr,
            source_config: dict[str, Any] | None = None) -> RunOutcome:
    """Run every simulation of ``cfg`` on one data set and write one comparison report.

    Errors in the simulations' settings are collected and raised together as a
    :class:`ConfigError`; nothing is written then. The report folder is written atomically,
    so a failing run never leaves a half-written report or damages an earlier one.
    """
    from backtest.data import default_root
    from backtest.market import load_market
    from backtest.report import write_report

    t0 = time.perf_counter()
    if not (cfg.perp or cfg.puts or cfg.products):
        raise ConfigError("the config defines no simulation: add a [[perp]], [[puts]] or [[products]] table")
    names = [s.name for s in (*cfg.perp, *cfg.puts, *cfg.products)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"simulation names {dup} are used twice; every [[perp]]/[[puts]]/[[products]] needs a distinct name")

    log(f"loading {cfg.data.exchange} {cfg.data.symbol} {cfg.data.timeframe} ({cfg.data.start} .. {cfg.data.end})")
    md = load_data(cfg)
    notes = list(md.notes)
    spec = load_market(cfg.data.exchange, cfg.data.symbol, data_dir=cfg.data.root or default_root())
    log(f"  {md.n} bars from {md.source}; {len(md.funding)} funding prints")

    results: dict[str, SimResult] = {}
    errors: list[str] = []
    jobs: list[tuple[str, str, Callable[[], SimResult]]] = []
    for k, p in enumerate(cfg.perp):
        jobs.append((p.name, f"perp[{k}]", lambda p=p, k=k: _perp(p, f"perp[{k}]", md, spec)))
    for k, p in enumerate(cfg.puts):
        jobs.append((p.name, f"puts[{k}]", lambda p=p, k=k: _puts(p, f"puts[{k}]", md, spec.settle)))
    for k, p in enumerate(cfg.products):
        jobs.append((p.name, f"products[{k}]", lambda p=p, k=k: _products(p, f"products[{k}]", md, spec.settle)))
    for name, where, job in jobs:
        log(f"simulating {name}")
        try:
            results[name] = job()
        except ConfigError as exc:
            errors.append(str(exc))
        except ValueError as exc:  # settings/strategy/policy/instrument validation errors
            errors.append(f"{where} ({name}): {exc}")
    if errors:
        raise ConfigError(f"{len(errors)} problem(s) in the run's settings:\n  " + "\n  ".join(errors))

    run_id = cfg.run_id(md.fingerprint)
    out_dir = Path(reports_dir or cfg.reports_dir) / run_id
    resolved = {
        "run_id": run_id,
        "config": cfg.model_dump(mode="json"),
        "source_config": source_config,
        "data": {"source": str(md.source), "fingerprint": md.fingerprint, "bars": int(md.n),
                 "first_bar": str(md.frame.index[0]), "last_bar": str(md.frame.index[-1]), "notes": notes},
        "market": {"exchange": spec.exchange, "symbol": spec.symbol, "inverse": spec.inverse,
                   "settle": spec.settle, "contract_size": spec.contract_size, "taker_fee": spec.taker_fee,
                   "liquidation_fee_rate": spec.liquidation_fee_rate},
    }
    log(f"writing report {out_dir}")
    write_report(results, out_dir, title=cfg.title, config=resolved, notes="\n".join(notes), rank_by=cfg.rank_by)
    return RunOutcome(run_id=run_id, out_dir=out_dir, results=results, notes=notes,
                      seconds=time.perf_counter() - t0)


def sweep_table(result: SimResult, metric: str) -> pd.DataFrame:
    """Per-column USD metrics of a grid result, ranked by ``metric`` (best first)."""
    from backtest.metrics import compute_metrics
    from backtest.metrics.docs import COLUMN_KEYS

    if metric not in COLUMN_KEYS:
        close = difflib.get_close_matches(metric, COLUMN_KEYS, n=1)
        raise ConfigError(f"sweep.metric={metric!r} is not a metric" + (f" (did you mean {close[0]!r}?)" if close else ""))
    m = compute_metrics(result, currency="usd")
    rows = list(m["columns"].values())
    cols = result.columns
    frame = pd.DataFrame(rows)
    if isinstance(cols, pd.MultiIndex):
        for lvl, name in enumerate(cols.names):
            frame.insert(lvl, name or f"level_{lvl}", cols.get_level_values(lvl))
    else:
        frame.insert(0, cols.name or "column", list(cols))
    lower_better = metric in ("max_drawdown_duration_bars", "max_drawdown_duration_days", "ulcer_index", "fees")
    return frame.sort_values(metric, ascending=lower_better, na_position="last").reset_index(drop=True)
