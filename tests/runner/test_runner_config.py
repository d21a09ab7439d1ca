"""Run config: strict keys, every invalid field reported at once with its path, defaults, run ids."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt

import pytest

from backtest.engine import Account
from backtest.runner.config import AccountConfig, ConfigError, RunConfig, load_config, parse_config
from runner_kit import TINY, TINY_TOML


def errors_of(doc: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, source="cfg.toml")
    return str(info.value)


def with_key(path: tuple, key: str, value=1) -> dict:
    doc = copy.deepcopy(TINY)
    doc["perp"][0]["account"] = {"leverage": 5}
    doc["sweep"] = {"x": "slow_days"}
    node = doc
    for part in path:
        node = node[part]
    node[key] = value
    return doc


@pytest.mark.parametrize("path, key, shown", [
    ((), "rank_bi", "rank_bi"),
    (("data",), "timefrme", "data.timefrme"),
    (("perp", 0), "policy", "perp[0].policy"),
    (("perp", 0, "account"), "leverag", "perp[0].account.leverag"),
    (("perp", 0, "strategy"), "parms", "perp[0].strategy.parms"),
    (("sweep",), "metrc", "sweep.metrc"),
])
def test_unknown_key_rejected_with_its_path(path, key, shown):
    msg = errors_of(with_key(path, key))
    assert f"  {shown}: unknown key" in msg
    assert msg.startswith(f"cfg.toml: 1 invalid field(s): {shown}\n")


def test_unknown_key_inside_puts_and_products_tables():
    doc = copy.deepcopy(TINY)
    doc["puts"] = [{"name": "p", "setings": {}}]
    doc["products"] = [{"name": "q", "investment": 5}]
    msg = errors_of(doc)
    assert "puts[0].setings: unknown key (did you mean 'settings'?)" in msg
    assert "products[0].investment: unknown key" in msg


def test_unknown_key_suggests_the_nearest_known_key():
    assert "did you mean 'leverage'?" in errors_of(with_key(("perp", 0, "account"), "leverag"))
    assert "did you mean 'rank_by'?" in errors_of(with_key((), "rank_bi"))


def test_every_invalid_field_is_reported_at_once():
    doc = copy.deepcopy(TINY)
    doc["perp"][0]["account"] = {"leverage": "20", "margin_mode": "crosss", "lag": -1}
    doc["data"]["timeframe"] = "1M"
    doc["rank_by"] = "calmr"
    msg = errors_of(doc)
    paths = ["rank_by", "data.timeframe", "perp[0].account.leverage", "perp[0].account.margin_mode",
             "perp[0].account.lag"]
    head = msg.splitlines()[0]
    assert head.startswith("cfg.toml: 5 invalid field(s): ")
    for p in paths:
        assert p in head
        assert any(line.startswith(f"  {p}: ") for line in msg.splitlines()[1:])
    assert "did you mean 'cross'?" in msg
    assert "did you mean 'calmar'?" in msg


@pytest.mark.parametrize("value, ok", [
    (3, True), (3.5, True), ([1, 2.5], True),
    ("3", False), (True, False), ([], False), ([1, "2"], False), ({"a": 1}, False),
])
def test_numbers_or_one_per_column(value, ok):
    doc = copy.deepcopy(TINY)
    doc["perp"][0]["account"] = {"leverage": value}
    if ok:
        got = parse_config(doc).perp[0].account.leverage
        assert got == (float(value) if not isinstance(value, list) else [float(v) for v in value])
    else:
        assert "perp[0].account.leverage" in errors_of(doc)


def test_missing_required_key_is_named():
    doc = copy.deepcopy(TINY)
    del doc["perp"][0]["name"]
    assert "  perp[0].name: required key is missing" in errors_of(doc)


def test_defaults_match_the_engine_account():
    cfg = parse_config({})
    assert (cfg.title, cfg.rank_by, cfg.reports_dir, cfg.sweep) == ("Backtest", "calmar", "reports", None)
    assert (cfg.data.exchange, cfg.data.symbol, cfg.data.timeframe) == ("binanceusdm", "BTC/USDT:USDT", "1h")
    assert cfg.data.start is None and cfg.data.end is None and cfg.data.iv is None
    assert cfg.perp == [] and cfg.puts == [] and cfg.products == []
    # the config's account defaults are the engine's, field for field
    engine = Account()
    acc = AccountConfig()
    assert list(AccountConfig.model_fields) == [f.name for f in dataclasses.fields(Account)]
    for f in dataclasses.fields(Account):
        assert getattr(acc, f.name) == getattr(engine, f.name), f.name
    perp = parse_config({"perp": [{"name": "a"}]}).perp[0]
    assert perp.strategy.name == "short_hold" and perp.policies == ["const(1)"]


def test_config_is_frozen():
    cfg = parse_config(TINY)
    with pytest.raises(Exception):
        cfg.title = "other"
    with pytest.raises(Exception):
        cfg.data.start = "2020-01-01"


@pytest.mark.parametrize("start", ["2022-01-01", dt.date(2022, 1, 1), "2022-01-01T00:00:00Z",
                                   "2022-01-01T00:00", 1640995200000])
def test_equal_instants_are_one_canonical_value(start):
    doc = copy.deepcopy(TINY)
    doc["data"]["start"] = start
    assert parse_config(doc).data.start == "2022-01-01"
    assert parse_config(doc).digest("fp") == parse_config(TINY).digest("fp")


@pytest.mark.parametrize("start, end", [("2022-03-01", "2022-03-01"), ("2022-03-02", "2022-03-01")])
def test_empty_date_range_is_a_config_error(start, end):
    doc = copy.deepcopy(TINY)
    doc["data"].update(start=start, end=end)
    msg = errors_of(doc)
    assert "data.end: the date range is empty" in msg


def test_bad_date_names_the_key():
    doc = copy.deepcopy(TINY)
    doc["data"]["start"] = "2022-13-01"
    assert "data.start: start: '2022-13-01' is neither an ISO date" in errors_of(doc)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("title = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_sweep_table_checks():
    doc = copy.deepcopy(TINY)
    doc["sweep"] = {"x": "policy", "y": "policy"}
    assert "both 'policy'" in errors_of(doc)
    doc["sweep"] = {"x": "slow_days", "metric": "sharp"}
    assert "sweep.metric: 'sharp' is not a rankable metric; did you mean 'sharpe'?" in errors_of(doc)


# ---------------------------------------------------------------------------------------------
# run ids

def run_id(doc: dict, fp: str = "data-fp") -> str:
    return parse_config(doc).run_id(fp)


def test_same_config_and_data_give_the_same_id():
    assert run_id(TINY) == run_id(copy.deepcopy(TINY))
    assert run_id(TINY).startswith("tiny-") and len(run_id(TINY)) == len("tiny-") + 12


CHANGES = {
    "title": lambda d: d.update(title="tiny 2"),
    "rank_by": lambda d: d.update(rank_by="sharpe"),
    "data.start": lambda d: d["data"].update(start="2022-01-02"),
    "data.end": lambda d: d["data"].update(end="2022-02-28"),
    "data.timeframe": lambda d: d["data"].update(timeframe="1h"),
    "data.symbol": lambda d: d["data"].update(symbol="ETH/USDT:USDT"),
    "strategy param": lambda d: d["perp"][0]["strategy"]["params"].update(slow_days=[10, 21]),
    "policy": lambda d: d["perp"][0].update(policies=["const(1)", "const(2.5)"]),
    "policy order": lambda d: d["perp"][0].update(policies=["const(2)", "const(1)"]),
    "account": lambda d: d["perp"][0].update(account={"leverage": 19}),
    "sim name": lambda d: d["perp"][0].update(name="trend2"),
    "added sim": lambda d: d.update(products=[{"name": "p"}]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_of_a_value_changes_the_id(change):
    doc = copy.deepcopy(TINY)
    CHANGES[change](doc)
    assert run_id(doc) != run_id(TINY)


def test_a_different_data_fingerprint_changes_the_id():
    assert run_id(TINY, "a") != run_id(TINY, "b")


def test_spelled_out_defaults_and_output_folder_do_not_change_the_id():
    doc = copy.deepcopy(TINY)
    doc["perp"][0]["account"] = {"leverage": 20.0, "margin_mode": "cross", "lag": 1}
    doc["data"]["allow_gaps"] = False
    doc["reports_dir"] = "/elsewhere"
    assert run_id(doc) == run_id(TINY)


def test_key_order_whitespace_and_comments_do_not_change_the_id(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text(TINY_TOML)
    b = tmp_path / "b.toml"
    b.write_text("""\
# the same run: keys reordered, spaced differently, dates as TOML dates
[[perp]]
policies   = [ "const(1)",
               "const(2)" ]   # two policies
strategy   = { params = { slow_days = [10, 20] }, name = "trend_short" }
name       = "trend"

[data]
end = 2022-03-01
start = 2022-01-01
timeframe = "4h"
symbol = "BTC/USDT:USDT"
exchange = "binanceusdm"
""")
    b.write_text('title = "tiny"\n' + b.read_text())
    ca, cb = load_config(a), load_config(b)
    assert ca == cb
    assert ca.run_id("fp") == cb.run_id("fp")
    assert ca.run_id("fp") == run_id(TINY, "fp")


def test_digest_is_sha256_of_the_sorted_content():
    import hashlib
    import json

    cfg = parse_config(TINY)
    blob = json.dumps(cfg.content(), sort_keys=True, separators=(",", ":"))
    assert cfg.digest("fp") == hashlib.sha256((blob + "|fp").encode()).hexdigest()
    assert "reports_dir" not in cfg.content()
    assert isinstance(RunConfig.model_validate(cfg.content()), RunConfig)  # content round-trips
