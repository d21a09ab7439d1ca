"""Run configuration: a strict, frozen description of one backtest run (TOML on disk).

Unknown keys are rejected and every invalid field is reported at once with its path
(``perp[1].account.leverage``). Deeper checks (strategy and policy names and parameters,
instrument settings) run in :func:`resolve` and are reported together too.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Num = float | list[float]


class ConfigError(ValueError):
    """The run configuration is invalid; the message lists every problem with its key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Strict):
    """Market data: a dataset of the store (``data/``) or, when absent, the committed sample."""

    exchange: str = "binanceusdm"
    symbol: str = "BTC/USDT:USDT"
    timeframe: str = "1h"
    start: str | None = Field(None, description="first bar open time (ISO date, inclusive)")
    end: str | None = Field(None, description="end of the range (ISO date, exclusive)")
    root: str | None = Field(None, description="store root; default data/ then data/sample")
    iv: str | None = Field(None, description="implied-vol index as 'exchange/name', e.g. 'deribit/BTC-DVOL'")
    allow_mark_fallback: bool = False
    allow_gaps: bool = False

    @field_validator("iv")
    @classmethod
    def _iv(cls, v: str | None) -> str | None:
        if v is not None and v.count("/") != 1:
            raise ValueError(f"iv={v!r} must look like 'exchange/name', e.g. 'deribit/BTC-DVOL'")
        return v


class AccountConfig(_Strict):
    """Engine account settings (see ``backtest.engine.settings.Account``); lists give one value per column."""

    initial_capital: Num = 10_000.0
    margin_mode: Literal["cross", "isolated"] | list[Literal["cross", "isolated"]] = "cross"
    leverage: Num = 20.0
    margin_call_threshold: Num = 0.8
    margin_call_response: Literal["none", "reduce", "top_up"] | list[Literal["none", "reduce", "top_up"]] = "none"
    margin_call_target: Num = 0.5
    reserve: Num = 0.0
    after_liquidation: Literal["stop", "continue"] | list[Literal["stop", "continue"]] = "stop"
    excess: Literal["clip", "reject"] | list[Literal["clip", "reject"]] = "clip"
    fee_rate: Num | None = None
    slippage: Num = 0.0
    lag: int = Field(1, ge=0)


class StrategyConfig(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict, description="values or lists (a grid)")
    filter: str | None = None
    filter_params: dict[str, Any] = Field(default_factory=dict)


class PerpConfig(_Strict):
    """A short-perp simulation: a strategy x a policy grid, all columns of one engine run."""

    name: str
    strategy: StrategyConfig = StrategyConfig(name="short_hold")
    policies: list[Any] = Field(default_factory=lambda: ["const(1)"])
    account: AccountConfig = AccountConfig()


class PutsConfig(_Strict):
    """Rolled long puts (``backtest.options.PutSettings`` fields in ``settings``); an optional
    ``long_put`` strategy decides when puts are held."""

    name: str
    strategy: StrategyConfig | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class ProductConfig(_Strict):
    """Inverse leveraged products (``backtest.products.ProductSettings`` fields in ``settings``)."""

    name: str
    settings: dict[str, Any] = Field(default_factory=dict)


class SweepConfig(_Strict):
    """How ``backtest sweep`` summarises a grid: rank by ``metric``, heatmap of ``x`` by ``y``
    (column levels: strategy parameters or ``policy``)."""

    x: str
    y: str = "policy"
    metric: str = "sharpe"


class RunConfig(_Strict):
    title: str = "Backtest"
    rank_by: str = "calmar"
    reports_dir: str = "reports"
    data: DataConfig = DataConfig()
    perp: list[PerpConfig] = Field(default_factory=list)
    puts: list[PutsConfig] = Field(default_factory=list)
    products: list[ProductConfig] = Field(default_factory=list)
    sweep: SweepConfig | None = None

    def digest(self, data_fingerprint: str = "") -> str:
        """Content hash of the resolved config and the data's fingerprint."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256((blob + "|" + data_fingerprint).encode()).hexdigest()

    def run_id(self, data_fingerprint: str = "") -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")[:40] or "run"
        return f"{slug}-{self.digest(data_fingerprint)[:12]}"


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README, 'Run configuration')"
        lines.append(f"  {path or '<root>'}: {msg}")
    return f"{source}: {len(lines)} invalid field(s):\n" + "\n".join(lines)


def parse_config(doc: dict[str, Any], *, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run configuration."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a TOML run config")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(doc, source=str(path))


MAIN_JOB = Path(__file__).with_name("main_job.toml")


def main_job() -> RunConfig:
    """The main job: BTC short through the 2021-11..2023-12 bear market, policies compared."""
    return load_config(MAIN_JOB)
