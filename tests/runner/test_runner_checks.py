"""Strategy, policy, put and product settings: every problem collected and reported together."""

from __future__ import annotations

import copy

import pytest

from backtest.runner import ConfigError, check_settings, execute, parse_config
from runner_kit import TINY, tree


def problems(doc: dict) -> list[str]:
    return check_settings(parse_config(doc))


def test_a_good_config_has_no_problem():
    assert problems(TINY) == []


def test_every_settings_problem_is_collected_with_a_suggestion():
    doc = copy.deepcopy(TINY)
    doc["perp"][0]["strategy"]["params"] = {"slow_dayz": 10}
    doc["perp"][0]["policies"] = ["const(1)", "cnst(2)", "voltarget(0.5)", "cpi(3,0.7)"]
    doc["perp"].append({"name": "b", "strategy": {"name": "trend_shrt"}})
    doc["puts"] = [{"name": "p", "settings": {"moneynes": 0.9}}]
    doc["products"] = [{"name": "q", "settings": {"levrage": -1}}]
    got = problems(doc)
    expected = {
        "perp[0].strategy.params": "did you mean 'slow_days'",
        "perp[0].policies[1]": "did you mean 'const'?",
        "perp[0].policies[3]": "did you mean 'cppi'?",
        "perp[1].strategy.name": "did you mean 'trend_short'",
        "puts[0].settings.moneynes": "did you mean 'moneyness'?",
        "products[0].settings.levrage": "did you mean 'leverage'?",
    }
    assert len(got) == len(expected), got
    for path, hint in expected.items():
        line = next((p for p in got if p.startswith(path + ": ")), None)
        assert line is not None, (path, got)
        assert hint in line


def test_execute_reports_them_together_before_loading_data(tmp_path, quiet):
    doc = copy.deepcopy(TINY)
    doc["data"]["root"] = str(tmp_path / "no-such-store")  # loading would fail: it must not be reached
    doc["perp"][0]["policies"] = ["cnst(2)"]
    doc["products"] = [{"name": "q", "settings": {"levrage": -1}}]
    with pytest.raises(ConfigError) as info:
        execute(parse_config(doc), reports_dir=tmp_path / "reports", log=quiet)
    msg = str(info.value)
    head = msg.splitlines()[0]
    assert head == "2 problem(s) in the run's settings: perp[0].policies[0], products[0].settings.levrage"
    assert not (tmp_path / "reports").exists()


def test_filter_params_without_filter_and_unknown_filter():
    doc = copy.deepcopy(TINY)
    doc["perp"][0]["strategy"]["filter_params"] = {"ma_days": 100}
    assert any(p.startswith("perp[0].strategy.filter_params: given without a filter") for p in problems(doc))
    doc["perp"][0]["strategy"].update(filter="bear_regme", filter_params={})
    assert any(p.startswith("perp[0].strategy.filter: ") and "did you mean 'bear_regime'" in p
               for p in problems(doc))


def test_duplicate_names_and_no_simulation():
    doc = copy.deepcopy(TINY)
    doc["products"] = [{"name": "trend"}]
    assert problems(doc) == ["products[0].name: 'trend' is already used by perp[0]; give every simulation "
                             "a distinct name"]
    assert problems({"title": "x"})[0].startswith("config: it defines no simulation")


def test_puts_take_only_the_long_put_strategy():
    doc = copy.deepcopy(TINY)
    doc["puts"] = [{"name": "p", "strategy": {"name": "trend_short"}}]
    assert problems(doc) == ["puts[0].strategy.name: puts take the 'long_put' strategy, not 'trend_short'"]


def test_sweep_levels_are_checked_before_simulating():
    doc = copy.deepcopy(TINY)
    doc["sweep"] = {"x": "slow_dys", "y": "policy"}
    got = problems(doc)
    assert len(got) == 1 and got[0].startswith("sweep.x: 'slow_dys' is not a column level of [[perp]] 'trend'")
    assert "did you mean 'slow_days'?" in got[0]
    doc["sweep"] = {"x": "slow_days", "result": "tren"}
    assert problems(doc) == ["sweep.result: 'tren' names no [[perp]] simulation (did you mean 'trend'?)"]


def test_value_errors_of_several_simulations_are_collected(tmp_path, quiet):
    """Checks that need the data (tier limits, instrument values) fail during the simulations;
    every failing simulation is still reported, and nothing is written."""
    doc = copy.deepcopy(TINY)
    doc["perp"][0]["account"] = {"leverage": 500}  # above Binance's BTC tier maximum (125x)
    doc["products"] = [{"name": "q", "settings": {"leverage": 0}}]
    reports = tmp_path / "reports"
    with pytest.raises(ConfigError) as info:
        execute(parse_config(doc), reports_dir=reports, log=quiet)
    msg = str(info.value)
    assert msg.splitlines()[0] == "2 problem(s) in the run's settings: perp[0], products[0]"
    assert "perp[0]: [trend] Account.leverage=500.0" in msg and "tier maximum" in msg
    assert "products[0]: [q]" in msg and "leverage" in msg
    assert tree(reports) == set()
