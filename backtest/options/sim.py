"""Rolling long puts priced with Black-76 (model prices, no chain data) -> :class:`SimResult`.

Rules (details and sources in ``docs/instruments.md``):

* All events happen at bar closes. Bar i's close instant is its open time + bar size.
* Start: the first purchase is at the first bar close with a usable volatility (or at
  ``start``); before it the column is flat cash.
* Hold signal (optional): puts are held only while the (lagged) signal is on; turning it off
  sells the put (``exit``), turning it on buys one (``entry``). Default: always on.
* Expiry: the first expiry of the schedule more than ``max(min_days, roll_dte)`` days after the
  roll instant. Default schedule: Deribit monthlies, last Friday of the month 08:00 UTC.
* Settlement: at the first bar close at or after the expiry, at that bar's underlying close
  (with hourly bars, the 07:00 bar's close = the 08:00 price). Payoff ``max(K - S_T, 0)`` USD per
  contract, or ``max(K - S_T, 0) / S_T`` coins for coin-settled options; a delivery fee
  ``min(delivery_fee_rate x underlying, delivery_fee_cap x payoff)`` per contract.
  The new put is bought at the same close (reason ``scheduled``).
* Early roll (checked at each close while a put is held): ``|delta| >= roll_delta``
  (``early_delta``) or days to expiry ``<= roll_dte`` (``early_dte``): the put is sold at model
  value x (1 - slippage) less the fee, and a new one is bought.
* Strike: ``moneyness`` mode: the largest grid strike <= moneyness x F; ``delta`` mode: the grid
  strike whose put |delta| is closest to ``target_delta``. Grid step ``strike_step`` (USD) or,
  when None, the largest of 1/2.5/5 x 10^k not above 2.5 % of F.
* Price: Black-76 on ``F = S exp(carry T)`` (``S`` = underlying close, perp mark by default),
  no discounting, vol ``atm_vol x (1 + skew x max(0, -ln(K/F)/sqrt(T)))``.
* Fill: model value x (1 + slippage); fee per contract ``min(fee_rate x underlying, fee_cap x fill)``
  (underlying = S in USD, 1 coin in coin settlement).
* Size: ``notional``: contracts = exposure x equity / S (coin: exposure x equity);
  ``budget``: premium + fees = budget x equity. Never more than the cash can pay (``clipped``).
* Purpose: ``directional`` (puts alone) or ``protective``: the puts protect a held long
  position of ``Q = exposure x initial_capital / S_start`` coins, held from the first purchase's
  close to the end, whose P&L ``Q x (S_t - S_start)`` is part of the equity (USD settlement).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from backtest.options import enums as E
from backtest.options.inputs import (
    DAY_MS, InstrumentInputError, as_underlying, column_count, column_labels, per_column, ts_str,
)
from backtest.options.schedule import expiry_schedule, validate_expiries
from backtest.options.vol import atm_vol, funding_carry
from backtest.result import SimResult

Num = float | int | Sequence[float] | np.ndarray
Choice = str | Sequence[str]

SETTLEMENTS = ("usd", "coin")


@dataclass(frozen=True)
class PutSettings:
    """Settings of a rolled long-put strategy. Every field marked *per column* is a scalar or
    one value per column (a parameter grid); see ``docs/instruments.md`` for each rule.

    Parameters
    ----------
    initial_capital : per column; starting cash in the settlement currency
        (default 10,000 USDT, or 1.0 coin when ``settlement='coin'``).
    settlement : ``'usd'`` (USDT account: premium and payoff in USD) or ``'coin'``
        (Deribit-style inverse options and a coin account). One value for all columns.
    strike_mode : per column; ``'moneyness'`` or ``'delta'``.
    moneyness : per column; strike = largest grid strike <= moneyness x forward (0.90 = 10 % OTM).
    target_delta : per column; |put delta| targeted in ``'delta'`` mode, in (0, 1).
    strike_step : per column; strike grid step in USD, or None for the automatic step
        (largest 1/2.5/5 x 10^k <= 2.5 % of the forward: 1000 at BTC 50k, 50 at ETH 2k).
    expiry : ``'monthly'`` (Deribit: last Friday of the month), ``'quarterly'`` or ``'weekly'``.
    expiry_hour : expiry time, UTC hours (Deribit: 8).
    min_days : per column; the bought expiry is the first more than this many days away.
    roll_delta : per column; early roll when |put delta| >= this (inf = never; research variant 0.5).
    roll_dte : per column; early roll when days to expiry <= this (0 = never; variant 7).
    size_mode : per column; ``'notional'`` or ``'budget'``.
    exposure : per column; notional multiple of equity in ``'notional'`` mode (1.0 = puts on an
        underlying notional equal to equity).
    budget : per column; fraction of equity spent per roll (premium + fees) in ``'budget'`` mode.
    vol_source : per column; ``'auto'`` (implied vol where the data has it, else EWMA x vrp),
        ``'iv'`` or ``'ewma'``.
    ewma_lambda : per column; EWMA daily decay (RiskMetrics 0.94).
    vrp : per column; multiplier on EWMA realised vol (variance risk premium; 1.10).
    iv_max_stale_hours : per column; a missing implied vol is carried forward this long.
    skew : per column; put-wing skew slope s (0.10; 0 = flat smile).
    carry : per column; constant annualised carry b in ``F = S exp(b T)`` (0).
    carry_from_funding : per column; if True, b = funding prints summed over the trailing
        ``carry_window_days``, annualised, clipped to +-``carry_clip`` (replaces ``carry``).
    carry_window_days, carry_clip : per column (7 days, 1.0 per year).
    fee_rate : per column; trading fee per contract as a fraction of the underlying (Deribit 0.0003).
    fee_cap : per column; fee cap as a fraction of the option price (Deribit 0.125).
    delivery_fee_rate, delivery_fee_cap : per column; settlement fee (Deribit 0.00015, 0.125).
    slippage : per column; fraction of the model premium paid above (bought) / given up below
        (sold) the model value (0.05).
    start : optional instant (ms UTC int, ISO text or Timestamp) of the first purchase: the first
        bar close at or after it. Default: the first bar with a usable volatility.
    purpose : per column; ``'directional'`` (puts alone) or ``'protective'``: the account also
        holds ``Q = exposure x initial_capital / S_start`` coins of the underlying from the first
        purchase's close (``S_start``) to the end (the size of the first notional-mode put), and
        its P&L ``Q x (S_t - S_start)`` is added to the equity. The put leg is the directional one.
        USD settlement only (a coin account's balance already is a long holding of the coin).
    option_type : ``'put'`` (default) or ``'call'``: rolled long calls under the same rules, the
        strike the smallest grid strike >= moneyness x F (1.10 = 10 % OTM) or the call |delta|
        closest to ``target_delta``; payoff ``max(S_T - K, 0)``; the skew lifts the put wing
        only (OTM calls are priced at the ATM vol). One value for all columns.
    """

    initial_capital: Num | None = None
    settlement: str = "usd"
    strike_mode: Choice = "moneyness"
    moneyness: Num = 0.90
    target_delta: Num = 0.25
    strike_step: Num | None = None
    expiry: str = "monthly"
    expiry_hour: float = 8.0
    min_days: Num = 7.0
    roll_delta: Num = math.inf
    roll_dte: Num = 0.0
    size_mode: Choice = "notional"
    exposure: Num = 1.0
    budget: Num = 0.01
    vol_source: Choice = "auto"
    ewma_lambda: Num = 0.94
    vrp: Num = 1.10
    iv_max_stale_hours: Num = 72.0
    skew: Num = 0.10
    carry: Num = 0.0
    carry_from_funding: bool | Sequence[bool] = False
    carry_window_days: Num = 7.0
    carry_clip: Num = 1.0
    fee_rate: Num = 0.0003
    fee_cap: Num = 0.125
    delivery_fee_rate: Num = 0.00015
    delivery_fee_cap: Num = 0.125
    slippage: Num = 0.05
    start: Any = None
    purpose: Choice = "directional"
    option_type: str = "put"


_SCALAR_FIELDS = ("settlement", "expiry", "expiry_hour", "start", "option_type")
OPTION_TYPES = ("put", "call")


def _arrays(s: PutSettings, m: int) -> dict[str, np.ndarray]:
    coin = s.settlement == "coin"
    cap = s.initial_capital if s.initial_capital is not None else (1.0 if coin else 10_000.0)
    f = lambda name, v, **kw: per_column(name, v, m, **kw)  # noqa: E731
    a = {
        "init_cap": f("initial_capital", cap),
        "strike_mode": f("strike_mode", s.strike_mode, choices=E.StrikeMode.names),
        "moneyness": f("moneyness", s.moneyness),
        "target_delta": f("target_delta", s.target_delta),
        "strike_step": f("strike_step", s.strike_step),
        "min_days": f("min_days", s.min_days),
        "roll_delta": f("roll_delta", s.roll_delta),
        "roll_dte": f("roll_dte", s.roll_dte),
        "size_mode": f("size_mode", s.size_mode, choices=E.SizeMode.names),
        "exposure": f("exposure", s.exposure),
        "budget": f("budget", s.budget),
        "vol_source": f("vol_source", s.vol_source, choices=E.VolSource.names),
        "ewma_lambda": f("ewma_lambda", s.ewma_lambda),
        "vrp": f("vrp", s.vrp),
        "iv_max_stale_hours": f("iv_max_stale_hours", s.iv_max_stale_hours),
        "skew": f("skew", s.skew),
        "carry": f("carry", s.carry),
        "carry_from_funding": f("carry_from_funding", s.carry_from_funding, dtype=bool),
        "carry_window_days": f("carry_window_days", s.carry_window_days),
        "carry_clip": f("carry_clip", s.carry_clip),
        "fee_rate": f("fee_rate", s.fee_rate),
        "fee_cap": f("fee_cap", s.fee_cap),
        "dfee_rate": f("delivery_fee_rate", s.delivery_fee_rate),
        "dfee_cap": f("delivery_fee_cap", s.delivery_fee_cap),
        "slippage": f("slippage", s.slippage),
        "purpose": f("purpose", s.purpose, choices=E.Purpose.names),
    }
    fin = np.isfinite
    delta_mode = a["strike_mode"] == E.StrikeMode.DELTA
    checks = [
        ("initial_capital", "init_cap", fin(a["init_cap"]) & (a["init_cap"] > 0), "a finite number > 0"),
        ("moneyness", "moneyness", delta_mode | (fin(a["moneyness"]) & (a["moneyness"] > 0)),
         "a finite number > 0 (0.9 = strike 10 % below the forward)"),
        ("target_delta", "target_delta", ~delta_mode | ((a["target_delta"] > 0) & (a["target_delta"] < 1)),
         "in (0, 1) (|put delta|, e.g. 0.25)"),
        ("strike_step", "strike_step", np.isnan(a["strike_step"]) | (fin(a["strike_step"]) & (a["strike_step"] > 0)),
         "a finite number > 0 (USD), or None for the automatic step"),
        ("min_days", "min_days", fin(a["min_days"]) & (a["min_days"] >= 0), "a finite number of days >= 0"),
        ("roll_delta", "roll_delta", a["roll_delta"] > 0, "> 0 (inf = no early delta roll)"),
        ("roll_dte", "roll_dte", fin(a["roll_dte"]) & (a["roll_dte"] >= 0), "a finite number of days >= 0"),
        ("exposure", "exposure", fin(a["exposure"]) & (a["exposure"] >= 0), "a finite number >= 0"),
        ("budget", "budget", (a["budget"] >= 0) & (a["budget"] <= 1), "in [0, 1] (fraction of equity per roll)"),
        ("ewma_lambda", "ewma_lambda", (a["ewma_lambda"] > 0) & (a["ewma_lambda"] < 1), "in (0, 1)"),
        ("vrp", "vrp", fin(a["vrp"]) & (a["vrp"] > 0), "a finite number > 0"),
        ("iv_max_stale_hours", "iv_max_stale_hours", a["iv_max_stale_hours"] >= 0, ">= 0"),
        ("skew", "skew", fin(a["skew"]) & (a["skew"] >= 0), "a finite number >= 0"),
        ("carry", "carry", fin(a["carry"]), "finite (annualised)"),
        ("carry_window_days", "carry_window_days", a["carry_window_days"] > 0, "> 0"),
        ("carry_clip", "carry_clip", a["carry_clip"] > 0, "> 0"),
        ("fee_rate", "fee_rate", fin(a["fee_rate"]) & (a["fee_rate"] >= 0), "a finite number >= 0"),
        ("fee_cap", "fee_cap", fin(a["fee_cap"]) & (a["fee_cap"] >= 0), "a finite number >= 0"),
        ("delivery_fee_rate", "dfee_rate", fin(a["dfee_rate"]) & (a["dfee_rate"] >= 0), "a finite number >= 0"),
        ("delivery_fee_cap", "dfee_cap", fin(a["dfee_cap"]) & (a["dfee_cap"] >= 0), "a finite number >= 0"),
        ("slippage", "slippage", (a["slippage"] >= 0) & (a["slippage"] < 1), "in [0, 1) (fraction of premium)"),
        ("target_delta", "target_delta", ~delta_mode | (a["target_delta"] < a["roll_delta"]),
         "below roll_delta (a new put would be rolled again at once)"),
    ]
    for public, key, ok, what in checks:
        if not ok.all():
            j = int(np.argmax(~ok))
            raise InstrumentInputError(f"PutSettings.{public}={a[key][j].item()!r} (column {j}) must be {what}")
    a["strike_step"] = np.where(np.isnan(a["strike_step"]), 0.0, a["strike_step"])  # 0 = automatic
    return a


def _instant_ms(value: Any, name: str) -> int:
    """ms UTC from an int (ms), ISO text, datetime or Timestamp (naive = UTC)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise InstrumentInputError(f"{name}={value!r} is not an instant (ms UTC int or ISO text)") from exc
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def _start_index(start: Any, close_time: np.ndarray) -> int:
    if start is None:
        return 0
    t = _instant_ms(start, "PutSettings.start")
    i = int(np.searchsorted(close_time, t, side="left"))
    if i >= close_time.shape[0]:
        raise InstrumentInputError(
            f"PutSettings.start={start!r} is after the last bar close {ts_str(close_time[-1])}; use an earlier start")
    return i


def _coin_name(data: Any) -> str:
    sym = getattr(data, "symbol", None)
    if isinstance(sym, str) and "/" in sym:
        return sym.split("/")[0]
    return "BTC"


def _hold_matrix(hold: Any, n: int, m: int, lag: int, allow_lookahead: bool) -> np.ndarray:
    """Hold signal -> float (n, 1 or m) of 1.0 (hold puts) / 0.0, NaN carried forward, lagged."""
    if isinstance(lag, (bool, np.bool_)) or not isinstance(lag, (int, np.integer)) or lag < 0:
        raise InstrumentInputError(f"hold_lag={lag!r} must be an integer >= 0 (1 = act one bar after the signal)")
    if not isinstance(allow_lookahead, (bool, np.bool_)):
        raise InstrumentInputError(f"allow_lookahead={allow_lookahead!r} must be True or False")
    if lag == 0 and hold is not None and not allow_lookahead:
        # the perp engine's rule (settings.check_lag): a signal computed from bar t's close must not
        # trade at that same close
        raise InstrumentInputError(
            "hold_lag=0 trades each signal row at the close it is computed from (look-ahead); use "
            "hold_lag=1 (the next close), or set allow_lookahead=True if the signal is known before the close")
    if hold is None:
        return np.ones((n, 1))
    a = np.asarray(hold, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n or a.shape[1] not in (1, m):
        raise InstrumentInputError(f"hold has shape {np.shape(hold)}; give ({n},), ({n}, 1) or ({n}, {m})")
    a = pd.DataFrame(a).ffill().fillna(0.0).to_numpy()
    h = (a != 0).astype(np.float64)
    if lag:
        h = np.vstack([np.zeros((min(lag, n), h.shape[1])), h[: max(n - lag, 0)]])
    return np.ascontiguousarray(h)


def simulate_puts(data: Any, settings: PutSettings = PutSettings(), *, hold: Any = None, hold_lag: int = 1,
                  allow_lookahead: bool = False, expiries: Any = None, iv: Any = None, funding_rate: Any = None, price: str = "mark",
                  columns: Any = None, currency: str | None = None) -> SimResult:
    """Simulate rolled long puts, one account per column.

    Parameters
    ----------
    data : an :class:`~backtest.options.inputs.Underlying`, a DataFrame/Series, or an object
        with a ``.frame`` DataFrame (``MarketData``); see :func:`~backtest.options.inputs.as_underlying`.
    settings : :class:`PutSettings`; per-column sequences make a parameter grid.
    hold : optional signal (n,) or (n, n_cols): non-zero (e.g. -1 from a bearish signal) = hold
        puts, 0 = hold none, NaN = keep the previous state. Default: always hold (a rolled program).
        When it turns off the put is sold (reason ``exit``); when it turns on a put is bought
        (``entry``).
    hold_lag : bars between a signal row and the close at which it acts (1: a signal computed at
        bar t's close trades at bar t+1's close; 0 only when the signal is known before the close,
        stated with ``allow_lookahead=True``, which adds a note to ``meta['notes']``).
    allow_lookahead : let ``hold_lag=0`` run (refused otherwise, like the perp engine's ``lag = 0``).
    expiries : optional explicit expiry instants (int64 ms UTC or datetimes) replacing the
        ``settings.expiry`` schedule.
    iv, funding_rate : optional (n,) arrays supplying/overriding those inputs (iv as a fraction).
    price : ``'mark'`` (default, mark close when the data has it) or ``'close'``.
    columns : optional column labels (default: the varying settings).
    currency : settlement currency name (default ``'USDT'``, or the coin, e.g. ``'BTC'``).

    Returns
    -------
    SimResult
        ``kind='put'``; series (n_bars, n_cols): the required ones plus ``delta`` (coins; coin
        settlement: Deribit net delta), ``gamma`` (coins per USD), ``vega`` (settlement currency
        per vol point), ``theta`` (settlement currency per day), ``delta_exposure``,
        ``account_delta``, ``premium_paid``, ``cum_received``, ``option_value``, ``strike``,
        ``days_to_expiry``, ``put_vol``, ``atm_vol``; records ``rolls`` and ``settlements``.

    Raises
    ------
    InstrumentInputError
        Bad data or settings, missing/non-positive volatility after the start, no expiry in
        the schedule, or a strike grid that yields no strike; the message names the value.
    """
    if settings.settlement not in SETTLEMENTS:
        raise InstrumentInputError(f"PutSettings.settlement={settings.settlement!r} must be 'usd' or 'coin'")
    if settings.option_type not in OPTION_TYPES:
        raise InstrumentInputError(f"PutSettings.option_type={settings.option_type!r} must be 'put' or 'call'")
    for name in _SCALAR_FIELDS:
        v = getattr(settings, name)
        if isinstance(v, (list, tuple, np.ndarray)):
            raise InstrumentInputError(f"PutSettings.{name} takes one value for all columns, got {v!r}")
    u = as_underlying(data, price=price, iv=iv, funding_rate=funding_rate)
    coin = settings.settlement == "coin"
    values = {k: v for k, v in asdict(settings).items() if k not in _SCALAR_FIELDS}
    m = column_count(values)
    kp = u.price.shape[1]
    if kp > 1:
        if m not in (1, kp):
            raise InstrumentInputError(f"price has {kp} path columns but the settings give {m} columns")
        if coin:
            raise InstrumentInputError("settlement='coin' needs one price path (the coin's USD price)")
        m = kp
    a = _arrays(settings, m)
    protective = a["purpose"] == E.Purpose.PROTECTIVE
    if settings.option_type == "call" and protective.any():
        raise InstrumentInputError("PutSettings.purpose='protective' protects a long holding with puts; with "
                                   "option_type='call' use purpose='directional'")
    if coin and protective.any():
        raise InstrumentInputError(
            "PutSettings.purpose='protective' needs settlement='usd': with settlement='coin' the coin balance "
            "itself is the long holding the puts protect (see account_delta); use purpose='directional'")
    close_time = u.close_time
    n = u.n

    # ATM vol per column: one computation per distinct (source, lambda, vrp, staleness).
    vol = np.empty((n, m))
    used_iv = np.zeros((n, m), dtype=bool)
    cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    src_names = {v: k for k, v in E.VolSource.names.items()}
    for j in range(m):
        key = (int(a["vol_source"][j]), float(a["ewma_lambda"][j]), float(a["vrp"][j]),
               float(a["iv_max_stale_hours"][j]))
        if key not in cache:
            cache[key] = atm_vol(u.iv, u.price, u.bar_ms, src_names[key[0]], key[1], key[2], key[3])
        v, f = cache[key]
        vol[:, j] = v[:, j if v.shape[1] > 1 else 0]
        used_iv[:, j] = f[:, j if f.shape[1] > 1 else 0]

    carry = np.empty((n, m))
    for j in range(m):
        if a["carry_from_funding"][j]:
            cf = funding_carry(u.funding_rate, u.bar_ms, float(a["carry_window_days"][j]), float(a["carry_clip"][j]))
            carry[:, j] = cf[:, j if cf.shape[1] > 1 else 0]
        else:
            carry[:, j] = a["carry"][j]

    i0 = _start_index(settings.start, close_time)
    start_bar = np.empty(m, dtype=np.int64)
    for j in range(m):
        ok = np.isfinite(vol[i0:, j]) & (vol[i0:, j] > 0)
        if settings.start is not None and not ok[0]:
            raise InstrumentInputError(
                f"volatility at the start bar {i0} ({ts_str(u.timestamp[i0])}) is {vol[i0, j]!r} for column {j} "
                f"(vol_source={src_names[int(a['vol_source'][j])]!r}); start later or supply an implied vol")
        if not ok.any():
            raise InstrumentInputError(
                f"no bar has a usable volatility for column {j} (vol_source={src_names[int(a['vol_source'][j])]!r}); "
                "the EWMA needs ceil(1/(1-ewma_lambda)) days of bars, 'iv' needs an iv series")
        start_bar[j] = i0 + int(np.argmax(ok))

    horizon = (float(np.max(np.maximum(a["min_days"], a["roll_dte"]))) + 400.0) * DAY_MS
    if expiries is None:
        exp = expiry_schedule(int(u.timestamp[0]), int(close_time[-1] + horizon), settings.expiry, settings.expiry_hour)
    else:
        exp = validate_expiries(expiries, int(u.timestamp[0]))

    hold_m = _hold_matrix(hold, n, m, hold_lag, allow_lookahead)
    holding, entry = _holding(u.price, start_bar, a, protective)
    # the price always as a read-only view (no copy): a run's put program passes the loaded data's
    # read-only array and a book's option legs a writable one, and numba compiles one kernel per
    # flag (two compilations of this kernel on a cold main job)
    price = u.price.view()
    price.flags.writeable = False
    # imported here: the kernel's module uses numba's ``vectorize``, which imports scipy (0.5-0.8 s),
    # and a perp run or sweep imports this module for PutSettings only
    from backtest.options.nb import simulate_puts_nb

    out, ri, rf, si, sf, status, value = simulate_puts_nb(
        close_time, price, vol, carry, hold_m, exp, start_bar, coin, settings.option_type == "call",
        a["strike_mode"], a["moneyness"], a["target_delta"], a["strike_step"], a["min_days"], a["roll_delta"],
        a["roll_dte"], a["size_mode"], a["exposure"], a["budget"], a["skew"], a["fee_rate"], a["fee_cap"],
        a["dfee_rate"], a["dfee_cap"], a["slippage"], a["init_cap"], holding)
    _raise_status(status, value, u, a, exp, src_names)
    _add_holding(out, u.price, start_bar, holding, entry)

    cols = column_labels(values, m, columns)
    series = {name: np.ascontiguousarray(out[k]) for k, name in enumerate(E.SERIES)}
    records = {
        "rolls": E.to_records(ri, rf, E.ROLL_INT, E.ROLL_FLOAT, E.roll_dt),
        "settlements": E.to_records(si, sf, E.SETTLE_INT, E.SETTLE_FLOAT, E.settlement_dt),
    }
    cur = currency or (_coin_name(data) if coin else "USDT")
    price_usd = u.price[:, 0].copy() if coin else np.ones(n)
    meta = {
        "instrument": settings.option_type,
        "settlement": settings.settlement,
        "price_source": u.source,
        "settings": {k: _jsonable(v) for k, v in asdict(settings).items()},
        "roll_reasons": list(E.RollReason.names),
        "start_bar": start_bar.tolist(),
        "iv_used_share": used_iv[np.arange(n)[:, None] >= start_bar[None, :]].mean() if n else 0.0,
        "expiries_used": int(len(np.unique(records["rolls"]["expiry"]))),
        "protective": {"holding": holding.tolist(), "entry_price": entry.tolist()},
        "notes": [
            "model prices (Black-76 on the perp mark as forward, no chain data)",
            ("notional = +contracts x underlying (calls are a long-delta exposure)" if settings.option_type == "call"
             else "notional = -contracts x underlying (puts are a short-delta exposure)"),
            "settlement at the first bar close at or after the expiry, at that close",
        ] + (["protective columns: equity includes the P&L of a held long position of "
              "exposure x initial_capital / S_start coins (meta['protective'])"] if protective.any() else [])
        + (["hold_lag = 0 with allow_lookahead = true: each hold signal acts at the close it is computed "
            "from (look-ahead if it uses that close; stated by the user as known before the close)"]
           if hold is not None and hold_lag == 0 else []),
    }
    meta["iv_used_share"] = float(meta["iv_used_share"]) if np.isfinite(meta["iv_used_share"]) else 0.0
    return SimResult(kind="put", currency=cur, index=u.index, columns=cols, series=series, records=records,
                     price_usd=price_usd, initial_capital=a["init_cap"].copy(), meta=meta,
                     underlying=u.price[:, 0].copy())


def _holding(price: np.ndarray, start_bar: np.ndarray, a: dict, protective: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Protective columns' held underlying: ``Q = exposure x initial_capital / S_start`` coins,
    held from the start bar's close (the first bar with a usable volatility), and ``S_start``;
    0 for directional columns. In notional mode every put purchase covers exactly ``Q`` coins
    (the kernel's ``cover``), so the holding stays protected after a rally; in budget mode the
    premium budget decides the count, as for a directional column."""
    m = start_bar.shape[0]
    holding, entry = np.zeros(m), np.zeros(m)
    for j in np.flatnonzero(protective):
        s = price[:, j if price.shape[1] > 1 else 0]
        entry[j] = s[int(start_bar[j])]
        holding[j] = a["exposure"][j] * a["init_cap"][j] / entry[j]
    return holding, entry


def _add_holding(out: np.ndarray, price: np.ndarray, start_bar: np.ndarray, holding: np.ndarray,
                 entry: np.ndarray) -> None:
    """Add the held underlying's P&L to the kernel's output (in place), for the columns with a
    holding. It is never sold, so its P&L stays unrealised; the put leg's cash and rolls are the
    kernel's. Per bar from the start: ``equity += Q x (S_t - S_start)``, ``account_delta += Q``;
    ``leverage`` and ``delta_exposure`` are re-derived from the new equity with the kernel's
    formulas."""
    for j in np.flatnonzero(holding > 0.0):
        s = price[:, j if price.shape[1] > 1 else 0]
        i0 = int(start_bar[j])
        eq = out[E.EQUITY, i0:, j] + holding[j] * (s[i0:] - entry[j])
        out[E.EQUITY, i0:, j] = eq
        out[E.EQUITY_USD, i0:, j] = eq  # USD settlement: equity is in USD
        out[E.ACCOUNT_DELTA, i0:, j] += holding[j]
        pos = eq > 0.0
        out[E.LEVERAGE, i0:, j] = np.where(pos, np.abs(out[E.NOTIONAL, i0:, j]) / np.where(pos, eq, 1.0), 0.0)
        out[E.DELTA_EXPOSURE, i0:, j] = np.where(pos, out[E.DELTA, i0:, j] * s[i0:] / np.where(pos, eq, 1.0), 0.0)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _raise_status(status: np.ndarray, value: np.ndarray, u: Any, a: dict, exp: np.ndarray,
                  src_names: dict) -> None:
    code, i, j = (int(x) for x in status)
    if code == E.KernelError.OK:
        return
    when = f"bar {i} ({ts_str(u.close_time[i])} close), column {j}"
    v = float(value[0])
    if code == E.KernelError.VOL:
        raise InstrumentInputError(
            f"volatility at {when} is {v!r} (vol_source={src_names[int(a['vol_source'][j])]!r}): the implied vol "
            f"is missing for longer than iv_max_stale_hours={a['iv_max_stale_hours'][j]}; raise it, fill the iv "
            "series, or use vol_source='auto'")
    if code == E.KernelError.NO_EXPIRY:
        raise InstrumentInputError(
            f"no expiry after {ts_str(int(v))} (needed at {when}: more than max(min_days, roll_dte) days ahead); "
            f"the last expiry given is {ts_str(exp[-1])}: extend the expiries list")
    if code == E.KernelError.NO_STRIKE:
        raise InstrumentInputError(
            f"strike_step={v!r} yields no strike > 0 at {when} (underlying {u.price[i, 0]:.6g}); use a smaller "
            "strike_step or None for the automatic step")
    if code == E.KernelError.DELTA_ABOVE_ROLL:
        raise InstrumentInputError(
            f"the put bought at {when} already has delta {v:.4f}, |delta| >= roll_delta={a['roll_delta'][j]}: it "
            "would be rolled again at once; lower moneyness or raise roll_delta")
    raise InstrumentInputError(f"put kernel returned unknown status {code} at {when}")
