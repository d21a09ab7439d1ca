"""Checks of a run config that need the registries (strategies, policies, instrument settings)
but no market data, so a misspelt name fails in a second instead of after loading the data.

Every problem of every simulation is collected; :func:`check_settings` returns them all.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from backtest.runner.config import BookConfig, ConfigError, PerpConfig, RunConfig, StrategyConfig


def unknown_fields(cls: type, values: dict[str, Any], where: str) -> list[str]:
    """Problems for keys of ``values`` that are not fields of the settings dataclass ``cls``."""
    known = [f.name for f in dataclasses.fields(cls)]
    out = []
    for k in values:
        if k in known:
            continue
        close = difflib.get_close_matches(k, known, n=1)
        out.append(f"{where}.{k}: unknown setting" + (f" (did you mean {close[0]!r}?)" if close
                                                        else f"; known: {', '.join(known)}"))
    return out


def _strategy(cfg: StrategyConfig, where: str) -> list[str]:
    import strategies

    out = []
    for key, name, sub, params in (("name", cfg.name, "params", cfg.params),
                                   ("filter", cfg.filter, "filter_params", cfg.filter_params)):
        if name is None:
            continue
        try:
            strategy = strategies.get(name)
        except ValueError as exc:
            out.append(f"{where}.{key}: {exc}")
            continue
        try:
            strategy.grid(params or None)
        except ValueError as exc:
            out.append(f"{where}.{sub}: {exc}")
    if cfg.filter is None and cfg.filter_params:
        out.append(f"{where}.filter_params: given without a filter; name the filter strategy, e.g. "
                   "filter = 'bear_regime'")
    return out


def _policies(cfg: PerpConfig, where: str) -> list[str]:
    from strategies.policies import expand

    out = []
    for i, item in enumerate(cfg.policies):
        try:
            expand([item])
        except ValueError as exc:
            out.append(f"{where}.policies[{i}]: {exc}")
    return out


def _book(cfg: BookConfig, where: str) -> list[str]:
    """A book's symbols, legs, strategy, gate and policies, checked without data."""
    import strategies
    from backtest.book.bars import check_book_symbols
    from strategies.policies.book import expand_book

    out = []
    try:
        check_book_symbols(cfg.symbols, error=ValueError)
    except ValueError as exc:
        out.append(f"{where}.symbols: {exc}")
    for sym in cfg.legs:
        if sym not in cfg.symbols:
            close = difflib.get_close_matches(sym, cfg.symbols, n=1)
            out.append(f'{where}.legs."{sym}": not a symbol of the book'
                       + (f" (did you mean {close[0]!r}?)" if close else f"; its symbols: {list(cfg.symbols)}"))
    s = cfg.strategy
    try:
        strategies.get_book(s.name).grid(s.params or None)
    except ValueError as exc:
        key = "params" if s.name in strategies.book_names() else "name"
        out.append(f"{where}.strategy.{key}: {exc}")
    if s.gate is not None:
        try:
            strategies.get(s.gate).grid(s.gate_params or None)
        except ValueError as exc:
            key = "gate_params" if s.gate in strategies.names() else "gate"
            out.append(f"{where}.strategy.{key}: {exc}")
    elif s.gate_params or s.gate_symbol is not None:
        out.append(f"{where}.strategy: gate_params/gate_symbol given without a gate; name the gate strategy, "
                   "e.g. gate = 'trend_short'")
    for i, item in enumerate(cfg.policies):
        try:
            expand_book([item])
        except ValueError as exc:
            out.append(f"{where}.policies[{i}]: {exc}")
    if cfg.rebalance_hours is not None and not cfg.rebalance_hours > 0:
        out.append(f"{where}.rebalance_hours: {cfg.rebalance_hours!r} is not a positive number of hours; give e.g. 8")
    return out + _book_options(cfg, where)


