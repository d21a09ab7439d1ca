"""The ``[stress]`` table of a run config: crisis windows, shocks and Monte Carlo paths.

Strict as every table of the run config (``backtest.runner.config``): unknown keys are refused
with their path and the closest known key. A ``[[stress.shock]]`` entry names its shock with
``type`` (:data:`SHOCK_TYPES`: one of the classes of :mod:`backtest.stress.shocks` or the path
transplant); its other keys are the fields of that class, checked by the class itself, so a
shock is declared once, in its class. The reference of every key is ``docs/stress.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator

from backtest.stress.cascade import Cascade, CascadeModel
from backtest.stress.common import ShockError
from backtest.stress.shocks import FundingSpike, Gap, MarkWick, Shock, SlippageShock, TierChange, VolatilityShock
from backtest.stress.transplant import PathTransplant
from backtest.stress.windows import CRISIS_WINDOWS, CrisisWindow

# ``type`` of a [[stress.shock]] -> its class
SHOCK_TYPES: dict[str, type[Shock]] = {
    "gap": Gap, "volatility": VolatilityShock, "funding_spike": FundingSpike, "mark_wick": MarkWick,
    "tier_change": TierChange, "slippage": SlippageShock, "transplant": PathTransplant,
}
TIME_FIELDS = ("at", "start", "end", "source_start", "source_end")
# paths of the routes that run one simulation a path (books, puts, products) when not given: a
# book of two symbols costs about 0.09 s of CPU a path (docs/stress.md), 100 paths about 9 s
DEFAULT_SLOW_PATHS = 100


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _time_text(v: Any, what: str) -> Any:
    """A TOML date or datetime as ISO text (a shock parses text and ms), other values as given."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            raise ValueError(f"{what}={v.isoformat()} has no time zone; write it in UTC with a Z, or as a date")
        return v.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + "Z"
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


# keys of every [[stress.shock]] and [[stress.cascade]] beside the shock's own fields
SCENARIO_KEYS = ("type", "name", "symbols")


def check_symbols(v: Any) -> list[str]:
    """A ``symbols`` key: a non-empty list of distinct non-empty strings (checked against the
    run's books and ``[data]`` symbol when the run is prepared)."""
    if (not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v)
            or len(set(v)) != len(v)):
        raise ValueError(f"symbols={v!r} must be a list of distinct symbols, e.g. ['ETH/USDT:USDT']; leave it out "
                         "to shock every symbol")
    return list(v)


def shock_of(entry: dict) -> Shock:
    """The shock object of a validated ``[[stress.shock]]`` entry (``type``, ``name``, ``symbols``
    and the class's fields)."""
    cls = SHOCK_TYPES[entry["type"]]
    return cls(**{k: v for k, v in entry.items() if k not in SCENARIO_KEYS})


def shock_name(entry: dict) -> str:
    """The entry's ``name``, else ``<type>(<field>=<value>, ...)``."""
    if entry.get("name"):
        return str(entry["name"])
    args = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("type", "name"))
    return f"{entry['type']}({args})"


