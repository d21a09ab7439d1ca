"""Out of sample: folds of a walk-forward and a train/test split, metrics of a span of one
simulation (checked against closed forms and against a run that stops at the split), the choice
made in sample only (every price after the split changed: the same choice, bit for bit), and the
outputs of `backtest sweep` with a split."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.runner import ConfigError, parse_config
from backtest.runner.oos import Fold, make_folds, parse_duration, span_metrics, span_result, stitched_growth
from backtest.runner.sweep import run_sweep
from runner_kit import SAMPLE, TINY

DAY = 86_400_000


def sweep_cfg(**split):
    doc = copy.deepcopy(TINY)
    doc["perp"][0]["strategy"]["params"]["slow_days"] = [5, 10, 20]
    doc["perp"][0]["policies"] = ["const(1)", "const(3)"]
    doc["sweep"] = {"x": "slow_days", "y": "policy", "metric": "sharpe", "report_columns": 2, **split}
    return doc


def quiet(_msg: str) -> None:
    pass


# --- folds -----------------------------------------------------------------------------------

def folds_of(n_days: int, **split):
    sw = parse_config(sweep_cfg(**split)).sweep
    return make_folds(np.arange(n_days, dtype=np.int64) * DAY, DAY, sw)


def test_walk_forward_folds_roll_by_the_step_and_end_inside_the_data():
    folds = folds_of(40, split="walk_forward", train="10d", test="5d")
    # fold k: IS days 5k .. 5k+9, OOS 5k+10 .. 5k+14, while 5k + 15 <= 40
    assert folds == [Fold(k, 5 * k, 5 * k + 10, 5 * k + 10, 5 * k + 15) for k in range(6)]
    anchored = folds_of(40, split="walk_forward", train="10d", test="5d", step="10d", anchored=True)
    assert anchored == [Fold(0, 0, 10, 10, 15), Fold(1, 0, 20, 20, 25), Fold(2, 0, 30, 30, 35)]


def test_train_test_split_by_date_or_fraction():
    assert folds_of(40, split="train_test", split_at=0.7) == [Fold(0, 0, 28, 28, 40)]
    assert folds_of(40, split="train_test", split_at="1970-01-31") == [Fold(0, 0, 30, 30, 40)]


@pytest.mark.parametrize("split, message", [
    ({"split": "walk_forward", "train": "30d", "test": "20d"}, "no fold fits the data"),
    ({"split": "train_test", "split_at": 0.99}, "fold 0 would hold 40 in-sample and 0 out-of-sample bars"),
])
def test_folds_that_do_not_fit_are_refused(split, message):
    with pytest.raises(ConfigError, match=message):
        folds_of(40, **split)


@pytest.mark.parametrize("split, message", [
    ({"split": "walk_forward", "train": "180d"}, "split='walk_forward' needs test"),
    ({"split": "train_test", "split_at": 0.7, "train": "10d"}, "train does not apply with split='train_test'"),
    ({"train": "10d"}, "train does not apply with no split"),
    ({"split": "walk_forward", "train": "6M", "test": "10d"}, "sweep.train='6M' is not a duration"),
    ({"split": "train_test", "split_at": 1.5}, "a fraction of the bars must be in (0, 1)"),
    ({"split": "k_fold"}, "'k_fold' is not one of ['walk_forward', 'train_test']"),
])
def test_bad_split_keys_are_refused_by_name(split, message):
    with pytest.raises(ConfigError) as err:
        parse_config(sweep_cfg(**split))
    assert message in str(err.value)


def test_durations():
    assert parse_duration("180d", "x") == 180 * DAY and parse_duration("2w", "x") == 14 * DAY
    with pytest.raises(ValueError, match="x='1.5d' is not a duration"):
        parse_duration("1.5d", "x")


def test_a_sweep_without_a_split_keeps_its_run_id():
    plain = parse_config(sweep_cfg())
    doc = sweep_cfg()
    doc["sweep"]["heatmap_stat"] = "best"  # presentation only
    assert parse_config(doc).run_id("d") == plain.run_id("d")
    assert parse_config(sweep_cfg(split="train_test", split_at=0.5)).run_id("d") != plain.run_id("d")


# --- span metrics -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def simulated():
    """The TINY grid simulated once (6 columns x 354 bars of 4h), and its market."""
    from backtest.data import default_root
    from backtest.market import load_market
    from backtest.runner.chunks import SweepTask, simulate_columns, sweep_grid
    from backtest.runner.run import load_data

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKTEST_DATA_DIR", "/nonexistent-store")
        doc = sweep_cfg()
        cfg = parse_config(doc)
        md = load_data(cfg)
        spec = load_market(cfg.data.exchange, cfg.data.symbol, data_dir=default_root())
    grid = sweep_grid(cfg.perp[0])
    res = simulate_columns(SweepTask(cfg.perp[0], "perp[0]", md, spec, grid), np.arange(grid.n_cols))
    return res, spec


KEYS = ("total_return", "sharpe", "max_drawdown", "ruined")


def test_the_whole_span_is_the_whole_run(simulated):
    from backtest.metrics import compute_metrics

    res, spec = simulated
    whole = compute_metrics(res, currency="usd")["columns"]
    got = span_metrics(res, 0, res.n_bars, whole[str(res.columns[0])].keys() - {"event_counts"}, spec)
    for j, label in enumerate(res.columns):
        for k, v in got.items():
            assert v[j] == whole[str(label)][k], (label, k)


def test_span_returns_compound_to_the_whole(simulated):
    from backtest.metrics import compute_metrics

    res, spec = simulated
    cut = 200
    a = span_metrics(res, 0, cut, KEYS, spec)["total_return"]
    b = span_metrics(res, cut, res.n_bars, KEYS, spec)["total_return"]
    whole = compute_metrics(res, currency="usd")["columns"]
    for j, label in enumerate(res.columns):
        assert (1 + a[j]) * (1 + b[j]) - 1 == pytest.approx(whole[str(label)]["total_return"], rel=1e-12, abs=1e-15)


def test_span_sharpe_and_drawdown_by_hand(simulated):
    """Bars 150..299: returns E_t / (E_{t-1} + F_t) - 1 from the USD equity and the capital added
    in each bar, starting at the equity of bar 149; Sharpe mean / std(ddof=1) x sqrt(bars per year)."""
    res, spec = simulated
    a, b = 150, 300
    got = span_metrics(res, a, b, KEYS, spec)
    eq = np.asarray(res.series["equity_usd"])
    added = np.diff(np.nan_to_num(np.asarray(res.series["capital_added"])), axis=0, prepend=0.0) \
        * np.asarray(res.price_usd)[:, None]
    ann = 365 * 6  # 4h bars
    for j in range(res.n_cols):
        e = np.maximum(eq[a - 1:b, j], 0.0)
        f = added[a:b, j]
        r = np.where(e[:-1] + f > 0, e[1:] / (e[:-1] + f) - 1.0, 0.0)
        g = np.cumprod(1 + r)
        assert got["total_return"][j] == pytest.approx(g[-1] - 1, rel=1e-12, abs=1e-15)
        peak = np.maximum.accumulate(np.concatenate([[1.0], g]))
        assert got["max_drawdown"][j] == pytest.approx(np.max(1 - np.concatenate([[1.0], g]) / peak), rel=1e-12, abs=1e-15)
        if np.std(r) > 0:
            assert got["sharpe"][j] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(ann), rel=1e-9)


def test_span_result_rebases_the_cumulative_series(simulated):
    res, spec = simulated
    s = span_result(res, 100, 200, "usd", spec)
    full = np.nan_to_num(np.asarray(res.series["cum_fees"]))
    np.testing.assert_array_equal(s.series["cum_fees"], full[100:200] - full[99])
    assert s.n_bars == 100 and all(np.all((r["bar"] >= 0) & (r["bar"] < 100)) for r in s.records.values())
    with pytest.raises(ValueError, match="span 0..400 is not inside the result's 354 bars"):
        span_result(res, 0, 400, "usd")


def test_stitched_growth_chains_each_folds_column():
    r = np.array([[0.1, 0.0], [0.0, -0.5], [0.2, 0.5], [-0.1, 1.0], [0.0, 0.0]])
    folds = [Fold(0, 0, 1, 1, 3), Fold(1, 0, 2, 2, 4)]  # OOS 1..2 and 2..3 overlap at bar 2
    bars, g = stitched_growth(r, [1, 0], folds)
    assert bars.tolist() == [1, 2, 3]  # bar 2 once, fold 0's
    assert g.tolist() == pytest.approx([0.5, 0.75, 0.675])  # col 1 at bars 1, 2; col 0 at bar 3


# --- the choice reads the in-sample span only ----------------------------------------------------

def crashed_store(tmp: Path, after_ms: int) -> Path:
    """A copy of the BTC sample whose every price after ``after_ms`` is scaled by a path falling
    to half and back (OHLC and mark, open to close), and whose funding after it is tripled."""
    src = SAMPLE / "binanceusdm" / "BTC_USDT_USDT"
    dst = tmp / "store" / "binanceusdm" / "BTC_USDT_USDT"
    shutil.copytree(src, dst)
    for f in ("ohlcv-1h.parquet", "mark-1h.parquet"):
        d = pd.read_parquet(dst / f)
        late = d["timestamp"] >= after_ms
        k = np.arange(int(late.sum()))
        scale = 1.0 - 0.5 * np.sin(np.pi * k / max(1, len(k) - 1))
        for c in ("open", "high", "low", "close"):
            d.loc[late, c] = d.loc[late, c].to_numpy() * scale
        d.to_parquet(dst / f, index=False)
    fu = pd.read_parquet(dst / "funding.parquet")
    fu.loc[fu["timestamp"] >= after_ms, "funding_rate"] *= 3
    fu.to_parquet(dst / "funding.parquet", index=False)
    return tmp / "store"


@pytest.fixture(scope="module")
def wf_sweeps(tmp_path_factory):
    """A walk-forward sweep (train 20d, test 10d: 3 folds) on the sample and on a copy changed
    after the first fold's split."""
    tmp = tmp_path_factory.mktemp("oos")
    split_ms = int(pd.Timestamp("2022-01-21", tz="UTC").value // 10**6)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKTEST_DATA_DIR", str(tmp / "empty"))
        for name, root in (("sample", None), ("crashed", crashed_store(tmp, split_ms))):
            doc = sweep_cfg(split="walk_forward", train="20d", test="10d")
            if root is not None:
                doc["data"]["root"] = str(root)
            out[name] = run_sweep(parse_config(doc), reports_dir=tmp / name, log=quiet, quiet=True,
                                  memory=354 * 128 * 4)  # chunks of 4 columns: 2 chunks
    return out


def test_no_information_from_the_oos_span_reaches_the_choice(wf_sweeps):
    a = pd.read_parquet(wf_sweeps["sample"].out_dir / "sweep_folds.parquet")
    b = pd.read_parquet(wf_sweeps["crashed"].out_dir / "sweep_folds.parquet")
    first = (a["fold"] == 0) & (a["span"] == "is")  # 2022-01-01 .. 2022-01-21: before the change
    pd.testing.assert_frame_equal(a[first].reset_index(drop=True), b[first].reset_index(drop=True), check_exact=True)
    ca = pd.read_csv(wf_sweeps["sample"].out_dir / "sweep_oos.csv")
    cb = pd.read_csv(wf_sweeps["crashed"].out_dir / "sweep_oos.csv")
    f0a, f0b = ca[ca["fold"] == 0], cb[cb["fold"] == 0]
    assert f0a["column"].tolist() == f0b["column"].tolist()  # the same columns chosen
    pd.testing.assert_series_equal(f0a["is.sharpe"], f0b["is.sharpe"], check_exact=True)  # NaN: no trade yet
    # ... while the out-of-sample numbers do see the change
    assert not np.allclose(f0a["oos.total_return"], f0b["oos.total_return"])


def test_oos_outputs_side_by_side(wf_sweeps):
    out = wf_sweeps["sample"]
    spans = pd.read_parquet(out.out_dir / "sweep_folds.parquet")
    assert len(spans) == 3 * 2 * 6  # folds x spans x columns
    chosen = pd.read_csv(out.out_dir / "sweep_oos.csv")
    assert chosen.groupby("fold").size().tolist() == [5, 5, 5]  # oos_columns = 5 per fold
    for fold, part in chosen.groupby("fold"):
        ins = spans[(spans["fold"] == fold) & (spans["span"] == "is")]
        want = ins.sort_values(["sharpe", "col"], ascending=[False, True])["column"].head(5).tolist()
        assert part.sort_values("is_rank")["column"].tolist() == want  # by IS Sharpe (none ruined here)
        assert not ins["ruined"].any()
        oos = spans[(spans["fold"] == fold) & (spans["span"] == "oos")].set_index("column")
        for _, row in part.iterrows():
            assert row["oos.sharpe"] == pytest.approx(oos.at[row["column"], "sharpe"], rel=1e-12)
    doc = json.loads((out.out_dir / "metrics.json").read_text())["sweep"]
    block = doc["oos"]
    assert block["split"] == "walk_forward" and len(block["folds"]) == 3 and "equity" in block["inherits"]
    # the stitched OOS growth chains the IS winners' OOS returns (the spans do not overlap)
    winners = chosen[chosen["is_rank"] == 1].sort_values("fold")
    assert block["stitched_oos_return"] == pytest.approx(np.prod(1 + winners["oos.total_return"]) - 1, rel=1e-9)
    eq = pd.read_parquet(out.out_dir / "oos_equity.parquet")
    assert len(eq) == block["stitched_oos_bars"] == 3 * 60  # 3 folds of 10 days of 4h bars
    assert eq["column"].tolist() == [c for c in winners["column"] for _ in range(60)]
    assert not (out.out_dir / "oos.html").exists()  # one place: the report's sweep section
    assert "one column per cell" in (out.out_dir / "heatmap.html").read_text()  # x, y are the only levels
    rob = doc["robustness"]
    assert rob["columns_tried"] == 6 and rob["deflated_sharpe"]["trials"] == 6
    assert 0.0 <= rob["deflated_sharpe"]["dsr"] <= 1.0


def test_train_test_in_sample_metrics_are_those_of_a_run_that_stops_at_the_split(tmp_path, monkeypatch):
    """The IS span of a train/test split starts at the first bar: its metrics equal those of
    `backtest run` on the data up to the split (that run never loads a later bar)."""
    from backtest.runner import execute

    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path / "empty"))
    out = run_sweep(parse_config(sweep_cfg(split="train_test", split_at="2022-02-01")), reports_dir=tmp_path / "s",
                    log=quiet, quiet=True, html=False)
    spans = pd.read_parquet(out.out_dir / "sweep_folds.parquet")
    ins = spans[spans["span"] == "is"].set_index("column")
    doc = sweep_cfg()
    doc["data"]["end"] = "2022-02-01"
    del doc["sweep"]
    short = execute(parse_config(doc), reports_dir=tmp_path / "r", log=quiet, html=False)
    cols = short.metrics["results"]["trend"]["usd"]["columns"]
    assert set(cols) == set(ins.index)
    for label, m in cols.items():
        for k in ("total_return", "max_drawdown", "ruined"):
            assert ins.at[label, k] == m[k], (label, k)
        assert ins.at[label, "sharpe"] == pytest.approx(m["sharpe"], rel=1e-12)