def _book_options(cfg: BookConfig, where: str) -> list[str]:
    """A book's ``[[book.option]]`` tables checked without data: the underlying is a symbol of the
    book, the rule and its numbers (``strategies.book_options.rule_problems``), the contract
    keys by the put simulator's own rules, the legs together (one delta hedge per perp, no hedge
    of a delta-hedged perp, distinct names, one iv per symbol) and the grid."""
    import re

    from backtest.book.options import OptionLeg
    from backtest.options.inputs import InstrumentInputError
    from backtest.options.sim import _arrays as put_arrays
    from backtest.options.schedule import KINDS
    from backtest.runner.book import option_settings, option_underlying
    from strategies.book_options import OptionRule, contract_label, hedge_grid, rule_problems, rule_set_problems

    out: list[str] = []
    rules: list[OptionRule] = []
    names: dict[str, int] = {}
    ivs: dict[str, str] = {}
    for i, o in enumerate(cfg.option):
        at = f"{where}.option[{i}]"
        sym = option_underlying(o.underlying, cfg.symbols)
        if sym is None:
            out.append(f"{at}.underlying: {o.underlying!r} is not a symbol of the book, nor a base currency held "
                       f"once; its symbols: {list(cfg.symbols)}")
        bad = rule_problems(o.rule, o.ratio, o.exposure, o.band)
        out += [f"{at}.{key}: {msg}" for key, msg in bad]
        put = option_settings(o)
        try:
            put_arrays(put, 1)  # the put simulator's checks of every contract field (one definition)
            if put.expiry not in KINDS:
                raise InstrumentInputError(f"expiry={put.expiry!r} is not one of {KINDS}")
        except InstrumentInputError as exc:
            m = re.match(r"(?:PutSettings\.)?(\w+)=", str(exc))
            out.append(f"{at}.{m.group(1) if m else 'type'}: {exc}")
        if o.iv is not None and o.iv.count("/") != 1:
            out.append(f"{at}.iv: {o.iv!r} must look like 'exchange/name', e.g. 'deribit/BTC-DVOL'")
        if put.vol_source == "iv" and o.iv is None:
            out.append(f"{at}.vol_source: 'iv' prices the leg off an implied-volatility index: name it with iv = "
                       "\"deribit/BTC-DVOL\" (or use 'auto' / 'ewma')")
        if sym is None:
            continue
        if o.iv is not None:
            if ivs.setdefault(sym, o.iv) != o.iv:
                out.append(f"{at}.iv: {o.iv!r} but another leg on {sym} gives {ivs[sym]!r}; one index per symbol")
        name = o.name or f"{sym} {contract_label(put)}"
        if name in names or name in cfg.symbols:
            other = f"option[{names[name]}]" if name in names else "a symbol of the book"
            out.append(f"{at}.name: the leg's name {name!r} is already {other}'s; give it a distinct name = \"...\"")
        names.setdefault(name, i)
        if not bad:
            rules.append(OptionRule(OptionLeg(sym, put=put), o.rule, ratio=o.ratio, exposure=o.exposure, band=o.band))
    if len(rules) == len(cfg.option) and rules:
        out += [f"{where}.option[{j}].rule: {msg}" for j, msg in rule_set_problems(rules)]
        try:
            hedge_grid(rules, cfg.options_grid)
        except ValueError as exc:
            out.append(f"{where}.options_grid: {exc}")
    elif cfg.options_collateral and not cfg.option:
        out.append(f"{where}.options_collateral: true but the book has no [[book.option]] leg; add one or remove it")
    return out


def level_names(cfg: StrategyConfig) -> list[str]:
    """Column levels a [[perp]] simulation of this strategy produces (see
    :func:`strategies.signals` and :func:`strategies.build_targets`), in order."""
    import strategies

    def fields(name: str) -> list[str]:
        return list(strategies.get(name).params.model_fields) or ["strategy"]

    names = fields(cfg.name)
    if cfg.filter is not None:
        names += ["filter"] + [f"filter.{n}" for n in fields(cfg.filter)]
    return names + ["policy"]


def sweep_target(cfg: RunConfig) -> PerpConfig:
    """The [[perp]] simulation a sweep summarises (``sweep.result``, default the first)."""
    from backtest.runner.config import ConfigError

    names = [p.name for p in cfg.perp]
    if not names:
        raise ConfigError("sweep: a sweep needs a [[perp]] table with a grid (strategy params and/or policies)")
    want = cfg.sweep.result if cfg.sweep is not None else None
    if want is None:
        return cfg.perp[0]
    if want not in names:
        close = difflib.get_close_matches(want, names, n=1)
        raise ConfigError(f"sweep.result: {want!r} names no [[perp]] simulation"
                          + (f" (did you mean {close[0]!r}?)" if close else f"; [[perp]] names: {names}"))
    return cfg.perp[names.index(want)]


