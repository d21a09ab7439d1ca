"""The stress results of a run (``[stress]``): per result and column, the historical result next to
each crisis window, each shock and the Monte Carlo distribution, as the ``stress`` block of
``metrics.json`` and the long table ``stress.parquet``.

What runs under what:

* **windows**: every result (perps, puts, products, books, baselines), measured on the run's
  stored series (:func:`backtest.stress.windows.window_frame`), USD basis in ``metrics.json``,
  both bases in ``stress.parquet``;
* **shocks**: each ``[[stress.shock]]`` on its own, applied to the run's data, market spec and
  each ``[[perp]]``'s account, and every ``[[perp]]`` simulated again on it (targets recomputed
  from the shocked prices); ``[[puts]]`` and ``[[products]]`` too for the shocks that change
  data (a tier change or a slippage shock leaves them as they were: not run). Each ``[[book]]``
  under the shock applied to its symbols (:func:`backtest.stress.book.shock_book`: every symbol,
  or the shock's ``symbols``; a slippage shock to the book's account), its targets recomputed;
  a shock whose ``symbols`` leave out the ``[data]`` symbol (or every symbol of a book) does not
  run the results of that data. The baselines are not shocked;
* **cascades**: as a shock on the cascade path; a book's path is
  :func:`backtest.stress.book.cascade_book` (the model on its first symbol, the others moved by
  their beta to it);
* **Monte Carlo**: every ``[[perp]]`` on the same stationary-bootstrap paths of the run's data
  (:func:`backtest.stress.montecarlo.run_monte_carlo`, paths as engine columns); each ``[[book]]``
  on ``book_paths`` joint-bootstrap paths of its symbols and each ``[[puts]]``/``[[products]]``
  on the first ``instrument_paths`` paths (:mod:`backtest.stress.pathruns`, one simulation a
  path); metrics in the settlement currency.

The steps: :func:`prepare` checks the windows against the data's span and applies the shocks
before anything is simulated (a bad shock fails in the first seconds); :func:`run_stress`
simulates and measures, after the run's own results are collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from backtest.data.marketdata import MarketData
from backtest.stress.common import ShockError
from backtest.stress.config import SHOCK_TYPES, StressConfig
from backtest.stress.montecarlo import run_monte_carlo_perps
from backtest.stress.shocks import Shock
from backtest.stress.windows import WINDOW_METRICS, CrisisWindow, select_windows, window_frame

Log = Callable[[str], None]

# metrics of the history and of each shock, per column (USD basis), in the tables' order
SCENARIO_METRICS = ("total_return", "max_drawdown", "liquidations", "margin_calls", "funding_net",
                    "worst_bar_return")
# metrics whose Monte Carlo quantiles are reported
MC_METRICS = ("total_return", "max_drawdown", "worst_bar_return")
STRESS_COLUMNS = ("result", "column", "kind", "scenario", "basis", "metric", "value")


@dataclass
class StressPlan:
    """What a run's ``[stress]`` will measure, checked against the data before simulating.

    Attributes
    ----------
    windows : the windows the data covers (measured).
    skipped : the library windows it does not cover, ``{"name", "start_ms", "end_ms", "reason"}``.
    shocks : ``(name, type, shock, shocked data, shocked spec)`` per ``[[stress.shock]]``, then per
        ``[[stress.cascade]]`` (type ``"cascade"``: the cascade path is run as a shock); the shocked
        data and spec are None when the scenario's ``symbols`` leave out the ``[data]`` symbol.
    config : the ``[stress]`` table.
    cascades : ``(name, CascadeResult, the checked entry)`` per ``[[stress.cascade]]``.
    """

    windows: list[CrisisWindow]
    skipped: list[dict]
    shocks: list[tuple[str, str, Shock, Any, Any]] = field(default_factory=list)
    config: StressConfig | None = None
    cascades: list[tuple[str, Any, dict]] = field(default_factory=list)
    books: dict[str, dict[str, tuple[Any, list[Any], dict[str, float] | None]]] = field(default_factory=dict)
    """shock or cascade name -> book name -> (shocked BookData, shocked specs, the cascade's betas
    per moved symbol or None); a book the scenario leaves out is absent."""


def _changes_data(shock: Shock) -> bool:
    """Whether the shock changes market data (else only the spec or the account)."""
    return type(shock).apply is not Shock.apply


def _book_scenarios(name: str, entry: dict, scenario: Any, books: Mapping[str, tuple[Any, list[Any]]],
                    cascade: bool) -> dict[str, tuple[Any, list[Any], dict[str, float] | None]]:
    """Every book under one shock or cascade: (shocked data, specs, betas) by book name."""
    from backtest.stress.book import cascade_book, shock_book

    named = entry.get("symbols")
    kind = "[[stress.cascade]]" if cascade else "[[stress.shock]]"
    out: dict[str, tuple[Any, list[Any], dict[str, float] | None]] = {}
    for bname, (book, specs) in books.items():
        syms = None if named is None else [s for s in named if s in book.symbols]
        if syms == []:
            continue
        try:
            if cascade:
                bc = cascade_book(scenario, book, syms, what=f"{kind} {name!r} on book {bname!r}")
                out[bname] = (bc.book, list(specs), bc.betas)
            else:
                b_s, specs_s = shock_book(scenario, book, specs, syms, what=f"{kind} {name!r} on book {bname!r}")
                out[bname] = (b_s, specs_s, None)
        except ShockError as exc:
            raise ShockError(f"{kind} {name!r} on book {bname!r}: {exc}") from None
    return out


def _check_symbols(name: str, entry: dict, known: set[str], cascade: bool) -> bool:
    """Whether the scenario concerns the ``[data]`` symbol; an unknown symbol raises naming it."""
    named = entry.get("symbols")
    if named is None:
        return True
    kind = "[[stress.cascade]]" if cascade else "[[stress.shock]]"
    for sym in named:
        if sym not in known:
            raise ShockError(f"{kind} {name!r}: symbol {sym!r} is neither the [data] symbol nor a symbol of a "
                             f"[[book]] (known: {', '.join(sorted(known))}); name one of them, or leave 'symbols' "
                             "out to shock every symbol")
    return False


def prepare(st: StressConfig, md: MarketData | None, spec: Any, span: tuple[int, int],
            books: Mapping[str, tuple[Any, list[Any]]] | None = None) -> StressPlan:
    """Check the ``[stress]`` table against the data: split the windows into covered and skipped,
    apply every shock to the data and the spec, and to every book's symbols.

    Parameters
    ----------
    st : the ``[stress]`` table.
    md, spec : the run's ``[data]`` market data and spec (None for a run of books only).
    span : ``(first bar open, last bar close)`` of the run's data, int ms UTC.
    books : the run's books, name -> ``(BookData, specs)`` (none: no book is shocked).

    Raises
    ------
    ShockError
        A window asked for by name or given as ``[[stress.window]]`` that the data does not cover
        whole (both spans named; a library window of ``windows = "default"`` is skipped instead),
        a shock the data cannot take (outside the data, invalid shocked data: the shock's own
        error), a ``symbols`` entry that is neither the ``[data]`` symbol nor a book's.
    """
    books = dict(books or {})
    windows, default = st.windows_list()
    covered, skipped = select_windows(windows, *span)
    user = {w.name for w in st.window}
    for s in skipped:
        if not default or s["name"] in user:
            raise ShockError(f"crisis window {s['name']!r}: {s['reason']}; choose a window inside the data, or load "
                             "data covering it ([data] start/end)")
    known = {sym for book, _ in books.values() for sym in book.symbols} | ({md.symbol} if md is not None else set())
    shocks, per_book = [], {}
    for (name, shock), entry in zip(st.shocks(), st.shock):
        if md is None and not books:
            raise ShockError("[[stress.shock]] needs the [data] market or a [[book]]")
        md_s = spec_s = None
        if _check_symbols(name, entry, known, False) or (md is not None and md.symbol in entry["symbols"]):
            if md is not None:
                try:
                    md_s, spec_s = shock.apply(md), shock.apply_spec(spec)
                except ShockError as exc:
                    raise ShockError(f"[[stress.shock]] {name!r}: {exc}") from None
        per_book[name] = _book_scenarios(name, entry, shock, books, cascade=False)
        shocks.append((name, entry["type"], shock, md_s, spec_s))
    cascades = []
    for name, cascade, entry in st.cascades():
        if md is None and not books:
            raise ShockError("[[stress.cascade]] needs the [data] market or a [[book]]")
        data_s = None
        if _check_symbols(name, entry, known, True) or (md is not None and md.symbol in entry["symbols"]):
            if md is not None:
                try:
                    res = cascade.run(md)
                except ShockError as exc:
                    raise ShockError(f"[[stress.cascade]] {name!r}: {exc}") from None
                data_s = res.data
                cascades.append((name, res, entry))
        per_book[name] = _book_scenarios(name, entry, cascade, books, cascade=True)
        shocks.append((name, "cascade", cascade, data_s, spec if data_s is not None else None))
    return StressPlan(windows=covered, skipped=skipped, shocks=shocks, config=st, cascades=cascades, books=per_book)


def _pick(metrics: dict, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in keys}


def _book_config(b: Any, shock: Shock) -> Any:
    """A ``[[book]]`` table with its account under ``shock`` (a slippage shock; the others leave it)."""
    from backtest.engine.settings import Account

    before = Account(**b.account.model_dump())
    after = shock.apply_account(before)
    changed = {f: getattr(after, f) for f in b.account.model_dump() if getattr(after, f) != getattr(before, f)}
    return b.model_copy(update={"account": b.account.model_copy(update=changed)}) if changed else b


def _shocked_results(cfg: Any, plan_shock: tuple, log: Log,
                     books: Mapping[str, tuple[Any, list[Any], Any]] | None = None
                     ) -> tuple[dict[str, dict[str, dict]], dict[str, Any]]:
    """USD metrics per result and column of every [[perp]] (and [[puts]]/[[products]] for a data
    shock) and every [[book]] the shock concerns under one shock, and the [[perp]] results
    (relabelled) by name."""
    from backtest.metrics import compute_metrics
    from backtest.runner.book import run_book
    from backtest.runner.labels import relabel
    from backtest.runner.run import _products, _puts, perp_account, simulate_perp_config

    name, _, shock, md_s, spec_s = plan_shock
    jobs: list[tuple[str, Callable[[], tuple[Any, pd.Index]]]] = []
    if md_s is not None:
        for p in cfg.perp:
            account = shock.apply_account(perp_account(p))
            jobs.append((p.name, partial(simulate_perp_config, p, md_s, spec_s, account)))
        if _changes_data(shock):
            for k, q in enumerate(cfg.puts):
                jobs.append((q.name, partial(_puts, q, f"puts[{k}]", md_s, spec_s)))
            for k, r in enumerate(cfg.products):
                jobs.append((r.name, partial(_products, r, f"products[{k}]", md_s, spec_s)))
    for b in cfg.book:
        if b.name in (books or {}):
            book_s, specs_s, _ = books[b.name]  # type: ignore[index]
            jobs.append((b.name, partial(run_book, _book_config(b, shock), book_s, specs_s)))
    out, perps = {}, {}
    names = {p.name for p in cfg.perp}
    for res_name, job in jobs:
        log(f"stress: {res_name} under {name}")
        res, grid = job()
        res = getattr(res, "result", res)  # a book's BookRun: its SimResult
        res, _ = relabel(res, grid)
        out[res_name] = {str(lab): _pick(m, SCENARIO_METRICS)
                         for lab, m in compute_metrics(res, currency="usd")["columns"].items()}
        if res_name in names:
            perps[res_name] = res
    return out, perps


ADL_KEYS = ("entry", "qty", "leverage", "score", "quantile", "probability", "close_price")


def adl_view(res: Any, perp: Any, cascade: Any, insurance_fund: float) -> dict[str, dict[str, float]]:
    """The ADL risk (:func:`backtest.stress.adl.adl_risk`) of every column of a ``[[perp]]`` result
    run on a cascade path that is short going into the shock bar and winning at the cascade's final
    price, keyed by column label.

    Each such column is placed in the queue as an :class:`~backtest.stress.adl.AccountPosition`: its
    short at the close before the shock bar (``qty``: contracts x contract size, base units), its
    ``entry``: the volume-weighted price of the fills that opened its round trip
    (:func:`backtest.report.trades.round_trips`), its ``leverage``: the account's leverage setting
    when isolated (the isolated margin is the notional over it), else the entry notional over the
    account's equity at that close, at least 1 (AccountPosition's floor: a cross account holding less
    than its equity ranks as 1x); its maintenance rate the cascade model's ``mmr``. Only linear perps
    (the ranking's positions are linear): an inverse result gives ``{}``.
    """
    from backtest.report.trades import round_trips
    from backtest.stress.adl import AccountPosition, adl_risk

    k = cascade.bar
    if res.meta.get("instrument") != "linear_perp" or k < 1:
        return {}
    cs = float(res.meta.get("contract_size", 1.0))
    pos = np.asarray(res.series["position"])[k - 1]
    eq = np.asarray(res.series["equity"])[k - 1]
    trips = round_trips(res)
    final = cascade.solution.final
    out = {}
    for j, lab in enumerate(res.columns):
        if not pos[j] < 0.0:
            continue
        t = trips[(trips["col"] == j) & (trips["entry_bar"] <= k - 1) & (trips["open"] | (trips["exit_bar"] >= k))]
        entry = float(t["entry_price"].iloc[-1])
        if not final < entry:  # not winning at the cascade: not on the deleveraged side
            continue
        qty = float(-pos[j] * cs)
        if perp.account.margin_mode == "isolated":
            lev = float(perp.account.leverage)
        else:
            lev = max(1.0, qty * entry / float(eq[j]))
        risk = adl_risk(cascade.crowd, cascade.solution,
                        AccountPosition(-1, entry, qty, lev, mmr=cascade.crowd.mmr), insurance_fund)
        out[str(lab)] = {"entry": entry, "qty": qty, "leverage": lev, "score": risk.score,
                         "quantile": risk.quantile, "probability": risk.probability, "close_price": risk.close_price}
    return out


def _cascade_doc(name: str, res: Any, entry: dict, md: MarketData) -> dict:
    """A cascade's block entry: the scenario, its summary, the insurance fund's outcome and the
    cut-frequency table when ``frequency_at`` is given."""
    from backtest.stress.adl import adl_from_cascade, short_cut_frequency
    from backtest.stress.config import cascade_of

    cascade = cascade_of(entry)
    fund = float(entry["insurance_fund"])
    o = adl_from_cascade(res.crowd, res.solution, fund)
    model = {f: getattr(cascade.model, f) for f in cascade.model.__dataclass_fields__}
    model["leverage_mix"] = [list(x) for x in model["leverage_mix"]]
    freq = None
    if entry["frequency_at"]:
        tab = short_cut_frequency(md, entry["frequency_at"], float(entry["size"]), insurance_fund=fund,
                                  leverage=float(entry["frequency_leverage"]), model=cascade.model)
        win = tab["winning"]
        freq = {"leverage": float(entry["frequency_leverage"]),
                "rows": [{"time": t, **{k: (bool(v) if k == "winning" else float(v)) for k, v in r.items()}}
                         for t, r in tab.to_dict("index").items()],
                "winning": int(win.sum()),
                "cut_frequency": float(tab.loc[win, "probability"].mean()) if win.any() else None}
    return {"name": name, "at": entry["at"], "size": float(entry["size"]), "model": model,
            "insurance_fund": fund, "summary": res.summary(),
            "adl": {"fund_after": o.fund_after, "shortfall": o.shortfall, "adl_qty": o.adl_qty,
                    "adl_price": o.adl_price, "deleveraged_side": o.winners},
            "frequency": freq}


def _slow_monte_carlo(cfg: Any, mcc: Any, md: MarketData | None, spec: Any,
                      books: Mapping[str, tuple[Any, list[Any]]], log: Log) -> list[tuple[str, Any]]:
    """Monte Carlo of the results without a column route: each ``[[book]]`` on ``book_paths``
    joint-bootstrap paths, each ``[[puts]]`` and ``[[products]]`` on ``instrument_paths`` paths
    (the perps' first paths: same seed), one simulation a path."""
    from backtest.runner.run import _products, _puts
    from backtest.stress.pathruns import run_monte_carlo_book, run_monte_carlo_instrument

    out: list[tuple[str, Any]] = []
    common = {"mean_block": mcc.block, "horizon": mcc.horizon, "seed": mcc.seed, "log": log}
    n_inst = mcc.slow_paths("instrument")
    if md is not None and n_inst > 0:
        for k, q in enumerate(cfg.puts):
            log(f"stress: monte carlo, {q.name} on {n_inst} paths")
            out.append((q.name, run_monte_carlo_instrument(partial(_path_sim, _puts, q, f"puts[{k}]", spec), md,
                                                           n_paths=n_inst, what=q.name, **common)))
        for k, r in enumerate(cfg.products):
            log(f"stress: monte carlo, {r.name} on {n_inst} paths")
            out.append((r.name, run_monte_carlo_instrument(partial(_path_sim, _products, r, f"products[{k}]", spec),
                                                           md, n_paths=n_inst, what=r.name, **common)))
    n_book = mcc.slow_paths("book")
    if n_book > 0:
        for b in cfg.book:
            book, specs = books[b.name]
            log(f"stress: monte carlo, book {b.name} on {n_book} joint paths")
            out.append((b.name, run_monte_carlo_book(b, book, specs, n_paths=n_book, **common)))
    return out


def _path_sim(sim: Callable, table: Any, where: str, spec: Any, md: MarketData) -> tuple[Any, pd.Index]:
    return sim(table, where, md, spec)


def run_stress(plan: StressPlan, cfg: Any, md: MarketData | None, spec: Any, run: Any,
               log: Log = lambda _m: None,
               books: Mapping[str, tuple[Any, list[Any]]] | None = None) -> tuple[dict, pd.DataFrame]:
    """Simulate and measure a run's ``[stress]`` (after its results are collected).

    Parameters
    ----------
    plan : from :func:`prepare`.
    cfg : the run's :class:`~backtest.runner.config.RunConfig`.
    md, spec : the run's ``[data]`` market data and spec.
    run : the run's :class:`~backtest.report.collect.RunData` (its ``metrics``, ``series`` and ``events``).
    log : progress lines.
    books : the run's books, name -> ``(BookData, specs)`` (their Monte Carlo paths).

    Returns
    -------
    (block, table): the ``stress`` block of ``metrics.json`` (JSON-able; ``results`` ->
    result -> column -> ``history``/``windows``/``shocks``/``monte_carlo``) and the long table
    of ``stress.parquet`` (columns :data:`STRESS_COLUMNS`, one value per row).
    """
    st = plan.config
    if st is None:
        raise ShockError("run_stress needs the plan made by prepare() (it holds the [stress] table)")
    doc = run.metrics
    rows: list[tuple] = []
    per: dict[str, dict[str, dict]] = {}
    for res_name, res in doc["results"].items():
        per[res_name] = {}
        for lab in res["columns"]:
            hist = _pick(res["usd"]["columns"][lab], SCENARIO_METRICS)
            per[res_name][lab] = {"history": hist, "windows": {}, "shocks": {}, "monte_carlo": None, "adl": {}}
            rows += [(res_name, lab, "history", "history", "usd", k, v) for k, v in hist.items()]

    # windows: sliced from the stored series and events
    wf = window_frame(doc, run.series, run.events, plan.windows)
    keys = [k for k, _ in WINDOW_METRICS] + ["worst_bar_ms"]
    for r in wf.to_dict("records"):  # (itertuples renames the column 'return', a keyword)
        values = {k: r[k] for k in keys}
        if r["basis"] == "usd":
            per[r["result"]][r["column"]]["windows"][r["window"]] = {
                k: (int(v) if k in ("liquidations", "margin_calls", "worst_bar_ms") else float(v))
                for k, v in values.items()}
        rows += [(r["result"], r["column"], "window", r["window"], r["basis"], k, v) for k, v in values.items()]

    # shocks and cascades: the simulations again on each shocked dataset
    cascades = {name: (res, entry) for name, res, entry in plan.cascades}
    perps = {p.name: p for p in cfg.perp}
    cascade_docs = []
    for sh in plan.shocks:
        metrics, results = _shocked_results(cfg, sh, log, plan.books.get(sh[0]))
        for res_name, cols in metrics.items():
            for lab, m in cols.items():
                per[res_name][lab]["shocks"][sh[0]] = m
                rows += [(res_name, lab, "shock", sh[0], "usd", k, v) for k, v in m.items()]
        if sh[0] in cascades and md is not None:  # (prepare() runs no cascade without the data)
            cres, entry = cascades[sh[0]]
            doc_c = _cascade_doc(sh[0], cres, entry, md)
            cascade_docs.append(doc_c)
            rows += [("market", "", "cascade", sh[0], "usd", k, float(v)) for k, v in doc_c["summary"].items()
                     if k not in ("time",)]
            rows += [("market", "", "cascade", sh[0], "usd", k, float(v)) for k, v in doc_c["adl"].items()]
            for res_name, res in results.items():
                for lab, v in adl_view(res, perps[res_name], cres, doc_c["insurance_fund"]).items():
                    per[res_name][lab]["adl"][sh[0]] = v
                    rows += [(res_name, lab, "adl", sh[0], "settle", k, float(x)) for k, x in v.items()]

    # Monte Carlo: every [[perp]] on the same bootstrap paths (as engine columns); books on their
    # joint bootstrap, puts and products path by path, each on its own (smaller) path count
    mc_doc = None
    mcc = st.monte_carlo
    mc_runs: list[tuple[str, Any]] = []
    if mcc is not None and md is not None and cfg.perp:
        log(f"stress: monte carlo, {', '.join(p.name for p in cfg.perp)} on {mcc.paths} paths")
        mcs = run_monte_carlo_perps(cfg.perp, md, spec, n_paths=mcc.paths, mean_block=mcc.block, horizon=mcc.horizon,
                                    seed=mcc.seed, history=False, log=log)
        mc_runs += [(p.name, mc) for p, mc in zip(cfg.perp, mcs)]
    if mcc is not None:
        mc_runs += _slow_monte_carlo(cfg, mcc, md, spec, books or {}, log)
    for res_name, mc in mc_runs:
        liq = mc.liquidation()
        q = mc.quantiles()
        sc = f"{mc.n_paths} paths"
        for lab in liq.index:
            row = liq.loc[lab]
            quant = {m: {c: float(q.loc[(lab, m), c]) for c in q.columns if c != "n"} for m in MC_METRICS}
            per[res_name][lab]["monte_carlo"] = {
                "paths": int(row["paths"]), "liquidated": int(row["liquidated"]),
                "liquidation_probability": float(row["probability"]), "std_error": float(row["std_error"]),
                "quantiles": quant}
            rows += [(res_name, lab, "monte_carlo", sc, "settle", k, float(row[c])) for k, c in
                     (("paths", "paths"), ("liquidated", "liquidated"),
                      ("liquidation_probability", "probability"), ("std_error", "std_error"))]
            rows += [(res_name, lab, "monte_carlo", sc, "settle", f"{m}_{c}", v)
                     for m, qs in quant.items() for c, v in qs.items()]
    if mc_runs and mcc is not None:
        mc = mc_runs[0][1]
        mc_doc = {"paths": mcc.paths, "block": mc.mean_block, "horizon_bars": mc.horizon_bars,
                  "horizon_days": mc.horizon_days, "seed": mc.seed,
                  "book_paths": mcc.slow_paths("book") if cfg.book else 0,
                  "instrument_paths": mcc.slow_paths("instrument") if (cfg.puts or cfg.products) else 0,
                  "paths_by_result": {name: m.n_paths for name, m in mc_runs},
                  "quantiles": [f"q{round(x * 100):02d}" for x in mc.quantile_levels],
                  "metrics": list(MC_METRICS), "basis": "settle"}

    block = {
        "windows": [w.as_dict() for w in plan.windows],
        "skipped_windows": plan.skipped,
        "shocks": [{"name": name, "type": kind, "shock": repr(shock), "changes_data": _changes_data(shock),
                    "symbols": entry.get("symbols"), "data": md_s is not None,
                    "books": {b: {"betas": betas} for b, (_, _, betas) in plan.books.get(name, {}).items()}}
                   for (name, kind, shock, md_s, _), entry in zip(plan.shocks, [*st.shock, *st.cascade])],
        "cascades": cascade_docs,
        "shocked_kinds": ["perp", "put", "inverse_product", "book"],
        "monte_carlo": mc_doc,
        "metrics": list(SCENARIO_METRICS),
        "window_metrics": [k for k, _ in WINDOW_METRICS],
        "results": per,
    }
    table = pd.DataFrame(rows, columns=list(STRESS_COLUMNS))
    for c in ("result", "column", "kind", "scenario", "basis", "metric"):
        table[c] = table[c].astype("string")
    table["value"] = pd.to_numeric(table["value"].map(lambda v: np.nan if v is None else float(v)),
                                   errors="raise").astype(np.float64)
    return block, table


__all__ = ["MC_METRICS", "SCENARIO_METRICS", "SHOCK_TYPES", "STRESS_COLUMNS", "StressPlan", "prepare", "run_stress"]