# --- the sweep's report: in sample vs out of sample side by side -------------------------------

def _section(page: str) -> str:
    start = page.index('<section id="sweep">')
    return page[start:page.index("</section>", start)]


def _cells(section: str, fold: int, column: str) -> dict[str, str]:
    """The formatted cells (by header) of one row of the section's IS vs OOS table."""
    import re

    m = re.search(rf'<tr data-fold="{fold}" data-col="{re.escape(column)}">(.*?)</tr>', section, re.S)
    assert m, (fold, column)
    return dict(re.findall(r'<td data-key="([^"]+)" data-value="[^"]*">([^<]*)</td>', m.group(1)))


def test_the_report_shows_in_sample_vs_out_of_sample(wf_sweeps):
    """Every chosen column of every fold is a row of report.html's sweep section, its IS and OOS
    Sharpe, return and max drawdown formatted from sweep_oos.csv (the span table's values)."""
    from backtest.report.render import fmt_metric

    out = wf_sweeps["sample"]
    section = _section((out.out_dir / "report.html").read_text())
    chosen = pd.read_csv(out.out_dir / "sweep_oos.csv")
    assert section.count("<tr data-fold=") == len(chosen) == 15
    for _, r in chosen.iterrows():
        cells = _cells(section, int(r["fold"]), r["column"])
        v = {k: (None if pd.isna(r[k]) else float(r[k])) for k in r.index if "." in k}
        assert cells == {"IS sharpe": fmt_metric(v["is.sharpe"], "ratio"), "OOS sharpe": fmt_metric(v["oos.sharpe"], "ratio"),
                         "IS Return": fmt_metric(v["is.total_return"], "fraction"),
                         "OOS Return": fmt_metric(v["oos.total_return"], "fraction"),
                         "IS Max DD": fmt_metric(v["is.max_drawdown"], "fraction"),
                         "OOS Max DD": fmt_metric(v["oos.max_drawdown"], "fraction")}
    block = json.loads((out.out_dir / "metrics.json").read_text())["sweep"]
    rob = block["robustness"]
    assert f'data-key="columns_tried">{rob["columns_tried"]}<' in section
    assert f'{rob["deflated_sharpe"]["dsr"]:.3f}' in section
    assert fmt_metric(block["oos"]["stitched_oos_return"], "fraction") in section
    assert 'id="fig-sweep-oos-data"' in (out.out_dir / "report.html").read_text()


