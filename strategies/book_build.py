"""Compose a book strategy, an optional gate and a grid of book policies into the book's target.

Columns are (strategy parameters x gate parameters x policy variants), strategy outer, policy
inner, as :func:`strategies.build_targets` makes them for one instrument.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from backtest.engine.settings import Policy
from strategies import book_options
from strategies.base import StrategyError, get
from strategies.book import BookFrame, as_book, get_book
from strategies.lookahead import check
from strategies.policies.base import InLoop
from strategies.policies.book import BookPolicy, expand_book
from strategies.policies.build import ENGINE_DEFAULTS


def gate_signal(book: BookFrame, gate: str, gate_params: Any, symbol: str | None) -> tuple[np.ndarray, pd.MultiIndex]:
    """A single-instrument strategy's signal on one instrument of the book, on the book's bars
    (n_bars, n_gate_cols): computed on that instrument's own bars (from its first bar), 0 before."""
    strat = get(gate)
    j = book.resolve(symbol or "BTC", what="gate_symbol")
    sig = strat.run(book.symbol_frame(book.symbols[j]), gate_params)
    out = np.zeros((book.n, sig.shape[1]))
    out[int(book.first_bar[j]):] = sig.to_numpy(np.float64)
    return out, sig.columns


def apply_gate(weights: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The book held in proportion to a bearish gate: ``w * max(0, -g_t)`` (a gate of -1 holds the
    book, 0 or > 0 makes it flat, -0.5 holds half); a NaN gate keeps the positions (NaN).
    ``weights`` (n_bars, K), ``g`` (n_bars,)."""
    scale = np.maximum(0.0, -g)
    out = np.where((scale == 0.0)[:, None] & ~np.isnan(weights), 0.0, weights * scale[:, None])
    return np.where(np.isnan(g)[:, None] & ~np.isnan(weights), np.nan, out)


def rebalance_rows(index: pd.DatetimeIndex, bar_ms: float, hours: float) -> np.ndarray:
    """bool (n_bars,): the bars whose close time (open + bar) is a whole multiple of ``hours``
    since the epoch (UTC): the only rows that trade under ``rebalance_hours``."""
    step = int(round(hours * 3_600_000))
    if step <= 0 or step % int(bar_ms):
        raise StrategyError(f"rebalance_hours={hours!r} is not a positive whole number of {bar_ms / 3.6e6:g} h bars; "
                            "give a multiple of the bar size")
    return ((index.as_unit("ms").asi8 + int(bar_ms)) % step) == 0


def build_book_targets(book_data: Any, strategy: str, params: Any = None, policies: Any = None, *,
                       gate: str | None = None, gate_params: Any = None, gate_symbol: str | None = None,
                       specs: Sequence[Any] | None = None,
                       rebalance_hours: float | None = None, options: Sequence[Any] | None = None,
                       options_grid: str = "product", lag: int = 1) -> tuple[np.ndarray, Policy, pd.MultiIndex]:
    """The book's target for every (strategy parameters x gate parameters x policy) column.

    For a book policy the target is ``f_t * w_t`` (unit weights times the policy's factor); for
    an in-loop policy (``drawdown``, ``cppi``) it is ``w_t * target_scale`` and the engine
    applies the equity-path factor (``BookSettings(policy=policy)``). A weight of 0 stays 0 and
    NaN stays NaN (keep; always NaN before an instrument's first bar).

    Parameters
    ----------
    book_data : :class:`backtest.data.BookData` (``load_book_data``), or a (symbol, field) frame.
    strategy : a registered book strategy (:func:`strategies.book.book_names`).
    params : its parameter set, dict grid or list (see :func:`strategies.base.expand_grid`).
    policies : book policy variants (:func:`strategies.policies.book.expand_book`); None = ``const(1)``.
    gate, gate_params, gate_symbol : optional single-instrument strategy (e.g. ``trend_short``)
        run on ``gate_symbol`` (default ``'BTC'``): the book is held where it is bearish
        (:func:`apply_gate`); a gate grid multiplies the columns.
    specs : one MarketSpec per instrument (``liqcap``); None = ``load_market`` of the BookData's
        exchange and symbols when a policy needs them.
    rebalance_hours : trade only the rows whose bar closes on a multiple of this many hours
        (UTC), NaN (keep) elsewhere; None = every bar.
    options : optional option legs, one :class:`strategies.book_options.OptionRule` each (a leg
        and its rule: ``hedge``, ``overlay``, ``delta_hedged``); needs a BookData (the legs'
        contract paths are priced on its bars). Their grids add a ``hedge`` level.
    options_grid : ``'product'`` (default) or ``'zip'``: how the legs' grids combine
        (:func:`strategies.book_options.hedge_grid`).
    lag : the engine's lag (``Account.lag``) the target will be traded with: an option leg's
        rows are NaN until its first contract can be traded.

    Returns
    -------
    target : float64 (n_bars, K + J, n_cols), signed exposure as a multiple of the account's
        equity, the K perpetuals then the J option legs (long exposure >= 0); row t is traded at
        bar t + lag.
    policy : :class:`backtest.engine.settings.Policy`, one value per column in every field.
    columns : MultiIndex: the strategy's parameter levels, ``gate`` and ``gate.<param>`` levels
        with a gate, a ``hedge`` level with options, and a last ``policy`` level (labels);
        :func:`labels` gives readable strings. Column order: strategy, gate, hedge, policy
        (innermost).
    """
    book = as_book(book_data)
    strat = get_book(strategy)
    w, scols = strat.run(book, params)
    if gate is not None:
        g, gcols = gate_signal(book, gate, gate_params, gate_symbol)
        ws = [apply_gate(w[:, :, i], g[:, c]) for i in range(w.shape[2]) for c in range(g.shape[1])]
        w = np.stack(ws, axis=2)
        tuples = [tuple(s) + (gate,) + tuple(c if isinstance(c, tuple) else (c,)) for s in scols for c in gcols]
        names = list(scols.names) + ["gate"] + [f"gate.{n}" for n in gcols.names]
        scols = pd.MultiIndex.from_tuples(tuples, names=names)
    elif gate_params is not None or gate_symbol is not None:
        raise StrategyError("gate_params/gate_symbol given without gate; name the gate strategy, e.g. gate='trend_short'")
    variants = expand_book(policies)
    if specs is None and any("liqcap" in p.label() for p in variants):
        specs = _specs_of(book_data)
    n, k, ks = w.shape
    kp = len(variants)
    if options is not None and len(options):
        book_options.require_bars(book_data)
        if specs is None:
            specs = _specs_of(book_data)
        plan = book_options.plan(book_data, options, specs, lag)
        combos = book_options.hedge_grid(plan.rules, options_grid)
        hedges = [book_options.hedge_label(plan.rules, c) for c in combos]
    elif options_grid not in book_options.GRIDS:
        raise StrategyError(f"options_grid={options_grid!r} is not one of {list(book_options.GRIDS)}")
    else:
        plan, combos, hedges = None, [()], []
    kc, kj = len(combos), (len(plan.rules) if plan is not None else 0)
    target = np.empty((n, k + kj, ks * kc * kp))
    fields: dict[str, list[Any]] = {f: [] for f in ENGINE_DEFAULTS}
    pvals: list[dict[str, Any]] = []
    keep = rebalance_rows(book.index, book.market.bar_seconds * 1000.0, rebalance_hours) \
        if rebalance_hours is not None else None
    for i in range(ks):
        wi = w[:, :, i]
        for j, p in enumerate(variants):
            if isinstance(p, BookPolicy):
                f = p.factor(book, wi, specs=specs)
                vals = dict(ENGINE_DEFAULTS)
            elif isinstance(p, InLoop):
                f = np.full(n, p.target_scale())
                vals = ENGINE_DEFAULTS | p.engine_fields()
            else:
                raise StrategyError(f"policy {p!r} is neither a book policy nor an in-loop one; "
                                    "give a label such as 'voltarget(0.5)' or 'drawdown(0.3)'")
            col = np.where(wi == 0.0, 0.0, wi * f[:, None])
            if keep is not None:
                col = np.where(keep[:, None], col, np.nan)
            for c, combo in enumerate(combos):
                target[:, :, (i * kc + c) * kp + j] = col if plan is None else book_options.apply_options(col, plan, combo)
            pvals.append(vals)
    # the in-loop settings of each column: (strategy, hedge, policy) order, the policy's own
    for i in range(ks):
        for _ in range(kc):
            for vals in pvals[i * kp:(i + 1) * kp]:
                for key in fields:
                    fields[key].append(vals[key])
    hedge_level = [(h,) for h in hedges] if plan is not None else [()]
    tuples = [(t if isinstance(t, tuple) else (t,)) + hl + (p.label(),) for t in scols for hl in hedge_level
              for p in variants]
    names = list(scols.names) + (["hedge"] if plan is not None else []) + ["policy"]
    columns = pd.MultiIndex.from_tuples(tuples, names=names)
    policy = Policy(
        kind=list(fields["kind"]),
        max_drawdown=np.asarray(fields["max_drawdown"], dtype=np.float64),
        floor=np.asarray(fields["floor"], dtype=np.float64),
        multiplier=np.asarray(fields["multiplier"], dtype=np.float64),
        ratchet=np.asarray(fields["ratchet"], dtype=np.bool_),
        max_exposure=np.asarray(fields["max_exposure"], dtype=np.float64),
    )
    return target, policy, columns


def _specs_of(book_data: Any) -> list[Any]:
    exchange = getattr(book_data, "exchange", None)
    if exchange is None:
        raise StrategyError("liqcap needs the instruments' market specs: pass specs=[load_market(exchange, symbol) "
                            "for each symbol] (or give a BookData, whose exchange is known)")
    from backtest.market import load_market

    return [load_market(exchange, s) for s in book_data.symbols]


def labels(columns: pd.MultiIndex) -> list[str]:
    """Readable column labels ``'level=value|...|policy=label'``, e.g.
    ``'weighting=beta|policy=voltarget(0.5)'``: the levels whose value differs between columns,
    and always the policy."""
    names = list(columns.names)
    vary = [i for i, nm in enumerate(names) if nm == "policy" or len(set(columns.get_level_values(i))) > 1]
    return ["|".join(f"{names[i]}={t[i]}" for i in vary) for t in columns]


def check_lookahead(book_data: Any, strategy: str, params: Any = None, policies: Any = None, *,
                    n_cuts: int = 10, min_bars: int = 2, **kwargs: Any) -> int:
    """:func:`strategies.lookahead.check` on the book's target: recomputed on the book truncated at
    ``n_cuts`` points, every row before a cut must equal the full run's. Returns the cuts checked;
    raises :class:`strategies.LookAheadError` naming the first changed value.

    With ``options=`` (option rules, which need a BookData), each cut truncates the BookData's bars
    (:func:`truncate_book_data`) and every leg's implied-volatility series, so that the legs'
    contract paths, deltas and tradeable rows are recomputed from the truncated data too."""
    book = as_book(book_data)
    specs = kwargs.pop("specs", None)
    if specs is None and hasattr(book_data, "exchange"):
        specs = _specs_of(book_data)
    rules = kwargs.pop("options", None)

    def targets(frame: pd.DataFrame) -> np.ndarray:
        if rules:
            c = len(frame)
            tgt, _, _ = build_book_targets(truncate_book_data(book_data, c), strategy, params, policies, specs=specs,
                                           options=[truncate_rule(r, c) for r in rules], **kwargs)
        else:
            tgt, _, _ = build_book_targets(BookFrame(frame, bar_seconds=book.market.bar_seconds), strategy, params,
                                           policies, specs=specs, **kwargs)
        return tgt.reshape(tgt.shape[0], -1)

    return check(targets, book.frame, n_cuts=n_cuts, min_bars=min_bars)


def truncate_book_data(book_data: Any, n: int) -> Any:
    """The BookData's first ``n`` bars (for look-ahead checks): its bars cut at bar ``n`` (each
    instrument's bars and the funding prints of the bars kept; an instrument listed at or after
    bar ``n`` is refused). The symbols' MarketData are kept whole: book strategies read them on
    the bars' index (:class:`strategies.book.BookFrame`)."""
    from dataclasses import replace

    bars = book_options.require_bars(book_data)
    if not 0 < n <= bars.n:
        raise StrategyError(f"cannot cut a book of {bars.n} bars at {n}; give 1 <= n <= {bars.n}")
    late = [s for s, f in zip(bars.symbols, bars.first_bar) if int(f) >= n]
    if late:
        raise StrategyError(f"cutting the book at bar {n} leaves {late} with no bar (listed later); cut after their "
                            "listing (min_bars)")
    legs = []
    for leg, f in zip(bars.legs, bars.first_bar):
        m = n - int(f)
        keep = leg.fe_bar < m
        cut = {name: getattr(leg, name)[:m] for name in ("timestamp", "open", "high", "low", "close", "mark_open",
                                                           "mark_high", "mark_low", "mark_close")}
        cut.update({name: getattr(leg, name)[keep] for name in ("fe_bar", "fe_time", "fe_at_open", "fe_rate",
                                                                "fe_mark")})
        legs.append(replace(leg, **cut))
    return replace(book_data, bars=type(bars).from_legs(bars.symbols, legs))


def truncate_rule(rule: Any, n: int) -> Any:
    """An option rule with its leg's implied-volatility series (on the book's bars) cut at bar ``n``."""
    from dataclasses import replace

    leg = rule.leg
    if leg.iv is None:
        return rule
    return replace(rule, leg=replace(leg, iv=np.asarray(leg.iv, dtype=np.float64)[:n]))
