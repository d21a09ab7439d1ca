"""Round-trip trades of a perpetual result, from its records (pure functions).

A **round trip** runs from the fill that opens a position out of flat to the event that brings
it back to flat (a fill, a margin-call cut or a liquidation); a fill that flips the side closes
one trip and opens the next at the same price (its size and fee split in proportion). A trip
still open at the last bar is marked to that bar's close (``open = True``).

Per trip, in the settlement currency:

* ``pnl_price``: the price PnL of its fills, from the cash flows alone (no entry bookkeeping):
  linear ``-cs * sum_i size_i * price_i``, inverse ``cs * sum_i size_i / price_i`` (a trip
  starts and ends flat), plus, for an open trip, the position valued at the last close;
* ``pnl_funding``: the funding its position paid or received (prints at a bar's open instant
  belong to the position held into the open, prints inside a bar to the position after the
  fills at its open);
* ``pnl_fees``: trading fees and the clearance fee of a liquidation (>= 0);
* ``pnl_liquidation``: the insurance fund's cover of a liquidation's deficit (>= 0);
* ``pnl = pnl_price + pnl_funding - pnl_fees + pnl_liquidation``. Summed over a column's trips
  this is its equity change less capital added (tested on engine results).
* ``mae`` / ``mfe``: the lowest / highest running price PnL of the trip at the bars' closes
  while it is held (the result carries closes only: an intrabar extreme is not seen), <= 0 / >= 0.
* entry / exit price: the volume-weighted price of the fills that opened / closed it (inverse:
  the harmonic one, as the contracts' value); ``size``: its largest absolute position.

Summary per column: number of trips, win rate (closed trips with ``pnl > 0``), profit factor
(sum of winning / |sum of losing| closed trips' PnL; null without a loss), average trip PnL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numba import njit

TRADE_COLUMNS = ("col", "entry_bar", "exit_bar", "direction", "size", "entry_price", "exit_price", "pnl_price",
                 "pnl_funding", "pnl_fees", "pnl_liquidation", "pnl", "mae", "mfe", "liquidated", "open")

# event phases within a bar, in the engine's order (docs: the numbered steps)
_FUND_OPEN, _FILL, _FUND_IN, _CUT, _LIQ = 0, 1, 2, 3, 4


@njit(cache=True)
def _price_flow(size, price, cs, inverse):
    """Cash-flow form of a fill's price PnL contribution (settlement currency)."""
    return cs * size / price if inverse else -cs * size * price


@njit(cache=True)
def _trips_nb(ev_col, ev_bar, ev_kind, ev_size, ev_price, ev_fee, ev_amount, closes, n_cols, cs, inverse,
              out_i, out_f):
    """One pass over every column's events (sorted by column, bar, phase); writes one row per
    trip into ``out_i`` (col, entry_bar, exit_bar, direction, liquidated, open) and ``out_f``
    (size, entry_price, exit_price, pnl_price, pnl_funding, pnl_fees, pnl_liquidation, mae,
    mfe); returns the number of trips."""
    n_ev = ev_col.shape[0]
    nt = 0
    e = 0
    nbars = closes.shape[0]
    for c in range(n_cols):
        pos = 0.0
        flow = 0.0        # the trip's price cash flows so far
        fund = 0.0
        fees = 0.0
        cover = 0.0
        big = 0.0
        in_q = 0.0        # opening volume and its value (entry price)
        in_v = 0.0
        out_q = 0.0
        out_v = 0.0
        start = -1
        mae = 0.0
        mfe = 0.0
        last_bar = -1
        liq = 0
        while True:
            done = e >= n_ev or ev_col[e] != c
            bar = nbars if done else ev_bar[e]
            # the closes of the bars passed while the trip was held (running price PnL)
            if pos != 0.0:
                for b in range(max(last_bar, start), min(bar, nbars)):
                    run = flow + _price_flow(-pos, closes[b], cs, inverse)
                    mae = min(mae, run)
                    mfe = max(mfe, run)
            if done:
                break
            last_bar = bar
            k = ev_kind[e]
            if k == _FUND_OPEN or k == _FUND_IN:
                fund += ev_amount[e]
                e += 1
                continue
            d = ev_size[e]
            p = ev_price[e]
            f = ev_fee[e]
            if k == _LIQ:
                cover += ev_amount[e]
            rest = d
            if pos != 0.0 and (pos > 0.0) != (d > 0.0):
                # the part that reduces or closes the trip
                close = -pos if abs(d) >= abs(pos) else d
                share = close / d
                flow += _price_flow(close, p, cs, inverse)
                fees += f * share
                out_q += abs(close)
                out_v += abs(close) / p if inverse else abs(close) * p
                pos += close
                if k == _LIQ:
                    liq = 1
                rest = d - close
                f = f - f * share
                if pos == 0.0 or abs(pos) <= 1e-12 * max(big, 1e-300):
                    pos = 0.0
                    out_i[nt, 0] = c
                    out_i[nt, 1] = start
                    out_i[nt, 2] = bar
                    out_i[nt, 4] = liq
                    out_i[nt, 5] = 0
                    _write(out_f, nt, big, in_q, in_v, out_q, out_v, inverse, flow, fund, fees, cover, mae, mfe)
                    nt += 1
                    flow = fund = fees = cover = big = in_q = in_v = out_q = out_v = mae = mfe = 0.0
                    liq = 0
                    start = -1
            if rest != 0.0:
                if pos == 0.0:
                    start = bar
                    out_i[nt, 3] = 1 if rest > 0.0 else -1  # the trip's side, kept in its row
                flow += _price_flow(rest, p, cs, inverse)
                fees += f
                in_q += abs(rest)
                in_v += abs(rest) / p if inverse else abs(rest) * p
                pos += rest
                big = max(big, abs(pos))
            e += 1
        if pos != 0.0:
            # still open at the last bar: marked to its close
            run = flow + _price_flow(-pos, closes[nbars - 1], cs, inverse)
            out_i[nt, 0] = c
            out_i[nt, 1] = start
            out_i[nt, 2] = nbars - 1
            out_i[nt, 4] = 0
            out_i[nt, 5] = 1
            _write(out_f, nt, big, in_q, in_v, out_q, out_v, inverse, run, fund, fees, cover, min(mae, run),
                   max(mfe, run))
            out_f[nt, 2] = closes[nbars - 1]
            nt += 1
    return nt


