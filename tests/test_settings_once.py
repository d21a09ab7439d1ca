"""A setting is declared once (DESIGN.md, style 14): the engine's ``Account`` and ``Policy``
dataclasses declare each field with its :class:`~backtest.engine.settings.Setting`; the run
config's ``[perp.account]`` model, the engine's per-column arrays, the column count of
``simulate_perp`` and the key table of ``docs/runner.md`` are all made from that declaration.
Each test here fails when a field reaches one of them but not the others."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backtest.engine import Account, Policy, simulate_perp
from backtest.engine.bars import PerpBars
from backtest.engine.settings import (AfterLiquidation, CallResponse, Excess, MarginMode, PolicyKind, account_arrays,
                                      per_column_fields, policy_arrays, setting, setting_of)
from backtest.market import MarketSpec, TierTable
from backtest.runner.config import AccountConfig, ConfigError, parse_config, settings_model, settings_table

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3_600_000

# Two valid values per per-column setting, the first the default where it is one (choices: all
# their names). A new per-column field needs a line here: the test then checks its wiring.
VALID: dict[str, list[Any]] = {
    "initial_capital": [10_000.0, 2_500.0],
    "margin_mode": ["cross", "isolated"],
    "leverage": [20.0, 3.0],
    "margin_call_threshold": [0.8, 0.9],
    "margin_call_response": ["none", "reduce", "top_up"],
    "margin_call_target": [0.5, 0.25],
    "reserve": [0.0, 100.0],
    "after_liquidation": ["stop", "continue"],
    "excess": ["clip", "reject"],
    "fee_rate": [0.0004, 0.001],
    "slippage": [0.0, 0.002],
    "kind": ["none", "drawdown", "cppi"],
    "max_drawdown": [0.5, 0.2],
    "floor": [0.0, 0.7],
    "multiplier": [1.0, 3.0],
    "ratchet": [False, True],
    "max_exposure": [np.inf, 2.0],
}
ENUMS = {"margin_mode": MarginMode, "margin_call_response": CallResponse, "after_liquidation": AfterLiquidation,
         "excess": Excess, "kind": PolicyKind}


def test_every_field_is_declared_with_its_setting():
    for cls in (Account, Policy):
        for f in dataclasses.fields(cls):
            how = setting_of(f)  # KeyError: a field declared without setting(...)
            assert how.doc and how.kind in ("number", "choice", "bool", "int"), (cls.__name__, f.name)
            assert (how.kind == "choice") == (how.choices is not None), f.name
            assert f.name in cls.__doc__, f"{cls.__name__}'s docstring lacks {f.name}"


def test_the_config_model_is_the_account_field_for_field():
    model = AccountConfig.model_fields
    assert list(model) == [f.name for f in dataclasses.fields(Account)]
    for f in dataclasses.fields(Account):
        assert model[f.name].default == f.default, f.name
        assert model[f.name].description == setting_of(f).doc, f.name
    # and a config's account is the engine's Account: every key passes through unchanged
    values = {name: vals[1] for name, vals in VALID.items() if name in model}
    values |= {"lag": 3, "allow_lookahead": True}
    acc = parse_config({"perp": [{"name": "a", "account": values}]}).perp[0].account
    assert Account(**acc.model_dump()) == Account(**values)


@pytest.mark.parametrize("name", [n for n in per_column_fields(Account) if n in ENUMS])
def test_a_config_choice_is_exactly_the_engine_enum(name):
    names = list(ENUMS[name].names)
    assert names[0] == getattr(Account(), name)  # the default first: the messages list it first
    acc = parse_config({"perp": [{"name": "a", "account": {name: names}}]}).perp[0].account
    assert getattr(acc, name) == names
    with pytest.raises(ConfigError, match=re.escape(f"'nope' is not one of {names}")):
        parse_config({"perp": [{"name": "a", "account": {name: "nope"}}]})


def test_the_valid_values_cover_every_per_column_setting():
    assert set(VALID) == set(per_column_fields(Account)) | set(per_column_fields(Policy))


def _encoded(name: str, values: list[Any]) -> list[Any]:
    return [ENUMS[name].names[v] for v in values] if name in ENUMS else values


@pytest.mark.parametrize("name", per_column_fields(Account))
def test_each_account_setting_reaches_its_own_kernel_array(name):
    values = VALID[name]
    if name == "margin_call_response":  # a response needs a target below the threshold (defaults: 0.5 < 0.8)
        assert Account().margin_call_target < Account().margin_call_threshold
    out = account_arrays(Account(**{name: values}), len(values), default_fee=0.0005)
    kernel = setting_of(next(f for f in dataclasses.fields(Account) if f.name == name)).kernel
    assert set(out) == {setting_of(f).kernel for f in dataclasses.fields(Account) if setting_of(f).kernel}
    np.testing.assert_array_equal(out[kernel], _encoded(name, values))
    for other, arr in out.items():  # the other arrays hold their defaults
        if other != kernel:
            assert len(set(arr.tolist())) == 1, other


@pytest.mark.parametrize("name", per_column_fields(Policy))
def test_each_policy_setting_reaches_its_own_kernel_array(name):
    values = VALID[name]
    out = policy_arrays(Policy(**{name: values}), len(values))
    kernels = {f.name: setting_of(f).kernel for f in dataclasses.fields(Policy)}
    assert set(out) == set(kernels.values())
    np.testing.assert_array_equal(out[kernels[name]], _encoded(name, values))


def _bars(n: int = 4) -> PerpBars:
    ts = np.arange(n, dtype=np.int64) * HOUR
    close = np.linspace(100.0, 103.0, n)
    return PerpBars.from_arrays(timestamp=ts, open=close, high=close + 1.0, low=close - 1.0, close=close)


def _spec() -> MarketSpec:
    tiers = TierTable(np.array([[0.0, 1e12, 0.005, 0.0, 125.0]]))
    return MarketSpec(symbol="T/USDT:USDT", inverse=False, contract_size=1.0, settle="USDT", taker_fee=0.0005,
                      maker_fee=0.0002, lot_size=1e-9, min_notional=0.0, liquidation_fee_rate=0.0, tiers=tiers)


@pytest.mark.parametrize("name", per_column_fields(Account) + [f"policy.{n}" for n in per_column_fields(Policy)])
def test_a_list_in_any_per_column_setting_sets_the_number_of_columns(name):
    """simulate_perp counts columns from the same declaration: one target column, one list."""
    field = name.removeprefix("policy.")
    values = VALID[field]
    settings = {"policy": Policy(**{field: values})} if name.startswith("policy.") else \
        {"account": Account(**{field: values})}
    res = simulate_perp(_bars(), np.full(4, -1.0), _spec(), **settings)
    assert len(res.columns) == len(values)


def test_the_docs_key_table_is_generated_from_the_account():
    doc = (ROOT / "docs" / "runner.md").read_text()
    want = settings_table(Account)
    assert want in doc, ("docs/runner.md's [perp.account] table is not the one declared in "
                         "backtest.engine.settings.Account; replace it with the output of\n  python -c 'from "
                         "backtest.runner.config import settings_table, Account; print(settings_table(Account))'")
    for f in dataclasses.fields(Account):
        assert f"| `{f.name}` |" in want


def test_a_new_setting_reaches_the_config_and_the_docs():
    """The mechanism itself, on a settings class made here: a field declared once appears in the
    config model (with its type's checks) and in the key table."""

    @dataclass(frozen=True)
    class Made:
        """Made-up settings."""

        width: Any = setting(2.0, "the width, in ``bars``", kernel="width")
        mode: Any = setting("cross", "the ``'cross'`` mode", kind="choice", choices=MarginMode.names, kernel="mode")
        steps: int = setting(1, "steps, ``True`` to count", kind="int", minimum=1)

    model = settings_model("MadeConfig", Made, "Made-up settings.")
    assert list(model.model_fields) == ["width", "mode", "steps"]
    assert model(width=[1.0, 2.0]).width == [1.0, 2.0]
    for bad in ({"width": "2"}, {"mode": "crss"}, {"steps": 0}, {"steps": 1.5}, {"other": 1}):
        with pytest.raises(ValueError):
            model(**bad)
    assert settings_table(Made).splitlines()[2:] == [
        "| `width` | number | `2` | the width, in `bars` |",
        '| `mode` | `"cross"`/`"isolated"` | `"cross"` | the `"cross"` mode |',
        "| `steps` | integer >= 1 | `1` | steps, `true` to count |",
    ]
