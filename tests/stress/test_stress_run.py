"""``[stress]`` in a run: config checks (exit 2 naming the key), crisis windows measured on the run,
shocks and Monte Carlo paths wired to the stress API, the outputs (metrics.json, stress.parquet,
the page's stress section).

Independent checks: the spot buy-and-hold baseline's window return, drawdown and worst bar from
the raw closes; a held isolated short's liquidation from the closed-form liquidation price; each
shocked or Monte Carlo value against the Python stress API called directly."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from backtest.cli import app
from backtest.engine import Account, simulate_perp
from backtest.mechanics import isolated_liquidation_price
from backtest.metrics import compute_metrics
from backtest.runner.config import ConfigError, parse_config
from backtest.runner.run import execute
from backtest.stress import FundingSpike, Gap, ShockError, SlippageShock, apply_shocks, run_monte_carlo
from strategies.policies import build_targets
from tests.report.report_html import TableCells
from tests.stress.kit import btc_spec, sample

START, END = "2022-10-01", "2023-04-01"
HOLD = {"name": "hold", "strategy": {"name": "short_hold", "params": {"rebalance": False}},
        "policies": ["const(1)", "const(3)"], "account": {"margin_mode": "isolated", "leverage": 6}}
REBAL = {"name": "rebal", "strategy": {"name": "short_hold", "params": {"rebalance": True}},
         "policies": ["const(1)"], "account": {"margin_mode": "cross", "leverage": 5, "slippage": 0.0005}}
MC = {"paths": 12, "block": 24, "horizon": 480, "seed": 3}
DOC = {
    "title": "stress", "data": {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "timeframe": "1h",
                                "start": START, "end": END},
    "perp": [HOLD, REBAL],
    "products": [{"name": "prod", "settings": {"leverage": [-1.0]}}],
    "stress": {
        "window": [{"name": "liq-window", "start": "2023-01-18", "end": "2023-01-23", "source": "hand"}],
        "shock": [{"type": "gap", "at": "2022-10-03", "size": 0.2, "name": "squeeze"},
                  {"type": "funding_spike", "start": "2023-02-01", "days": 3, "rate": -0.003},
                  {"type": "slippage", "multiplier": 4}],
        "monte_carlo": MC},
}


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path_factory.mktemp("empty-store")))


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("BACKTEST_DATA_DIR", str(tmp_path_factory.mktemp("empty")))
    out = execute(parse_config(copy.deepcopy(DOC)), reports_dir=tmp_path_factory.mktemp("reports"), log=lambda m: None)
    mp.undo()
    return out


def _md():
    return sample(START, END)


# ---------------------------------------------------------------------------------------------
# config

@pytest.mark.parametrize("stress, message", [
    ({"shock": [{"type": "gapp", "at": "2022-10-03", "size": 0.2}]},
     "stress.shock[0]: shock type 'gapp' is unknown (did you mean 'gap'?)"),
    ({"shock": [{"type": "gap", "at": "2022-10-03", "sise": 0.2}]},
     "stress.shock[0]: unknown key 'sise' for a 'gap' shock (did you mean 'size'?); its keys are type, name, at, size"),
    ({"shock": [{"type": "funding_spike", "start": "2022-10-03", "rate": 0.01}]},
     "stress.shock[0]: a 'funding_spike' shock needs days"),
    ({"shock": [{"type": "gap", "at": "2022-10-03", "size": -1.5}]}, "stress.shock[0]: Gap.size=-1.5 is out of range"),
    ({"monte_carlo": {"paths": 10, "blocks": 24}}, "stress.monte_carlo.blocks: unknown key (did you mean 'block'?)"),
    ({"monte_carlo": {"paths": 0}}, "stress.monte_carlo.paths: Input should be greater than or equal to 1"),
    ({"windows": ["ftx-2022"]}, "windows: 'ftx-2022' is no crisis window (did you mean 'ftx-2022-11'?)"),
    ({"window": [{"name": "ftx-2022-11", "start": "2022-11-01", "end": "2022-11-02"}]},
     "has the name of a library window"),
    ({"tiers": 1}, "stress.tiers: unknown key; known keys here: windows, window, shock, monte_carlo"),
])
def test_a_bad_stress_table_is_refused_naming_the_key(stress, message):
    doc = copy.deepcopy(DOC) | {"stress": stress}
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert message in str(err.value)


def test_the_cli_exits_2_naming_an_unknown_shock_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[data]\nstart = "2022-10-01"\nend = "2022-11-01"\n[[perp]]\nname = "p"\n'
                   '[[stress.shock]]\ntype = "gap"\nat = 2022-10-03\nsize = 0.2\nwhen = 1\n')
    res = CliRunner().invoke(app, ["run", str(cfg), "-o", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "stress.shock[0]: unknown key 'when' for a 'gap' shock" in res.output
    assert not (tmp_path / "r").exists()


def test_shocks_are_built_from_their_class_fields_and_toml_dates():
    cfg = parse_config({"perp": [HOLD], "stress": {"shock": [
        {"type": "gap", "at": __import__("datetime").date(2022, 10, 3), "size": 0.2},
        {"type": "tier_change", "at": "2022-10-03", "max_leverage": 20, "name": "cut"},
        {"type": "transplant", "source_start": "2022-11-06", "source_end": "2022-11-10", "at": "2023-01-02"}]}})
    (n0, s0), (n1, s1), (n2, s2) = cfg.stress.shocks()
    assert s0 == Gap(at="2022-10-03", size=0.2) and n0 == "gap(at=2022-10-03, size=0.2)"
    assert n1 == "cut" and s1.max_leverage == 20 and s1.maintenance_scale == 1.0
    assert type(s2).__name__ == "PathTransplant" and s2.at == "2023-01-02"


def test_without_stress_the_run_id_is_unchanged():
    plain = {k: v for k, v in DOC.items() if k != "stress"}
    a = parse_config(plain)
    assert "stress" not in a.content()
    assert parse_config(DOC).run_id() != a.run_id()


def test_a_user_window_or_a_shock_outside_the_data_fails_before_simulating(tmp_path):
    doc = copy.deepcopy(DOC)
    doc["stress"] = {"window": [{"name": "later", "start": "2023-05-01", "end": "2023-05-03"}]}
    seen: list[str] = []
    with pytest.raises(ShockError, match=r"crisis window 'later': 2023-05-01T00:00:00\+00:00 \.\. "
                                         r"2023-05-03T00:00:00\+00:00 is after the run's data"):
        execute(parse_config(doc), reports_dir=tmp_path, log=seen.append)
    assert not any(s.startswith("simulating") for s in seen)
    doc["stress"] = {"shock": [{"type": "gap", "at": "2023-06-01", "size": 0.1}]}
    with pytest.raises(ShockError, match=r"\[\[stress.shock\]\] .gap\(at=2023-06-01, size=0.1\).: Gap.at=2023-06-01T00:00:00\+00:00 is outside the data"):
        execute(parse_config(doc), reports_dir=tmp_path, log=lambda m: None)


# ---------------------------------------------------------------------------------------------
# crisis windows on the run

def test_default_windows_are_those_the_data_covers_and_the_rest_is_listed(done):
    st = done.metrics["stress"]
    assert [w["name"] for w in st["windows"]] == ["ftx-2022-11", "usdc-depeg-2023-03", "liq-window"]
    skipped = {s["name"]: s["reason"] for s in st["skipped_windows"]}
    assert "terra-luna-2022-05" in skipped and "is before the run's data" in skipped["terra-luna-2022-05"]
    assert "is after the run's data" in skipped["tariff-crash-2025-10-10"]


def test_the_buy_and_hold_window_values_are_those_of_the_closes(done):
    """Spot buy-and-hold: equity is proportional to the close, so the window's return is the last
    close over the close before the window, its drawdown the closes' and its worst bar the worst
    close-to-close return."""
    md = _md()
    close = md.frame["close"].to_numpy()
    ts = md.timestamps
    for w in done.metrics["stress"]["windows"]:
        got = done.metrics["stress"]["results"]["baselines"]["spot buy-and-hold"]["windows"][w["name"]]
        inside = np.flatnonzero((ts >= w["start_ms"]) & (ts < w["end_ms"]))
        c0, c = close[inside[0] - 1], close[inside]
        r = c / np.concatenate([[c0], c[:-1]]) - 1
        assert got["return"] == pytest.approx(c[-1] / c0 - 1, rel=1e-9)
        assert got["max_drawdown"] == pytest.approx(np.max(1 - c / np.maximum.accumulate(np.maximum(c, c0))), rel=1e-9)
        assert got["worst_bar_return"] == pytest.approx(r.min(), rel=1e-9)
        assert got["worst_bar_ms"] == ts[inside[np.argmin(r)]]
        assert got["liquidations"] == 0 and got["funding_net"] == 0


def test_the_held_isolated_short_is_liquidated_inside_the_window_holding_the_closed_form_price(done):
    """Isolated short opened at bar 1's open, margin N/6: liquidated when the mark reaches
    EP (1 + 1/6) / (1 + mmr) (tier 1, 0.4 %, for 1x and 3x of 10,000 USDT). Funding moves that
    price by far less than 1 %: the mark stays 1 % below it until 2023-01-20 20:00 and is 1 % above
    it by 2023-01-21 00:00, so the liquidation is in the user window (2023-01-18 .. 2023-01-23)
    and in no library window (FTX and the USDC depeg are before and after it)."""
    f = _md().frame
    mh = f["mark_high"].to_numpy()
    lp = isolated_liquidation_price(-1, float(f["open"].iloc[1]), 6.0, 0.004)
    assert f.index[np.argmax(mh[1:] > lp * 0.99) + 1] == pd.Timestamp("2023-01-20 20:00", tz="UTC")
    assert f.index[np.argmax(mh[1:] > lp * 1.01) + 1] == pd.Timestamp("2023-01-21 00:00", tz="UTC")
    cols = done.metrics["stress"]["results"]["hold"]
    for label in ("policy=const(1)", "policy=const(3)"):
        assert cols[label]["windows"]["liq-window"]["liquidations"] == 1
        assert cols[label]["windows"]["ftx-2022-11"]["liquidations"] == 0
        assert cols[label]["windows"]["usdc-depeg-2023-03"]["liquidations"] == 0  # stopped at the liquidation
        assert cols[label]["history"]["liquidations"] == 1


# ---------------------------------------------------------------------------------------------
# shocks and Monte Carlo: the values of the stress API

def _perp_metrics(perp: dict, md, spec, account: Account) -> dict:
    target, policy, columns = build_targets(md, perp["strategy"]["name"], perp["strategy"]["params"],
                                            perp["policies"], spec=spec)
    res = simulate_perp(md, target, spec, account, policy, columns=columns)
    return list(compute_metrics(res, currency="usd")["columns"].values())


def test_each_shocked_value_is_the_stress_api_s(done):
    st = done.metrics["stress"]["results"]
    md, spec = _md(), btc_spec()
    shocks = {"squeeze": Gap("2022-10-03", 0.2), "funding_spike(start=2023-02-01, days=3, rate=-0.003)":
              FundingSpike("2023-02-01", 3, -0.003), "slippage(multiplier=4)": SlippageShock(4)}
    for name, shock in shocks.items():
        for perp in (HOLD, REBAL):
            md_s, spec_s, acc_s = apply_shocks([shock], md, spec, Account(**perp["account"]))
            want = _perp_metrics(perp, md_s, spec_s, acc_s)
            got = [st[perp["name"]][c]["shocks"][name] for c in st[perp["name"]]]
            for g, w in zip(got, want, strict=True):
                for k, v in g.items():
                    assert v == pytest.approx(w[k], rel=1e-12, abs=1e-12), (name, perp["name"], k)
    # a +20 % gap against a short held at 6x isolated margin (liquidated by a +16 % move) liquidates
    # it on the gap bar (2022-10-03), long before the January rally that liquidates it in the history:
    # it is no longer there to be liquidated in the user window
    for c in st["hold"].values():
        assert c["shocks"]["squeeze"]["liquidations"] == 1 and c["history"]["liquidations"] == 1
    md_s, spec_s, acc_s = apply_shocks([shocks["squeeze"]], md, spec, Account(**HOLD["account"]))
    f = md_s.frame
    lp = isolated_liquidation_price(-1, float(f["open"].iloc[1]), 6.0, 0.004)
    k = int(np.argmax(f["mark_open"].to_numpy()[1:] > lp)) + 1
    assert f.index[k] == pd.Timestamp("2022-10-03", tz="UTC")  # the gap's bar opens past the price
    # a slippage shock does not touch the product (not run), a data shock does
    prod = st["prod"]["single"]["shocks"]
    assert "slippage(multiplier=4)" not in prod and "squeeze" in prod


def test_monte_carlo_values_are_run_monte_carlo_s(done):
    st = done.metrics["stress"]
    assert st["monte_carlo"]["paths"] == MC["paths"] and st["monte_carlo"]["horizon_bars"] == MC["horizon"]
    for perp in (HOLD, REBAL):
        mc = run_monte_carlo(perp, _md(), btc_spec(), n_paths=MC["paths"], mean_block=MC["block"],
                             horizon=MC["horizon"], seed=MC["seed"], history=False)
        liq, q = mc.liquidation(), mc.quantiles()
        for label, row in liq.iterrows():
            got = st["results"][perp["name"]][label]["monte_carlo"]
            assert got["liquidated"] == row["liquidated"] and got["paths"] == MC["paths"]
            p = row["liquidated"] / MC["paths"]
            assert got["liquidation_probability"] == pytest.approx(p, rel=1e-15)
            assert got["std_error"] == pytest.approx(np.sqrt(p * (1 - p) / MC["paths"]), rel=1e-12)
            assert got["quantiles"]["total_return"]["q50"] == pytest.approx(q.loc[(label, "total_return"), "q50"],
                                                                            rel=1e-12)
    # products, books and baselines get no Monte Carlo
    assert st["results"]["prod"]["single"]["monte_carlo"] is None


# ---------------------------------------------------------------------------------------------
# outputs

def test_stress_parquet_holds_the_values_of_metrics_json(done):
    t = pd.read_parquet(done.out_dir / "stress.parquet")
    st = json.loads((done.out_dir / "metrics.json").read_text())["stress"]["results"]
    win = t[(t["kind"] == "window") & (t["basis"] == "usd")]
    assert len(win) == sum(len(c["windows"]) * 7 for r in st.values() for c in r.values())
    for r in win.itertuples():
        assert st[r.result][r.column]["windows"][r.scenario][r.metric] == pytest.approx(r.value, rel=1e-15)
    sh = t[t["kind"] == "shock"]
    for r in sh.itertuples():
        want = st[r.result][r.column]["shocks"][r.scenario][r.metric]
        assert (np.isnan(r.value) and want is None) or want == pytest.approx(r.value, rel=1e-15)
    mc = t[(t["kind"] == "monte_carlo") & (t["metric"] == "liquidation_probability")]
    assert len(mc) == 3  # hold x 2 policies, rebal x 1


def test_the_page_shows_the_stress_tables_with_the_stored_values(done):
    html = (done.out_dir / "report.html").read_text()
    assert '<section id="stress">' in html and 'href="#stress"' in html
    assert "tariff-crash-2025-10-10: 2025-10-10" in html  # skipped, with the reason
    p = TableCells()
    p.feed(html)
    cells = [c for c in p.cells if c.get("stress")]
    st = done.metrics["stress"]["results"]
    liq = [c for c in cells if c.get("stress") == "windows" and c.get("key") == "liquidations"
           and c.get("group") == "liq-window" and c.get("result") == "hold"]
    assert {c["col"]: c["text"] for c in liq} == {"policy=const(1)": "1", "policy=const(3)": "1"}
    prob = [c for c in cells if c.get("stress") == "monte_carlo" and c.get("key") == "liquidation_probability"]
    assert len(prob) == 3
    for c in prob:
        assert float(c["value"]) == st[c["result"]][c["col"]]["monte_carlo"]["liquidation_probability"]
    shock = [c for c in cells if c.get("stress") == "shocks" and c.get("group") == "squeeze"
             and c.get("key") == "total_return"]
    assert {(c["result"], c["col"]) for c in shock} >= {("hold", "policy=const(1)"), ("prod", "single")}