@njit(cache=True)
def _write(out_f, nt, big, in_q, in_v, out_q, out_v, inverse, pnl_price, fund, fees, cover, mae, mfe):
    out_f[nt, 0] = big
    if inverse:
        out_f[nt, 1] = in_q / in_v if in_v > 0.0 else np.nan
        out_f[nt, 2] = out_q / out_v if out_v > 0.0 else np.nan
    else:
        out_f[nt, 1] = in_v / in_q if in_q > 0.0 else np.nan
        out_f[nt, 2] = out_v / out_q if out_q > 0.0 else np.nan
    out_f[nt, 3] = pnl_price
    out_f[nt, 4] = fund
    out_f[nt, 5] = fees
    out_f[nt, 6] = cover
    out_f[nt, 7] = mae
    out_f[nt, 8] = mfe


def round_trips(result: Any) -> pd.DataFrame:
    """Every round trip of a perpetual :class:`~backtest.result.SimResult` (module docstring),
    one row per trip with :data:`TRADE_COLUMNS` plus ``column`` (its label), ``entry_time`` /
    ``exit_time`` (bar open times, UTC) and ``holding_hours`` (entry bar open to exit bar open;
    an open trip: to the last bar's close). Sorted by column, then entry."""
    if result.kind != "perp":
        raise ValueError(f"round trips are defined for perpetual results; this one is {result.kind!r}")
    meta = result.meta
    cs = float(meta.get("contract_size", 1.0))
    inverse = meta.get("instrument") == "inverse_perp"
    closes = np.asarray(result.underlying, dtype=np.float64)
    n = closes.shape[0]
    open_ms = result.index.as_unit("ms").asi8.astype(np.int64)
    fills = result.records["fills"]
    fills = fills[(fills["status"] != 2) & (fills["size"] != 0.0)]
    fund = result.records["funding"]
    liq = result.records["liquidations"]
    parts = []
    is_cut = fills["reason"] == 1
    parts.append((fills["col"], fills["bar"], np.where(is_cut, _CUT, _FILL), fills["size"], fills["price"],
                  fills["fee"], np.zeros(len(fills))))
    at_open = fund["time"] <= open_ms[fund["bar"]]
    parts.append((fund["col"], fund["bar"], np.where(at_open, _FUND_OPEN, _FUND_IN), np.zeros(len(fund)),
                  np.ones(len(fund)), np.zeros(len(fund)), fund["amount"]))
    parts.append((liq["col"], liq["bar"], np.full(len(liq), _LIQ), -liq["size"], liq["price"], liq["clearance_fee"],
                  liq["deficit"]))
    col, bar, kind, size, price, fee, amount = (np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(7))
    order = np.lexsort((kind, bar, col))
    cap = len(order) + len(result.columns) + 1
    out_i = np.zeros((cap, 6), dtype=np.int64)
    out_f = np.zeros((cap, 9))
    nt = _trips_nb(col[order].astype(np.int64), bar[order].astype(np.int64), kind[order].astype(np.int64),
                   size[order].astype(np.float64), price[order].astype(np.float64), fee[order].astype(np.float64),
                   amount[order].astype(np.float64), closes, len(result.columns), cs, inverse, out_i, out_f)
    oi, of = out_i[:nt], out_f[:nt]
    df = pd.DataFrame({
        "col": oi[:, 0], "entry_bar": oi[:, 1], "exit_bar": oi[:, 2], "direction": oi[:, 3],
        "size": of[:, 0], "entry_price": of[:, 1], "exit_price": of[:, 2], "pnl_price": of[:, 3],
        "pnl_funding": of[:, 4], "pnl_fees": of[:, 5], "pnl_liquidation": of[:, 6],
    })
    df["pnl"] = df["pnl_price"] + df["pnl_funding"] - df["pnl_fees"] + df["pnl_liquidation"]
    df["mae"], df["mfe"] = np.minimum(of[:, 7], 0.0), np.maximum(of[:, 8], 0.0)
    df["liquidated"], df["open"] = oi[:, 4].astype(bool), oi[:, 5].astype(bool)
    from backtest.metrics import column_labels  # the report's labels (backtest.runner.labels)

    labels = np.asarray(column_labels(result), dtype=object)
    df.insert(1, "column", labels[df["col"].to_numpy()] if nt else np.array([], dtype=object))
    bar_ms = int(meta.get("bar_ms") or (open_ms[1] - open_ms[0] if n > 1 else 3_600_000))
    entry_ms = open_ms[df["entry_bar"].to_numpy()]
    exit_ms = np.where(df["open"].to_numpy(), open_ms[df["exit_bar"].to_numpy()] + bar_ms,
                       open_ms[df["exit_bar"].to_numpy()])
    df["entry_time"] = pd.to_datetime(entry_ms, unit="ms", utc=True)
    df["exit_time"] = pd.to_datetime(exit_ms, unit="ms", utc=True)
    df["holding_hours"] = (exit_ms - entry_ms) / 3_600_000
    return df.sort_values(["col", "entry_bar"], kind="stable").reset_index(drop=True)