def test_the_hindsight_line_is_the_best_columns_own_equity_on_the_stitched_bars(wf_sweeps):
    """The flattering comparison: the whole data's rank-1 column (sweep.csv), its growth over the
    stitched OOS bars, equals the ratio of its own USD equity (equity.parquet of the report) at
    the last stitched bar's close to that at the close before the first stitched bar."""
    out = wf_sweeps["sample"]
    block = json.loads((out.out_dir / "metrics.json").read_text())["sweep"]["oos"]
    best = pd.read_csv(out.out_dir / "sweep.csv").iloc[0]["column"]
    assert block["hindsight"]["column"] == best
    eq = pd.read_parquet(out.out_dir / "equity.parquet")
    mine = eq[(eq["result"] == "trend") & (eq["column"] == best)].set_index("timestamp")
    assert (mine["capital_added"] == 0).all()  # no top-up: the equity ratio is the growth
    mine = mine["equity_usd"]
    st = pd.read_parquet(out.out_dir / "oos_equity.parquet")
    first, last = (int(t.value // 10**6) for t in (st["timestamp"].iloc[0], st["timestamp"].iloc[-1]))
    before = mine.index[mine.index.get_loc(first) - 1]
    want = mine.loc[last] / mine.loc[before]  # contiguous OOS spans (step = test): no gap to skip
    assert block["hindsight"]["return"] == pytest.approx(want - 1.0, rel=1e-12)
    assert st["hindsight_growth"].iloc[-1] == pytest.approx(want, rel=1e-12)
    # the stitched line chains the winners: its end is the stitched return
    assert st["growth"].iloc[-1] - 1.0 == pytest.approx(block["stitched_oos_return"], rel=1e-12)


def test_the_section_is_rebuilt_from_the_stored_files(wf_sweeps, tmp_path):
    """`backtest report` re-renders the page from the folder (oos_equity.parquet read back)."""
    from backtest.report import rerender

    folder = tmp_path / "copy"
    shutil.copytree(wf_sweeps["sample"].out_dir, folder)
    before = _section((folder / "report.html").read_text())
    (folder / "report.html").unlink()
    after = _section(rerender(folder).read_text())
    assert after == before and 'id="fig-sweep-oos"' in after


def test_the_oos_table_printed_after_the_ranked_table(wf_sweeps):
    from backtest.runner.sweep import format_oos_table

    out = wf_sweeps["sample"]
    text = format_oos_table(out.oos, "sharpe")
    lines = text.splitlines()
    assert lines[0].startswith("in sample vs out of sample") and len(lines) == 2 + 3  # title, header, 3 folds
    winners = out.oos[out.oos["is_rank"] == 1].sort_values("fold")
    for line, (_, r) in zip(lines[2:], winners.iterrows()):
        assert r["column"] in line
        assert f"{100 * float(r['oos.total_return']):.2f} %" in line
        assert f"{100 * float(r['oos.max_drawdown']):.2f} %" in line