def _sweep(cfg: RunConfig) -> list[str]:
    from backtest.runner.config import ConfigError

    try:
        target = sweep_target(cfg)
    except ConfigError as exc:
        return [str(exc)]
    if cfg.sweep is None:  # sweep_target refuses this: not reached
        return []
    try:
        levels = level_names(target.strategy) + list(cfg.sweep.grid)  # [sweep.grid] axes are levels too
    except ValueError:
        return []  # the strategy name itself is reported by _strategy
    out = []
    if "symbol" in cfg.sweep.grid and cfg.sweep.split is not None:
        # folds are cut by time on one symbol's bars; across symbols the folds, the ranking and
        # the stitched out-of-sample growth would need a rule of their own: refused, not guessed
        out.append(f"sweep.split: {cfg.sweep.split!r} with a [sweep.grid] symbol axis is not supported; remove the "
                   "split to rank every symbol's columns over the whole data, or sweep each symbol out of sample "
                   "with a config of its own ([data] symbol)")
    for axis in ("x", "y"):
        name = getattr(cfg.sweep, axis)
        if name not in levels:
            close = difflib.get_close_matches(name, levels, n=1)
            out.append(f"sweep.{axis}: {name!r} is not a column level of [[perp]] {target.name!r}"
                       + (f" (did you mean {close[0]!r}?)" if close else "") + f"; levels: {', '.join(levels)}")
    return out


def check_settings(cfg: RunConfig) -> list[str]:
    """Every problem found without data, as ``'<key path>: <reason>'``: simulation names, strategy and filter names and
    parameters, policy strings, put/product setting names, book symbols, legs, strategies, gates and
    policies, sweep levels. Empty when all is well."""
    from backtest.options import PutSettings
    from backtest.products import ProductSettings

    sims = [(f"perp[{k}]", p.name) for k, p in enumerate(cfg.perp)]
    sims += [(f"puts[{k}]", p.name) for k, p in enumerate(cfg.puts)]
    sims += [(f"products[{k}]", p.name) for k, p in enumerate(cfg.products)]
    sims += [(f"book[{k}]", p.name) for k, p in enumerate(cfg.book)]
    if not sims:
        return ["config: it defines no simulation; add a [[perp]], [[puts]], [[products]] or [[book]] table"]
    out = []
    seen: dict[str, str] = {}
    for where, name in sims:
        if name in seen:
            out.append(f"{where}.name: {name!r} is already used by {seen[name]}; give every simulation a "
                       "distinct name")
        seen.setdefault(name, where)
    for k, p in enumerate(cfg.perp):
        out += _strategy(p.strategy, f"perp[{k}].strategy")
        out += _policies(p, f"perp[{k}]")
    for k, q in enumerate(cfg.puts):
        if q.strategy is not None:
            if q.strategy.name != "long_put":
                out.append(f"puts[{k}].strategy.name: puts take the 'long_put' strategy, not {q.strategy.name!r}")
            else:
                out += _strategy(q.strategy, f"puts[{k}].strategy")
        out += unknown_fields(PutSettings, q.settings, f"puts[{k}].settings")
    for k, r in enumerate(cfg.products):
        out += unknown_fields(ProductSettings, r.settings, f"products[{k}].settings")
    for k, b in enumerate(cfg.book):
        out += _book(b, f"book[{k}]")
    if cfg.sweep is not None:
        out += _sweep(cfg)
    return out


def settings_error(problems: list[str]) -> ConfigError:
    """One :class:`ConfigError` for many ``'<key path>: <reason>'`` problems: a first line naming
    every path, then one indented line per problem."""
    paths = list(dict.fromkeys(p.split(": ", 1)[0] for p in problems))
    body = "\n".join("  " + p.replace("\n", "\n    ") for p in problems)
    return ConfigError(f"{len(problems)} problem(s) in the run's settings: {', '.join(paths)}\n{body}")