def trade_summary(trips: pd.DataFrame, n_cols: int) -> pd.DataFrame:
    """Per column (``col`` 0..n_cols-1): ``trades`` (closed and open), ``win_rate`` and
    ``profit_factor`` over the closed trips (null when undefined), ``avg_pnl`` over all trips."""
    rows = []
    for c in range(n_cols):
        t = trips[trips["col"] == c]
        closed = t[~t["open"]]
        wins = closed["pnl"][closed["pnl"] > 0].sum()
        losses = -closed["pnl"][closed["pnl"] < 0].sum()
        rows.append({"col": c, "trades": len(t),
                     "win_rate": float((closed["pnl"] > 0).mean()) if len(closed) else None,
                     "profit_factor": float(wins / losses) if losses > 0 else None,
                     "avg_pnl": float(t["pnl"].mean()) if len(t) else None})
    return pd.DataFrame(rows)


TRADE_METRICS = ("trades", "win_rate", "profit_factor", "avg_pnl", "avg_holding_hours")


def trade_metrics(trips: pd.DataFrame, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per column label, the trade statistics of ``metrics.json`` (:data:`TRADE_METRICS`;
    settlement currency): :func:`trade_summary` plus the average holding time in hours."""
    summary = trade_summary(trips, len(labels))
    hold = trips.groupby("col")["holding_hours"].mean() if len(trips) else pd.Series(dtype=float)
    out: dict[str, dict[str, Any]] = {}
    for j, label in enumerate(labels):
        row = summary.iloc[j]
        out[label] = {"trades": int(row["trades"]),
                      "win_rate": _num(row["win_rate"]), "profit_factor": _num(row["profit_factor"]),
                      "avg_pnl": _num(row["avg_pnl"]),
                      "avg_holding_hours": _num(hold.get(j)) if j in hold.index else None}
    return out


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v)
