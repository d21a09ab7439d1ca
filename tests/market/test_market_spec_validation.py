"""Every field of a market spec file is checked, through ``load_market`` on real JSON files:
bad input is refused with one error naming the file, the key path and the fix."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backtest.market import BUNDLED_DIR, MarketSpecError, load_market

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "BTC/USDT:USDT"
BUNDLED = json.loads((BUNDLED_DIR / "binanceusdm.json").read_text())


def _write(tmp_path: Path, doc) -> Path:
    """A store root whose market snapshot is ``doc`` (an object, or raw text/bytes)."""
    path = tmp_path / "markets" / "binanceusdm.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    elif isinstance(doc, str):
        path.write_text(doc)
    else:
        path.write_text(json.dumps(doc))
    return path


def _entry() -> dict:
    """The bundled BTC entry, with its current table only (no history)."""
    e = copy.deepcopy(BUNDLED["markets"][SYMBOL])
    e["tier_history"] = []
    return e


def _load_with(tmp_path: Path, entry: dict):
    _write(tmp_path, {"exchange": "binanceusdm", "markets": {SYMBOL: entry}})
    return load_market("binanceusdm", SYMBOL, data_dir=tmp_path)


def test_the_unchanged_entry_loads_from_the_store(tmp_path):
    spec = _load_with(tmp_path, _entry())
    assert spec.contract_size == 1.0 and spec.taker_fee == 0.0005 and spec.tiers.n == 12


def test_contract_size_zero_is_refused_not_turned_into_one(tmp_path):
    path = tmp_path / "markets" / "binanceusdm.json"
    with pytest.raises(MarketSpecError) as err:
        _load_with(tmp_path, dict(_entry(), contractSize=0))
    msg = str(err.value)
    assert str(path) in msg and "contractSize: 0 must be > 0" in msg and "USD per contract" in msg


def test_missing_contract_size_is_refused(tmp_path):
    e = _entry()
    del e["contractSize"]
    with pytest.raises(MarketSpecError, match=r"contractSize: missing"):
        _load_with(tmp_path, e)


def test_tier_whose_maintenance_rate_reaches_one_over_max_leverage_is_refused(tmp_path):
    e = _entry()
    e["tiers"][1]["maxLeverage"] = 200.0  # 0.005 >= 1/200: liquidated at once at 200x
    e["tiers"][0]["maxLeverage"] = 250.0  # (keeps the leverage non-increasing)
    with pytest.raises(MarketSpecError) as err:
        _load_with(tmp_path, e)
    msg = str(err.value)
    assert "tiers[0]: maintenanceMarginRate 0.004 is not below the initial margin rate 1/maxLeverage = 0.004" in msg
    assert "tiers[1]: maintenanceMarginRate 0.005 is not below" in msg and "liquidated at once" in msg


def test_a_market_file_holding_a_json_list_is_a_clear_error(tmp_path):
    path = _write(tmp_path, [BUNDLED])
    with pytest.raises(MarketSpecError, match=r"holds a JSON list, expected an object") as err:
        load_market("binanceusdm", SYMBOL, data_dir=tmp_path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("raw, what", [
    ('{"markets": {"BTC/USDT:USDT": {', r"not valid JSON \(Expecting property name .* at line 1 column 32\)"),
    (b'{"notes": ["\xff\xfe"]}', r"not UTF-8 text \(byte 12\)"),
    ('{"exchange": "binanceusdm"}', r"no 'markets' key"),
    ('{"markets": [1, 2]}', r"'markets' is a list"),
])
def test_an_unreadable_market_file_names_the_file_and_the_fix(tmp_path, raw, what):
    path = _write(tmp_path, raw)
    with pytest.raises(MarketSpecError, match=what) as err:
        load_market("binanceusdm", SYMBOL, data_dir=tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "backtest download --exchange binanceusdm" in msg


@pytest.mark.parametrize("key, value, expected", [
    ("taker", "0.05%", r"taker: '0.05%' is not a number; write it as a JSON number"),
    ("maker", True, r"maker: True is not a number"),
    ("taker", 0.05 * 100, r"taker: 5.0 must be < 0.1; a fraction of notional .* quoted in percent"),
    ("maker", -0.0001, r"maker: -0.0001 must be >= 0"),
    ("liquidationFeeRate", None, r"liquidationFeeRate: is null"),
    ("liquidationFeeRate", 1.25, r"liquidationFeeRate: 1.25 must be < 0.1"),
    ("contractSize", "1", r"contractSize: '1' is not a number"),
    ("contractSize", -100.0, r"contractSize: -100.0 must be > 0"),
    ("settle", 5, r"settle: 5 must be the settlement currency"),
    ("inverse", "false", r"inverse: 'false' must be true or false"),
    ("linear", False, r"linear/inverse: exactly one of 'linear' and 'inverse' must be true"),
    ("precision", [0.001], r"precision: is a list, expected a JSON object"),
    ("precision", {"amount": -0.001}, r"precision.amount: -0.001 must be >= 0"),
    ("limits", {"cost": {"min": "100"}}, r"limits.cost.min: '100' is not a number"),
    ("limits", {"amount": {"min": -1}}, r"limits.amount.min: -1 must be >= 0"),
    ("tiers", {}, r"tiers: is a dict, expected a list of tier rows"),
    ("tiers", [], r"tiers: tier table is empty"),
    ("tier_history", {"from": 0}, r"tier_history: is a dict, expected a list"),
])
def test_every_top_level_field_is_checked(tmp_path, key, value, expected):
    with pytest.raises(MarketSpecError, match=expected) as err:
        _load_with(tmp_path, dict(_entry(), **{key: value}))
    assert f"markets['{SYMBOL}']" in str(err.value)


@pytest.mark.parametrize("field, value, expected", [
    ("minNotional", "0", r"tiers\[0\].minNotional: '0' is not a number"),
    ("maxNotional", 0.0, r"tiers\[0\].maxNotional: 0.0 must be > 0"),
    ("maintenanceMarginRate", 0.4, r"tiers\[0\]: maintenanceMarginRate 0.4 is not below the initial margin"),
    ("maintenanceMarginRate", 1.5, r"tiers\[0\].maintenanceMarginRate: 1.5 must be < 1; a fraction of notional"),
    ("maintenanceMarginRate", 0.0, r"tiers\[0\].maintenanceMarginRate: 0.0 must be > 0"),
    ("maxLeverage", 0.5, r"tiers\[0\].maxLeverage: 0.5 must be >= 1"),
    ("maxLeverage", 90.0, r"tiers\[1\]: maxLeverage 100 increases from 90"),
    ("maintAmt", "zero", r"tiers\[0\].maintAmt: 'zero' is not a number"),
    ("maintAmt", 10.0, r"tiers\[1\]: maintAmt 50.0 breaks continuity"),
    ("tier", 0, r"tiers\[0\].tier: 0 must be a whole number >= 1"),
])
def test_every_tier_field_is_checked(tmp_path, field, value, expected):
    e = _entry()
    e["tiers"][0][field] = value
    with pytest.raises(MarketSpecError, match=expected):
        _load_with(tmp_path, e)


def test_tier_rows_that_are_not_objects_or_lack_a_field_are_named(tmp_path):
    e = _entry()
    e["tiers"][3] = [0, 1]
    del e["tiers"][5]["maintenanceMarginRate"]
    with pytest.raises(MarketSpecError) as err:
        _load_with(tmp_path, e)
    msg = str(err.value)
    assert "tiers[3]: is a list, expected a JSON object" in msg
    assert "tiers[5].maintenanceMarginRate: missing" in msg


def test_tier_history_entries_are_checked(tmp_path):
    e = _entry()
    table = e["tiers"]
    bad = copy.deepcopy(table)
    bad[2]["minNotional"] += 1.0
    e["tier_history"] = [{"from": 0, "tiers": table}, {"from": 1.5e12, "tiers": table},
                         {"from": 1_700_000_000_000, "tiers": table}, {"from": 1_600_000_000_000, "tiers": bad},
                         {"tiers": table}]
    with pytest.raises(MarketSpecError) as err:
        _load_with(tmp_path, e)
    msg = str(err.value)
    assert "tier_history[1].from: 1500000000000.0 must be an integer time in ms UTC" in msg
    assert "tier_history[3].from: 1600000000000 is not after the previous table's start 1700000000000" in msg
    assert "tier_history[3].tiers[2]: hole or overlap" in msg
    assert "tier_history[4].from: missing" in msg


def test_all_problems_are_reported_at_once_on_one_line(tmp_path):
    e = dict(_entry(), contractSize=0, taker="x", maker=-1)
    e["tiers"][0]["maintenanceMarginRate"] = 2
    with pytest.raises(MarketSpecError) as err:
        _load_with(tmp_path, e)
    msg = str(err.value)
    assert "\n" not in msg and "4 problems in the market spec" in msg
    for key in ("contractSize:", "taker:", "maker:", "tiers[0].maintenanceMarginRate:"):
        assert key in msg


def test_an_entry_stored_under_another_symbol_is_refused(tmp_path):
    e = _entry()
    _write(tmp_path, {"markets": {"ETH/USDT:USDT": e}})
    with pytest.raises(MarketSpecError, match=r"markets\['ETH/USDT:USDT'\].symbol is 'BTC/USDT:USDT'"):
        load_market("binanceusdm", "ETH/USDT:USDT", data_dir=tmp_path)


def test_an_entry_that_is_not_an_object_is_named(tmp_path):
    _write(tmp_path, {"markets": {SYMBOL: [1]}})
    with pytest.raises(MarketSpecError, match=r"markets\['BTC/USDT:USDT'\]: the market entry is a list"):
        load_market("binanceusdm", SYMBOL, data_dir=tmp_path)


def test_the_cli_exits_2_with_one_line_naming_the_market_file(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    (root / "binanceusdm").symlink_to(ROOT / "data" / "sample" / "binanceusdm")
    path = _write(root, {"exchange": "binanceusdm", "markets": {SYMBOL: dict(_entry(), contractSize=0)}})
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""\
title = "bad market"

[data]
exchange = "binanceusdm"
symbol = "{SYMBOL}"
timeframe = "4h"
start = "2022-01-01"
end = "2022-02-01"
root = "{root}"

[[perp]]
name = "short"
strategy = {{ name = "trend_short", params = {{ slow_days = [10] }} }}
policies = ["const(1)"]
""")
    out = tmp_path / "reports"
    proc = subprocess.run([sys.executable, "-m", "backtest", "run", str(cfg), "-o", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(path) in lines[0] and "contractSize: 0 must be > 0" in lines[0]
    assert not out.exists() or not any(out.iterdir())
