"""Run configuration: a strict, frozen description of one backtest run (TOML on disk).

Unknown keys are rejected and every invalid field is reported at once with its path
(``perp[1].account.leverage``). Checks that need the strategy and policy registries or the
instruments' settings classes run in :mod:`backtest.runner.checks` and are reported together too.
The reference of every key is ``docs/runner.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import hashlib
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, ValidationError, create_model,
                      field_validator, model_validator)

from backtest.engine.settings import Account, Setting, setting_of
from backtest.stress.config import StressConfig


class ConfigError(ValueError):
    """The run configuration is invalid; the message lists every problem with its key path."""


# ---------------------------------------------------------------------------------------------
# value types: one value for every column, or a list with one value per column

def _number(v: Any, what: str) -> float:
    # bool is an int in Python, but `leverage = true` is a typo, not 1
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected {what}, got {v!r}")
    return float(v)


def _num_or_list(v: Any) -> float | list[float]:
    if isinstance(v, list):
        if not v:
            raise ValueError("an empty list; give a number or one number per column")
        return [_number(x, "a number in the list") for x in v]
    return _number(v, "a number or a list of numbers")


def _choice_or_list(*choices: str):
    def check(v: Any) -> str | list[str]:
        items = v if isinstance(v, list) else [v]
        if not items:
            raise ValueError(f"an empty list; give one of {list(choices)} or one per column")
        for x in items:
            if x not in choices:
                close = difflib.get_close_matches(str(x), choices, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{x!r} is not one of {list(choices)}{hint}")
        return v
    return PlainValidator(check)


Num = Annotated[Any, PlainValidator(_num_or_list)]


def _canonical_time(v: Any, name: str) -> str | None:
    """An instant as canonical text, so equal instants written differently give one run id:
    ``YYYY-MM-DD`` at midnight UTC, else ``YYYY-MM-DDTHH:MM:SS[.mmm]Z``."""
    from backtest.data.timeutil import parse_time

    if v is None:
        return None
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):  # a TOML local date
        v = v.isoformat()
    ms = parse_time(v, name=name)
    if ms % 86_400_000 == 0:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).date().isoformat()
    stamp = dt.datetime.fromtimestamp(ms // 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return stamp + (f".{ms % 1000:03d}" if ms % 1000 else "") + "Z"


def span_time(v: Any, info: Any, what: str, optional: bool) -> str | None:
    """A ``start``/``end`` field of a span (pydantic ``info``) as canonical text; ``end`` must be
    after the ``start`` already checked (``what``: the span's name in the message); None only
    where ``optional``."""
    if isinstance(v, bool) or not ((optional and v is None) or isinstance(v, (str, int, dt.date))):
        raise ValueError(f"expected an ISO date/time or milliseconds, got {v!r}")
    out = _canonical_time(v, info.field_name)
    start = info.data.get("start") if info.field_name == "end" else None
    if out is not None and start is not None:
        from backtest.data.timeutil import parse_time

        if parse_time(out) <= parse_time(start):
            raise ValueError(f"{what} is empty: end={out!r} is not after start={start!r}")
    return out


# ---------------------------------------------------------------------------------------------
# the tables

class _Strict(BaseModel):
    # strict: a string "10" where a number is expected is a mistake in a hand-written file
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _lookback(v: Any) -> float:
    days = _number(v, "a number of days >= 0")
    if not (days >= 0 and days < float("inf")):
        raise ValueError(f"lookback_days={v!r} must be a finite number of days >= 0 (0: no warm-up data)")
    return days


class DataConfig(_Strict):
    """Market data: a dataset of the store (``data/``) or, when absent, the committed sample."""

    exchange: str = "binanceusdm"
    symbol: str = "BTC/USDT:USDT"
    timeframe: str = "1h"
    start: Any = Field(None, description="first bar open time (ISO date/time or ms, inclusive)")
    end: Any = Field(None, description="end of the range (ISO date/time or ms, exclusive)")
    root: str | None = Field(None, description="store root; default data/ then data/sample")
    iv: str | None = Field(None, description="implied-vol index as 'exchange/name', e.g. 'deribit/BTC-DVOL'")
    allow_mark_fallback: bool = False
    allow_gaps: bool = False
    allow_partial_range: bool = Field(False, description="run on the stored part of start/end (noted)")
    allow_extreme_funding: bool = Field(False, description="accept funding rates beyond the documented bound (noted)")
    lookback_days: Annotated[Any, PlainValidator(lambda v: _lookback(v))] = Field(
        0.0, description="days of data loaded before start for the indicators' warm-up; trading starts at start")

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, v: str) -> str:
        from backtest.data.timeutil import is_calendar

        if is_calendar(v):  # also raises for a malformed timeframe
            raise ValueError(f"timeframe {v!r} has bars of varying length; use s, m, h, d or w timeframes")
        return v

    @field_validator("start", "end", mode="plain")
    @classmethod
    def _time(cls, v: Any, info: Any) -> str | None:
        return span_time(v, info, "the date range", optional=True)

    @field_validator("iv")
    @classmethod
    def _iv(cls, v: str | None) -> str | None:
        if v is not None and v.count("/") != 1:
            raise ValueError(f"iv={v!r} must look like 'exchange/name', e.g. 'deribit/BTC-DVOL'")
        return v


def _config_type(how: Setting, default: Any) -> Any:
    """The config's type of an engine setting: a number or one per column, a choice or one per
    column, a bool, an integer (strict: no coercion); optional when its default is None."""
    if how.choices is not None:
        kind: Any = Annotated[Any, _choice_or_list(*how.choices)]
    else:
        kind = {"number": Num, "bool": bool, "int": int}[how.kind]
    return kind | None if default is None else kind


def settings_model(name: str, cls: type, doc: str, validators: dict[str, Any] | None = None) -> type[BaseModel]:
    """A strict config model with one key per field of the engine's settings dataclass ``cls``
    (its name, order, default and description, :class:`backtest.engine.settings.Setting`): the
    settings are declared once, in the engine."""
    keys: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        how = setting_of(f)
        keys[f.name] = (_config_type(how, f.default), Field(f.default, description=how.doc, ge=how.minimum))
    return create_model(name, __base__=_Strict, __doc__=doc, __validators__=validators, **keys)


def _check_lag(v: int, info: Any) -> int:
    from backtest.engine.settings import Account, check_lag

    # the engine's rule and message (a lag longer than the data is refused once it is loaded);
    # ``allow_lookahead`` comes before ``lag``, so it is validated already
    return check_lag(Account(lag=v, allow_lookahead=info.data.get("allow_lookahead", False)))


def _markdown(doc: str) -> str:
    """A setting's docstring text as Markdown of the TOML file: ````x```` -> ```x```, with
    Python's ``'text'``, ``True`` and ``False`` spelt as in TOML."""
    def code(match: re.Match) -> str:
        inner = re.sub(r"'([^']*)'", r'"\1"', match.group(1))
        return "`" + re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", inner)) + "`"
    return re.sub(r"``(.+?)``", code, doc).replace("(None, the default: ", "(default: ")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return f"{value:g}"


def settings_table(cls: type) -> str:
    """The Markdown key table of a settings dataclass (``docs/runner.md`` holds it, and
    ``tests/test_settings_once.py`` checks it is this): key, type, default, meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        how = setting_of(f)
        if how.choices is not None:
            kind = "/".join(f'`"{c}"`' for c in how.choices)
        elif how.kind == "int":
            kind = "integer" + (f" >= {how.minimum}" if how.minimum is not None else "")
        else:
            kind = how.kind
        default = how.doc_default or f"`{_toml(f.default)}`"
        rows.append(f"| `{f.name}` | {kind} | {default} | {_markdown(how.doc)} |")
    return "\n".join(rows) + "\n"


if TYPE_CHECKING:  # the type checker sees a model; its keys are made from ``Account`` at run time
    class AccountConfig(_Strict):
        def __getattr__(self, name: str) -> Any: ...
else:
    AccountConfig = settings_model(
        "AccountConfig", Account,
        "Engine account settings (the fields of ``backtest.engine.settings.Account``); a list gives "
        "one value per column of the simulation.",
        {"_lookahead": field_validator("lag")(_check_lag)})


class StrategyConfig(_Strict):
    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="values, lists or ranges (a grid)")
    filter: str | None = None
    filter_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params", "filter_params")
    @classmethod
    def _ranges(cls, v: dict[str, Any]) -> dict[str, Any]:
        from backtest.runner.grid import expand_params

        # "10:50:10", "log:1:100:5" -> the list they stand for (backtest.runner.grid)
        return expand_params(v, "")


class PerpConfig(_Strict):
    """A short-perp simulation: a strategy x a policy grid, all columns of one engine run."""

    name: str = Field(min_length=1)
    strategy: StrategyConfig = StrategyConfig(name="short_hold")
    policies: list[Any] = Field(default_factory=lambda: ["const(1)"], min_length=1)
    account: AccountConfig = AccountConfig()

    @field_validator("policies")
    @classmethod
    def _ranges(cls, v: list[Any]) -> list[Any]:
        from backtest.runner.grid import expand_policies

        return expand_policies(v, "policies")


def _leg_model() -> type[BaseModel]:
    """``[book.legs.<symbol>]``: the per-instrument fields of :class:`backtest.book.Leg`, typed
    as the account's fields of the same name (declared once, in the engine's ``Account``); a
    key left out takes the book's ``account`` value."""
    fields = {f.name: f for f in dataclasses.fields(Account)}
    keys: dict[str, Any] = {}
    for name in ("margin_mode", "leverage"):
        how = setting_of(fields[name])
        keys[name] = (_config_type(how, None), Field(None, description=how.doc + "; default: the book's account"))
    return create_model("LegConfig", __base__=_Strict, __doc__="One instrument's leg of a book.", **keys)


if TYPE_CHECKING:
    class LegConfig(_Strict):
        def __getattr__(self, name: str) -> Any: ...
else:
    LegConfig = _leg_model()


class BookStrategyConfig(_Strict):
    """A book strategy (``strategies.book_names()``) and an optional gate (a single-instrument
    strategy run on ``gate_symbol``): the arguments of ``strategies.build_book_targets``."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="values or lists (a grid)")
    gate: str | None = None
    gate_params: dict[str, Any] = Field(default_factory=dict)
    gate_symbol: str | None = None


def _one_of(v: Any, choices: tuple[str, ...]) -> str:
    if v not in choices:
        close = difflib.get_close_matches(str(v), choices, n=1)
        raise ValueError(f"{v!r} is not one of {list(choices)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return v


def _intrabar_choices() -> tuple[str, ...]:
    from backtest.book.settings import Intrabar

    return tuple(Intrabar.names)


# PutSettings fields an option leg of a book takes from its table: the contract rules (strike,
# expiry, rolls, volatility, fees, slippage); one value each (a leg's contract path is shared by
# every column). Sizing and account fields do not apply (the book's target sizes a leg).
OPTION_CONTRACT_FIELDS = ("moneyness", "strike_mode", "target_delta", "strike_step", "expiry", "min_days",
                          "roll_dte", "roll_delta", "skew", "vol_source", "ewma_lambda", "vrp", "fee_rate", "fee_cap",
                          "delivery_fee_rate", "delivery_fee_cap", "slippage")
OPTION_SIZE_KEYS = ("ratio", "exposure", "band")


def _scalar_number(v: Any) -> float:
    return _number(v, "one number (an option leg's contract rules take one value: use several legs to compare)")


def _option_model() -> type[BaseModel]:
    """``[[book.option]]``: an option leg of a book and the rule sizing it. The contract keys
    are the fields of ``backtest.options.PutSettings`` of :data:`OPTION_CONTRACT_FIELDS` (declared
    once there; a key left out takes PutSettings' default); their values are checked by the
    put simulator's own rules (``backtest.runner.checks``)."""
    from backtest.options import PutSettings

    fields = {f.name: f for f in dataclasses.fields(PutSettings)}
    Number = Annotated[Any, PlainValidator(_scalar_number)]
    keys: dict[str, Any] = {
        "underlying": (str, Field(min_length=1, description="a symbol of the book or its base currency held once")),
        "type": (Annotated[Any, PlainValidator(lambda v: _one_of(v, ("put", "call")))], Field("put", description="'put' or 'call'")),
        "rule": (str, Field(min_length=1, description="'hedge', 'overlay' or 'delta_hedged'")),
        "ratio": (Num | None, Field(None, description="hedge: fraction of the underlying's exposure covered")),
        "exposure": (Num | None, Field(None, description="overlay, delta_hedged: long exposure, multiple of equity")),
        "band": (Number | None, Field(None, description="delta_hedged: net delta per contract kept before re-hedging")),
        "name": (str | None, Field(None, description="the leg's name in results")),
        "iv": (str | None, Field(None, description="implied-vol index 'exchange/name' for vol_source 'iv'/'auto'")),
    }
    for name in OPTION_CONTRACT_FIELDS:
        kind = str if isinstance(fields[name].default, str) else Number
        keys[name] = (kind | None, Field(None, description=f"PutSettings.{name}; default: PutSettings'"))
    return create_model("BookOptionConfig", __base__=_Strict, __doc__="An option leg of a book.", **keys)


if TYPE_CHECKING:
    class BookOptionConfig(_Strict):
        def __getattr__(self, name: str) -> Any: ...
else:
    BookOptionConfig = _option_model()


def _options_grids() -> tuple[str, ...]:
    from strategies.book_options import GRIDS

    return GRIDS


class BookConfig(_Strict):
    """A book: several perpetuals of the run's exchange in one margin account, a book strategy x
    a grid of book policies, all columns of one simulation (docs/runner.md, ``[[book]]``)."""

    name: str = Field(min_length=1)
    symbols: list[str] = Field(min_length=1, description="the book's instruments, each once")
    legs: dict[str, LegConfig] = Field(default_factory=dict, description="per symbol: margin_mode, leverage")
    strategy: BookStrategyConfig = BookStrategyConfig(name="basket_short")
    policies: list[Any] = Field(default_factory=lambda: ["const(1)"], min_length=1)
    rebalance_hours: Annotated[Any, PlainValidator(lambda v: _number(v, "a number of hours"))] | None = None
    intrabar: Annotated[Any, _choice_or_list(*_intrabar_choices())] = "together"
    account: AccountConfig = AccountConfig()
    option: list[BookOptionConfig] = Field(default_factory=list, description="option legs, [[book.option]]")
    options_collateral: bool = Field(False, description="long options count in the cross margin balance")
    options_grid: Annotated[Any, PlainValidator(lambda v: _one_of(v, _options_grids()))] = "product"


class PutsConfig(_Strict):
    """Rolled long puts (``backtest.options.PutSettings`` fields in ``settings``); an optional
    ``long_put`` strategy decides when puts are held."""

    name: str = Field(min_length=1)
    strategy: StrategyConfig | None = None
    settings: dict[str, Any] = Field(default_factory=dict)


class ProductConfig(_Strict):
    """Inverse leveraged products (``backtest.products.ProductSettings`` fields in ``settings``)."""

    name: str = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)


def _rankable() -> tuple[str, ...]:
    from backtest.report.collect import RANKABLE

    return RANKABLE


def _heatmap_stats() -> tuple[str, ...]:
    from backtest.runner.sweep import HEATMAP_STATS

    return HEATMAP_STATS


def _metric_name(v: str) -> str:
    keys = _rankable()
    if v not in keys:
        close = difflib.get_close_matches(v, keys, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(keys)}"
        raise ValueError(f"{v!r} is not a rankable metric; {hint}")
    return v


SYMBOL_AXIS = "symbol"  # the [sweep.grid] key of the symbols axis (docs/runner.md "Symbols as an axis")


def symbol_axis(value: Any) -> list[str]:
    """``[sweep.grid] symbol``: a non-empty list of distinct ccxt symbols (no range strings);
    whether each has data and a market spec is checked when the sweep loads them."""
    if not isinstance(value, list) or not value or not all(isinstance(x, str) and x.strip() for x in value):
        raise ValueError(f"grid.{SYMBOL_AXIS}={value!r}: the symbol axis is a non-empty list of symbols as [data] "
                         'writes them, e.g. symbol = ["BTC/USDT:USDT", "ETH/USDT:USDT"]')
    if len(set(value)) != len(value):
        raise ValueError(f"grid.{SYMBOL_AXIS}={value!r} repeats a symbol; list each symbol once")
    return list(value)


def grid_axes(v: Any) -> dict[str, list[Any]]:
    """``[sweep.grid]`` as ``{"symbol": [symbols], "account.<field>": [values]}`` (the symbol
    axis first when given: it is the outermost); for the account axes TOML's dotted keys
    (``account.leverage = [5, 10]``, a nested table) and quoted ones (``"account.leverage"``)
    alike; range strings expanded (``backtest.runner.grid``); each value checked as the
    ``[perp.account]`` key would check it (a field that takes one value for all columns cannot
    be an axis)."""
    from backtest.runner.grid import expand_range, is_range

    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"grid={v!r}: write a table of axes, e.g. [sweep.grid] account.leverage = [5, 10, 20]")
    flat: dict[str, Any] = {}
    for key, value in v.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = inner
        else:
            flat[key] = value
    fields = [f.name for f in dataclasses.fields(Account)]
    out: dict[str, list[Any]] = {}
    if SYMBOL_AXIS in flat:  # the outermost axis: the sweep's grid on each symbol's data
        out[SYMBOL_AXIS] = symbol_axis(flat.pop(SYMBOL_AXIS))
    for key, value in flat.items():
        head, _, name = key.partition(".")
        if head != "account" or name not in fields:
            close = difflib.get_close_matches(name if head == "account" else key, fields, n=1)
            hint = f" (did you mean 'account.{close[0]}'?)" if close else ""
            raise ValueError(f"grid.{key}: not a grid axis{hint}; an axis is {SYMBOL_AXIS!r} or account.<setting> "
                             f"(one of {', '.join(fields)})")
        values = expand_range(value, f"grid.{key}") if is_range(value) else value
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key}={value!r}: an axis is a non-empty list or a range string, e.g. [5, 10, 20] "
                             "or '5:20:5'")
        if len({repr(x) for x in values}) != len(values):
            raise ValueError(f"grid.{key}={values!r} repeats a value; list each level once")
        try:  # the [perp.account] key's own check, element by element
            AccountConfig(**{name: values})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"grid.{key}={values!r}: {first['msg']} (account.{name} takes one value for all "
                             "columns, or its values are wrong)") from None
        out[key] = values
    return out


class SweepConfig(_Strict):
    """How ``backtest sweep`` summarises a grid: rank by ``metric``, heatmap of ``x`` by ``y``
    (column levels: strategy parameters, ``filter.<param>`` or ``policy``)."""

    x: str
    y: str = "policy"
    metric: str = "sharpe"
    result: str | None = Field(None, description="name of the [[perp]] swept; default the first")
    heatmap_stat: Annotated[Any, PlainValidator(lambda v: _one_of(v, _heatmap_stats()))] = Field(
        "median", description="what a heatmap cell holds over the levels not on its axes")
    # how the sweep runs, not what it computes: left out of the run id (RunConfig.content), so
    # a sweep started with one setting resumes with another
    report_columns: int = Field(20, ge=1, description="columns of the grid whose equity the report keeps "
                                                      "(the best by metric)")
    memory: str | int | None = Field(None, description="memory for the chunks in flight ('2GB', bytes); default "
                                                       "a share of the available memory")
    workers: int | None = Field(None, ge=1, description="local worker processes (default 1: in this process)")
    scheduler: str | None = Field(None, description="Dask scheduler address, e.g. 'tcp://host:8786'")

    # out of sample (backtest.runner.oos, docs/runner.md "Out of sample"): rank on each fold's
    # in-sample span, report the chosen columns on the span after it
    split: Annotated[Any, PlainValidator(lambda v: _one_of(v, ("walk_forward", "train_test")))] | None = Field(
        None, description="'walk_forward' (rolling folds) or 'train_test' (one split); default none")
    train: str | None = Field(None, description="walk_forward: in-sample length, e.g. '180d'")
    test: str | None = Field(None, description="walk_forward: out-of-sample length, e.g. '90d'")
    step: str | None = Field(None, description="walk_forward: shift between folds; default test")
    anchored: bool = Field(False, description="walk_forward: every in-sample span starts at the first bar")
    split_at: Any = Field(None, description="train_test: the out-of-sample start (date/time) or the in-sample "
                                            "share of the bars (a fraction in (0, 1))")
    oos_columns: int = Field(5, ge=1, description="best in-sample columns reported out of sample per fold")

    # grid axes beyond the [[perp]]'s own (docs/runner.md "Grids"): ``account.<field>`` = a list or
    # a range string; each multiplies the columns (innermost, after the policies, in the order
    # written) and is a level ``account.<field>`` of the labels, the table and the heatmap.
    # ``symbol`` = a list of symbols: the whole grid on each symbol's data (outermost level)
    grid: dict[str, Any] = Field(default_factory=dict, description="extra grid axes: symbol = [symbols], "
                                                                   "account.<setting> = [values]")

    # how the sweep runs or is presented, not what it computes: left out of the run id
    RUN_ONLY: ClassVar[tuple[str, ...]] = ("report_columns", "memory", "workers", "scheduler", "heatmap_stat")
    OOS_KEYS: ClassVar[tuple[str, ...]] = ("split", "train", "test", "step", "anchored", "split_at", "oos_columns")

    @field_validator("train", "test", "step")
    @classmethod
    def _duration(cls, v: str | None, info: Any) -> str | None:
        from backtest.runner.oos import parse_duration

        if v is not None:
            parse_duration(v, f"sweep.{info.field_name}")
        return v

    @field_validator("split_at", mode="plain")
    @classmethod
    def _split_at(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, float) and not isinstance(v, bool):
            if not 0.0 < v < 1.0:
                raise ValueError(f"split_at={v!r}: a fraction of the bars must be in (0, 1), e.g. 0.7")
            return v
        if isinstance(v, bool) or not isinstance(v, (str, int, dt.date)):
            raise ValueError(f"split_at={v!r}: give a date/time ('2023-01-01') or a fraction of the bars (0.7)")
        return _canonical_time(v, "split_at")

    @model_validator(mode="after")
    def _split_keys(self) -> "SweepConfig":
        given = {k for k in ("train", "test", "step", "split_at") if getattr(self, k) is not None}
        need = {"walk_forward": {"train", "test"}, "train_test": {"split_at"}}.get(self.split or "", set())
        allowed = {"walk_forward": {"train", "test", "step"}, "train_test": {"split_at"}}.get(self.split or "", set())
        if need - given:
            raise ValueError(f"split={self.split!r} needs {', '.join(sorted(need - given))} (e.g. train = \"180d\", "
                             "test = \"90d\"; or split_at = \"2023-01-01\" / 0.7)")
        if given - allowed:
            what = f"split={self.split!r}" if self.split else "no split"
            raise ValueError(f"{', '.join(sorted(given - allowed))} does not apply with {what}; walk_forward takes "
                             "train, test, step; train_test takes split_at")
        if self.anchored and self.split != "walk_forward":
            raise ValueError("anchored = true applies to split = 'walk_forward' only")
        return self

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, v: Any) -> dict[str, list[Any]]:
        return grid_axes(v)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return _metric_name(v)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | int | None:
        from backtest.runner.budget import parse_size

        if v is not None and parse_size(v, "sweep.memory") is None:
            raise ValueError("'off' is not a sweep memory; give a size such as '2GB' (the chunks are sized to it)")
        return v

    @model_validator(mode="after")
    def _axes(self) -> "SweepConfig":
        if self.x == self.y:
            raise ValueError(f"x and y are both {self.x!r}; the heatmap needs two different column levels")
        return self


class PeriodConfig(_Strict):
    """A named period (``[[period]]``): a window of the run reported apart, per column (the
    return, max drawdown, Sharpe, liquidations and funding of its bars)."""

    name: str = Field(min_length=1)
    start: Any = Field(description="first instant (ISO date/time or ms, inclusive)")
    end: Any = Field(description="end (ISO date/time or ms, exclusive); after start")

    @field_validator("start", "end", mode="plain")
    @classmethod
    def _time(cls, v: Any, info: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int, dt.date)):
            raise ValueError(f"expected an ISO date/time or milliseconds, got {v!r}")
        out = _canonical_time(v, info.field_name)
        start = info.data.get("start") if info.field_name == "end" else None
        if start is not None:
            from backtest.data.timeutil import parse_time

            if parse_time(out) <= parse_time(start):
                raise ValueError(f"the period is empty: end={out!r} is not after start={start!r}")
        return out  # type: ignore[return-value]  # not None: v is not None

    def span_ms(self) -> tuple[int, int]:
        """(start, end) in int ms UTC."""
        from backtest.data.timeutil import parse_time

        return parse_time(self.start), parse_time(self.end)


class RunConfig(_Strict):
    """One run: a data set and the simulations compared in one report (see ``docs/runner.md``)."""

    title: str = "Backtest"
    rank_by: str = "calmar"
    reports_dir: str = "reports"
    memory_limit: str | int | None = Field(
        None, description="most memory the run may need ('16GB', bytes, or 'off'); default "
                          "$BACKTEST_MEMORY_LIMIT, else the machine's available memory")
    data: DataConfig = DataConfig()
    perp: list[PerpConfig] = Field(default_factory=list)
    puts: list[PutsConfig] = Field(default_factory=list)
    products: list[ProductConfig] = Field(default_factory=list)
    book: list[BookConfig] = Field(default_factory=list)
    sweep: SweepConfig | None = None
    baselines: bool = Field(True, description="add the result 'baselines' (spot buy-and-hold, a 1x short held, "
                                              "cash on the [data] market and window); false: none")
    period: list[PeriodConfig] = Field(default_factory=list, description="named periods reported apart")
    stress: StressConfig | None = Field(None, description="crisis windows, shocks, Monte Carlo paths (docs/stress.md)")
    module: str | list[str] | None = Field(
        None, description="the user's own strategy/policy modules: a .py file (relative to the config's folder) "
                          "or a dotted module name, or a list of them; loaded before the settings are checked")
    top_n: int = Field(5, ge=1, description="best-ranked columns of each result plotted (and printed after "
                                            "`backtest run`); every column stays in the tables")

    @field_validator("module")
    @classmethod
    def _modules(cls, v: str | list[str] | None, info: Any) -> str | list[str] | None:
        """Load each module now, so the strategies and policies it registers are known to the
        checks that follow (relative files: from the config's folder, ``context['base']``)."""
        from strategies.modules import load_module

        base = (info.context or {}).get("base")
        refs = [v] if isinstance(v, str) else list(v or [])
        if isinstance(v, list) and not v:
            raise ValueError("an empty list; give a module file or name, or leave the key out")
        for ref in refs:
            load_module(ref, base)
        return v

    @field_validator("period")
    @classmethod
    def _periods(cls, v: list[PeriodConfig]) -> list[PeriodConfig]:
        seen: set[str] = set()
        for p in v:
            if p.name in seen:
                raise ValueError(f"the name {p.name!r} is given to two periods; give every [[period]] a distinct name")
            seen.add(p.name)
        return v

    @model_validator(mode="after")
    def _baselines_name(self) -> "RunConfig":
        from backtest.runner.baselines import NAME

        sims: list[Any] = [*self.perp, *self.puts, *self.products, *self.book]
        if self.baselines and any(s.name == NAME for s in sims):
            raise ValueError(f"a simulation is named {NAME!r}, the name of the baselines result; rename it, or set "
                             "baselines = false at the top level")
        return self

    @model_validator(mode="after")
    def _stress_needs(self) -> "RunConfig":
        st = self.stress
        if st is not None and (st.shock or st.cascade) and not (self.perp or self.puts or self.products or self.book):
            raise ValueError("[[stress.shock]] and [[stress.cascade]] need a [[perp]], [[puts]], [[products]] or "
                             "[[book]] to shock; add one or remove them")
        if st is not None and st.monte_carlo is not None and not (self.perp or self.puts or self.products or self.book):
            raise ValueError("[stress.monte_carlo] runs the [[perp]], [[puts]], [[products]] and [[book]] "
                             "simulations on bootstrap paths and the config has none; add one or remove "
                             "[stress.monte_carlo]")
        return self

    @field_validator("rank_by")
    @classmethod
    def _rank_by(cls, v: str) -> str:
        return _metric_name(v)

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit(cls, v: str | int | None) -> str | int | None:
        from backtest.runner.budget import parse_size

        if v is not None:
            parse_size(v, "memory_limit")
        return v

    def content(self) -> dict[str, Any]:
        """The resolved config (defaults filled in) as JSON-able data, without ``reports_dir``
        and ``memory_limit``: where a report is written and the memory allowed are not part of
        what it computes. ``book`` and ``period`` are left out when empty, ``baselines`` when
        true (the default), ``stress`` and ``module`` when absent, so a run using none of them keeps the
        id it had before they existed; a sweep's settings of how it runs (``SweepConfig.RUN_ONLY``) are left
        out too, and ``top_n`` (what the report plots)."""
        exclude: dict[str, Any] = {k: True for k in ("reports_dir", "memory_limit", "top_n")}
        if self.module is None:
            exclude["module"] = True
        if not self.book:
            exclude["book"] = True
        if not self.period:
            exclude["period"] = True
        if self.stress is None:
            exclude["stress"] = True  # a run without stress keeps the id it had before [stress] existed
        if self.baselines:
            exclude["baselines"] = True
        if self.sweep is not None:
            # a sweep without a split keeps the id it had before splits existed
            exclude["sweep"] = set(SweepConfig.RUN_ONLY) | (set(SweepConfig.OOS_KEYS) if self.sweep.split is None
                                                             else set()) | (set() if self.sweep.grid else {"grid"})
        out = self.model_dump(mode="json", exclude=exclude)
        if not out["data"]["lookback_days"]:  # no warm-up data: the id it had before the key existed
            del out["data"]["lookback_days"]
        # a book without option legs keeps the id it had before option legs existed
        for b in out.get("book", []):
            if not b["option"] and not b["options_collateral"] and b["options_grid"] == "product":
                for key in ("option", "options_collateral", "options_grid"):
                    del b[key]
        return out

    def digest(self, data_fingerprint: str = "") -> str:
        """sha256 hex of the resolved content (:meth:`content`, keys sorted) and the data's
        fingerprint: equal for configs that differ only in key order, layout, comments or
        spelled-out defaults."""
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256((blob + "|" + data_fingerprint).encode()).hexdigest()

    def run_id(self, data_fingerprint: str = "") -> str:
        """``<title slug>-<first 12 hex digits of digest>``, e.g. ``btc-short-0917a59291ab``."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")[:40] or "run"
        return f"{slug}-{self.digest(data_fingerprint)[:12]}"


# ---------------------------------------------------------------------------------------------
# reading and error reports

def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``X``, ``list[X]`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, dict, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _known_keys(loc: tuple) -> list[str]:
    """Field names of the table that holds the key at ``loc``."""
    model: type[BaseModel] | None = RunConfig
    keyed = False  # the previous part was a table of tables (``legs``): this part is its key
    for part in loc[:-1]:
        if isinstance(part, int) or model is None or keyed:
            keyed = False
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
        keyed = field is not None and typing.get_origin(field.annotation) is dict
    return list(model.model_fields) if model is not None else []


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if not isinstance(part, int) and not re.fullmatch(r"[A-Za-z0-9_-]+", str(part)):
            part = f'"{part}"'  # as TOML writes a key such as a symbol: legs."ETH/USDT:USDT"
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _format_errors(err: ValidationError, source: str) -> str:
    lines: dict[str, str] = {}
    for e in err.errors():
        path = _path(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            known = _known_keys(e["loc"])
            close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            msg = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else
                                   f"; known keys here: {', '.join(known)}")
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.setdefault(path, msg)
    head = f"{source}: {len(lines)} invalid field(s): {', '.join(lines)}"
    return head + "\n" + "\n".join(f"  {p}: {m}" for p, m in lines.items())


def parse_config(doc: dict[str, Any], *, source: str = "config", base: str | Path | None = None) -> RunConfig:
    """Validate a config document (the parsed TOML); raises :class:`ConfigError` listing every
    invalid field with its path. ``base``: the folder a relative ``module`` file is relative to
    (the config file's; default the working directory). The ``module`` entries are loaded here."""
    try:
        return RunConfig.model_validate(doc, context={"base": base})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


# A run config is at most ~6 levels deep ([[perp]] -> strategy -> params -> a list of values);
# far deeper input is a mistake or an attack, and tomllib and the validators recurse per level.
MAX_DEPTH = 32


def _depth_problem(doc: Any) -> str | None:
    """The key path of the first value nested deeper than :data:`MAX_DEPTH`, or None (iterative,
    so it cannot itself overflow the stack)."""
    stack: list[tuple[Any, tuple]] = [(doc, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return f"{_path(path[:6])}... is nested more than {MAX_DEPTH} levels deep"
        if isinstance(node, dict):
            stack.extend((v, path + (k,)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(node))
    return None


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML document.

    Raises
    ------
    ConfigError
        The file is missing, not UTF-8 (TOML's encoding; the line and byte are named), not valid
        TOML, or nested deeper than :data:`MAX_DEPTH` levels (a run config needs about 6).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a TOML run config")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); TOML files are "
                          "UTF-8: save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a usable TOML run config: its arrays or inline tables are nested too "
                          f"deeply to parse (a run config needs about 6 levels, at most {MAX_DEPTH})") from None
    problem = _depth_problem(doc)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}; a run config needs about 6 levels: flatten it (docs/runner.md)")
    return doc


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run configuration."""
    return parse_config(read_toml(path), source=str(path), base=Path(path).parent)


MAIN_JOB = Path(__file__).with_name("main_job.toml")


def main_job() -> RunConfig:
    """The main job: BTC short through the 2021-11..2023-12 bear market, policies compared."""
    return load_config(MAIN_JOB)