def check_shock(v: Any) -> dict:
    """A ``[[stress.shock]]`` entry checked: a known ``type``, only that class's fields (and an
    optional ``name``), every required field given, and the values the class accepts. Returns the
    entry with times as ISO text."""
    if not isinstance(v, dict):
        raise ValueError(f"expected a table with a 'type' key, got {v!r}")
    kind = v.get("type")
    if kind not in SHOCK_TYPES:
        raise ValueError(f"shock type {kind!r} is unknown{_closest(str(kind), list(SHOCK_TYPES))}; choose one of "
                         f"{', '.join(SHOCK_TYPES)}")
    cls = SHOCK_TYPES[kind]
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    allowed = [*SCENARIO_KEYS, *fields]
    for key in v:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} for a {kind!r} shock{_closest(key, allowed)}; its keys are "
                             f"{', '.join(allowed)}")
    required = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in v]
    if missing:
        raise ValueError(f"a {kind!r} shock needs {', '.join(missing)} (its keys are {', '.join(allowed)})")
    if "name" in v and (not isinstance(v["name"], str) or not v["name"].strip()):
        raise ValueError(f"name={v['name']!r} must be a non-empty string")
    out = {k: (_time_text(x, k) if k in TIME_FIELDS else x) for k, x in v.items()}
    if "symbols" in v:
        out["symbols"] = check_symbols(v["symbols"])
    try:
        shock_of(out)
    except (ShockError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    return out


# keys of a [[stress.cascade]] beside CascadeModel's fields: the shock, the ADL view's insurance
# fund, and the optional cut-frequency table (short_cut_frequency)
CASCADE_KEYS = ("name", "at", "size", "insurance_fund", "frequency_at", "frequency_leverage", "symbols")


def cascade_of(entry: dict) -> Cascade:
    """The :class:`~backtest.stress.cascade.Cascade` of a validated ``[[stress.cascade]]`` entry."""
    model = {k: v for k, v in entry.items() if k not in CASCADE_KEYS}
    if "leverage_mix" in model:  # TOML arrays of [leverage, share] pairs
        model["leverage_mix"] = tuple(tuple(pair) for pair in model["leverage_mix"])
    return Cascade(entry["at"], entry["size"], CascadeModel(**model))


def cascade_name(entry: dict) -> str:
    """The entry's ``name``, else ``cascade(at=<at>, size=<size>)``."""
    return str(entry["name"]) if entry.get("name") else f"cascade(at={entry['at']}, size={entry['size']})"


def check_cascade(v: Any) -> dict:
    """A ``[[stress.cascade]]`` entry checked: ``at`` and ``size`` given, only the known keys
    (:data:`CASCADE_KEYS` and the fields of :class:`~backtest.stress.cascade.CascadeModel`), the
    values the classes accept; ``insurance_fund`` (USD, >= 0, default 0: no fund, every shortfall
    goes to ADL), ``frequency_at`` (times) and ``frequency_leverage`` (>= 1, default 10). Returns the
    entry with times as ISO text."""
    if not isinstance(v, dict):
        raise ValueError(f"expected a table with 'at' and 'size', got {v!r}")
    allowed = [*CASCADE_KEYS, *(f.name for f in dataclasses.fields(CascadeModel))]
    for key in v:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} for a [[stress.cascade]]{_closest(key, allowed)}; its keys are "
                             f"{', '.join(allowed)}")
    missing = [k for k in ("at", "size") if k not in v]
    if missing:
        raise ValueError(f"a [[stress.cascade]] needs {', '.join(missing)} (its keys are {', '.join(allowed)})")
    if "name" in v and (not isinstance(v["name"], str) or not v["name"].strip()):
        raise ValueError(f"name={v['name']!r} must be a non-empty string")
    out = dict(v)
    out["at"] = _time_text(v["at"], "at")
    if "symbols" in v:
        out["symbols"] = check_symbols(v["symbols"])
    fund = out.setdefault("insurance_fund", 0.0)
    if isinstance(fund, bool) or not isinstance(fund, (int, float)) or not 0 <= fund < float("inf"):
        raise ValueError(f"insurance_fund={fund!r} must be the insurance fund in USD, a number >= 0")
    lev = out.setdefault("frequency_leverage", 10.0)
    if isinstance(lev, bool) or not isinstance(lev, (int, float)) or not 1 <= lev < float("inf"):
        raise ValueError(f"frequency_leverage={lev!r} must be the short's leverage, a number >= 1")
    times = out.setdefault("frequency_at", [])
    if not isinstance(times, list):
        raise ValueError(f"frequency_at={times!r} must be a list of times (ISO dates or ms)")
    out["frequency_at"] = [_time_text(t, "frequency_at") for t in times]
    if "leverage_mix" in v and not (isinstance(v["leverage_mix"], list)
                                    and all(isinstance(x, list) and len(x) == 2 for x in v["leverage_mix"])):
        raise ValueError(f"leverage_mix={v['leverage_mix']!r} must be a list of [leverage, share] pairs")
    try:
        cascade_of(out)
    except (ShockError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    return out


class _Strict(BaseModel):
    # the run config's rules (backtest.runner.config._Strict), here to keep this module free of
    # the runner (the runner's config imports it)
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _instant(v: Any, info: Any) -> str:
    from backtest.runner.config import span_time

    return span_time(v, info, "the window", optional=False)  # type: ignore[return-value]  # not None here


class WindowConfig(_Strict):
    """A user crisis window (``[[stress.window]]``), measured as the library's windows are."""

    name: str = Field(min_length=1)
    start: Any = Field(description="first instant (ISO date/time or ms, inclusive)")
    end: Any = Field(description="end (ISO date/time or ms, exclusive); after start")
    description: str = ""
    source: str = ""

    _times = field_validator("start", "end", mode="plain")(_instant)

    def window(self) -> CrisisWindow:
        return CrisisWindow(self.name, str(self.start), str(self.end), self.description, self.source)


class MonteCarloConfig(_Strict):
    """``[stress.monte_carlo]``: stationary-bootstrap paths of the run's data, every ``[[perp]]`` on each."""

    paths: int = Field(ge=1, description="number of paths")
    block: float = Field(24.0, ge=1, description="mean block length in bars")
    horizon: int | None = Field(None, ge=1, description="bars per path after the first; default: all the data's")
    seed: int = Field(0, ge=0, description="seed of the paths (path k depends on seed and k only)")
    book_paths: int | None = Field(None, ge=0, description="paths of each [[book]] (joint bootstrap, one book "
                                   "engine run a path); default min(paths, 100); 0: books not run on paths")
    instrument_paths: int | None = Field(None, ge=0, description="paths of each [[puts]] and [[products]] (one "
                                         "simulation a path); default min(paths, 100); 0: not run on paths")

    def slow_paths(self, which: str) -> int:
        """The path count of ``'book'`` or ``'instrument'`` (its key, else ``min(paths, 100)``)."""
        v = self.book_paths if which == "book" else self.instrument_paths
        return min(self.paths, DEFAULT_SLOW_PATHS) if v is None else int(v)

    @field_validator("block", mode="plain")
    @classmethod
    def _block(cls, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 1:
            raise ValueError(f"block={v!r} must be a mean block length in bars, a number >= 1")
        return float(v)


Windows = Annotated[Any, PlainValidator(lambda v: _windows(v))]


def _windows(v: Any) -> str | list[str]:
    if v == "default":
        return v
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f'windows={v!r}: give "default" (the library windows the data covers) or a list of names')
    if len(set(v)) != len(v):
        raise ValueError(f"windows={v!r} names a window twice")
    return v


class StressConfig(_Strict):
    """``[stress]``: the run's columns under crisis windows, shocks and Monte Carlo paths."""

    windows: Windows = Field("default", description='"default" (the library windows the data covers), '
                                                    "or a list of names (library or [[stress.window]])")
    window: list[WindowConfig] = Field(default_factory=list, description="user windows, [[stress.window]]")
    shock: list[Annotated[Any, PlainValidator(check_shock)]] = Field(
        default_factory=list, description="shocks, [[stress.shock]]: type and the shock's fields")
    cascade: list[Annotated[Any, PlainValidator(check_cascade)]] = Field(
        default_factory=list, description="cascade scenarios, [[stress.cascade]]: at, size, insurance_fund, "
                                          "the CascadeModel's fields")
    monte_carlo: MonteCarloConfig | None = None

    @model_validator(mode="after")
    def _names(self) -> "StressConfig":
        lib = {w.name for w in CRISIS_WINDOWS}
        seen: set[str] = set()
        for w in self.window:
            if w.name in lib:
                raise ValueError(f"[[stress.window]] {w.name!r} has the name of a library window; give it another name")
            if w.name in seen:
                raise ValueError(f"the name {w.name!r} is given to two [[stress.window]]; give each a distinct name")
            seen.add(w.name)
        if self.windows != "default":
            known = lib | seen
            for n in self.windows:
                if n not in known:
                    raise ValueError(f"windows: {n!r} is no crisis window{_closest(n, sorted(known))}; known: "
                                     f"{', '.join(sorted(known))}")
        # shocks and cascades share the report's table of scenarios: one name each
        names = [shock_name(s) for s in self.shock] + [cascade_name(c) for c in self.cascade]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"two [[stress.shock]] or [[stress.cascade]] have the name {sorted(dup)[0]!r}; give each "
                             "a distinct name")
        return self

    def windows_list(self) -> tuple[list[CrisisWindow], bool]:
        """(the windows asked for, whether they are the default: the library and the user's)."""
        user = [w.window() for w in self.window]
        if self.windows == "default":
            return list(CRISIS_WINDOWS) + user, True
        from backtest.stress.windows import windows_named

        return windows_named(self.windows, user), False

    def shocks(self) -> list[tuple[str, Shock]]:
        """(name, shock object) of every ``[[stress.shock]]``, in order."""
        return [(shock_name(s), shock_of(s)) for s in self.shock]

    def cascades(self) -> list[tuple[str, Cascade, dict]]:
        """(name, Cascade, the checked entry) of every ``[[stress.cascade]]``, in order."""
        return [(cascade_name(c), cascade_of(c), c) for c in self.cascade]
