"""Market snapshot: contract specs and leverage tiers in the shape :mod:`backtest.market` reads.

Written to ``<root>/markets/<exchange-id>.json``::

    {"exchange": id, "source": "...", "notes": [...],
     "markets": {symbol: {symbol, id, base, quote, settle, type, linear, inverse, contractSize,
                          taker, maker, precision {amount, price}, limits {amount {min}, cost {min}},
                          liquidationFeeRate, tiers [...], tier_history [...]}}}

Tier rows: ``tier, minNotional, maxNotional, maintenanceMarginRate, maxLeverage, maintAmt``.
Tiers come from ccxt's ``fetchMarketLeverageTiers``/``fetchLeverageTiers`` where the exchange
serves them without credentials; otherwise (e.g. Binance, whose bracket endpoint is private)
the tiers of the bundled spec (``backtest/markets/<id>.json``) or of the previous snapshot are
kept, and the notes say so. Symbols already in the snapshot and not requested are kept.

Fetched tiers are refused (and the notes say why) when they cannot be notional tiers: a
maintenance rate at or above the initial rate of the tier's maximum leverage (``1/maxLeverage``,
e.g. rates quoted in percent), or an exchange in :data:`TIERS_IN_CONTRACTS`, whose tiers are
bounded by position size in contracts. The maintenance amount is ``info.cum`` (Binance) or
``info.mmDeduction`` (Bybit) when given, else Binance's continuity recursion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from backtest.data.fetch import DownloadError, Retry, call, ccxt_lineage
from backtest.data.store import Store
from backtest.data.timeutil import iso, now_ms
from backtest.market import BUNDLED_DIR, TIER_CUM, MarketSpec, MarketSpecError, TierTable

UNKNOWN_CAP = 1e18  # stands for an open-ended last tier (JSON has no infinity)

# Exchanges (ccxt class names) whose public tier endpoint bounds tiers by position size in
# contracts, which ccxt passes through as min/maxNotional: a notional table would need a price.
TIERS_IN_CONTRACTS = {
    "okx": "OKX position tiers (/api/v5/public/position-tiers) are bounded by position size in contracts "
           "(minSz/maxSz), not by notional",
}


def _tick(value: Any, mode: int) -> float | None:
    """A precision as a step size, whatever ccxt's precision mode (tick size or decimals)."""
    import ccxt

    if value is None:
        return None
    v = float(value)
    if mode == ccxt.TICK_SIZE:
        return v
    if mode == ccxt.DECIMAL_PLACES:
        return 10.0 ** (-v)
    return None  # significant digits has no fixed step


def _num(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def normalise_tiers(rows: list[dict[str, Any]], *, where: str) -> list[dict[str, Any]]:
    """ccxt tier rows -> snapshot rows, with ``maintAmt`` (from ``info.cum`` or Binance's
    continuity recursion) and an open last tier capped at 1e18; validated by
    :class:`backtest.market.TierTable`."""
    clean = []
    for i, r in enumerate(rows):
        hi = _num(r.get("maxNotional"))
        row = {**r, "maxNotional": UNKNOWN_CAP if hi is None or hi == float("inf") else hi}
        raw_info = r.get("info")
        info = raw_info if isinstance(raw_info, dict) else {}
        deduction = _num(info.get("mmDeduction"))
        if row.get("maintAmt") is None and info.get("cum") is None and deduction is not None:
            row["maintAmt"] = deduction  # Bybit: maintenance margin = notional * rate - mmDeduction
        mmr, lev = _num(r.get("maintenanceMarginRate")), _num(r.get("maxLeverage"))
        if mmr is not None and lev is not None and lev > 0 and mmr >= 1.0 / lev:
            raise MarketSpecError(
                f"{where}[{i}]: maintenanceMarginRate {mmr:g} is not below the initial margin rate "
                f"1/maxLeverage = {1.0 / lev:g}; the rates may be quoted in percent")
        clean.append(row)
    table = TierTable.from_ccxt(clean, where=where)
    out = []
    for i, r in enumerate(clean):
        out.append({
            "tier": int(r.get("tier") or i + 1),
            "minNotional": float(r["minNotional"]),
            "maxNotional": float(r["maxNotional"]),
            "maintenanceMarginRate": float(r["maintenanceMarginRate"]),
            "maxLeverage": _num(r.get("maxLeverage")),
            "maintAmt": float(table.rows[i, TIER_CUM]),
        })
    return out


def _fetch_tiers(ex: Any, symbol: str, retry: Retry,
                 on_retry: Callable[[int, BaseException, float], None] | None = None,
                 ) -> tuple[list[dict[str, Any]] | None, str, int]:
    """(rows or None, reason, requests) from ccxt, without credentials."""
    reqs = 0
    for name in ccxt_lineage(ex):
        if name in TIERS_IN_CONTRACTS:
            return None, TIERS_IN_CONTRACTS[name] + "; a notional tier table needs a price", reqs
    try:
        if ex.has.get("fetchMarketLeverageTiers"):
            reqs += 1
            rows = call(ex.fetch_market_leverage_tiers, symbol, retry=retry, what=f"{ex.id} {symbol} tiers",
                        on_retry=on_retry)
        elif ex.has.get("fetchLeverageTiers"):
            reqs += 1
            rows = call(ex.fetch_leverage_tiers, [symbol], retry=retry,
                        what=f"{ex.id} {symbol} tiers", on_retry=on_retry).get(symbol)
        else:
            return None, "the exchange offers no leverage-tier endpoint in ccxt", reqs
    except DownloadError as exc:
        return None, str(exc), reqs
    if not rows:
        return None, "the exchange returned no tiers", reqs
    return rows, "", reqs


def _bundled(exchange_id: str) -> dict[str, Any]:
    path = BUNDLED_DIR / f"{exchange_id}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def snapshot_markets(ex: Any, symbols: list[str], store: Store, *, retry: Retry = Retry(),
                     clock: Callable[[], int] = now_ms,
                     on_retry: Callable[[int, BaseException, float], None] | None = None,
                     ) -> tuple[Path, list[str], int]:
    """Write (merge) the market snapshot for ``symbols``; returns (path, notes, requests).

    Markets must be loaded. Each entry is checked with :meth:`MarketSpec.from_dict` when it
    has tiers. ``on_retry(attempt, error, delay_s)`` is called before each retry of a tier
    request (see :func:`backtest.data.fetch.call`).
    """
    import ccxt

    fetched_at = clock()
    previous = store.read_markets(ex.id) or {}
    bundled = _bundled(ex.id)
    doc_markets = dict(previous.get("markets", {}))
    notes = [n for n in previous.get("notes", []) if not any(n.startswith(s + ":") for s in symbols)]
    requests = 0
    tier_sources = set()
    for sym in symbols:
        m = ex.markets[sym]
        if not m.get("contract"):
            notes.append(f"{sym}: a {m.get('type')} market, not a contract; no spec written")
            continue
        old = doc_markets.get(sym) or bundled.get("markets", {}).get(sym) or {}
        info = m.get("info") or {}
        entry: dict[str, Any] = {
            "symbol": sym, "id": m.get("id"), "base": m.get("base"), "quote": m.get("quote"),
            "settle": m.get("settle"), "type": m.get("type"),
            "linear": bool(m.get("linear")), "inverse": bool(m.get("inverse")),
            # as reported, never defaulted: the spec check refuses a missing or non-positive size
            "contractSize": _num(m.get("contractSize")),
            "taker": _num(m.get("taker")) or 0.0, "maker": _num(m.get("maker")) or 0.0,
            "precision": {"amount": _tick((m.get("precision") or {}).get("amount"), ex.precisionMode),
                          "price": _tick((m.get("precision") or {}).get("price"), ex.precisionMode)},
            "limits": {"amount": {"min": _num(((m.get("limits") or {}).get("amount") or {}).get("min"))},
                       "cost": {"min": _num(((m.get("limits") or {}).get("cost") or {}).get("min")) or 0.0}},
        }
        lfee = _num(info.get("liquidationFee")) if isinstance(info, dict) else None
        if lfee is not None:
            entry["liquidationFeeRate"] = lfee
        elif old.get("liquidationFeeRate") is not None:
            entry["liquidationFeeRate"] = float(old["liquidationFeeRate"])
            notes.append(f"{sym}: liquidationFeeRate {old['liquidationFeeRate']} kept from the bundled/previous spec")
        else:
            entry["liquidationFeeRate"] = 0.0
            notes.append(f"{sym}: liquidationFeeRate unknown, set to 0; edit it by hand")

        rows, reason, n = _fetch_tiers(ex, sym, retry, on_retry)
        requests += n
        tiers = None
        if rows is not None:
            try:
                tiers = normalise_tiers(rows, where=f"{ex.id} {sym} tiers")
            except MarketSpecError as exc:
                reason = f"fetched tiers rejected ({exc})"
        history = list(old.get("tier_history") or [])
        if tiers is not None:
            tier_sources.add("fetchLeverageTiers")
            if history and history[-1].get("tiers") != tiers:
                # keep dated history usable: the fetched table applies from the fetch time
                if int(fetched_at) > int(history[-1].get("from", 0)):
                    history.append({"from": int(fetched_at), "from_date": iso(fetched_at)[:10], "tiers": tiers})
                else:
                    notes.append(f"{sym}: fetched tiers differ from the last dated table but the clock "
                                 f"({iso(fetched_at)}) is not after it; tier_history left as it was")
        elif old.get("tiers"):
            tiers = old["tiers"]
            tier_sources.add("bundled")
            notes.append(f"{sym}: tiers and tier_history kept from the bundled/previous spec ({reason})")
        else:
            tiers = []
            notes.append(f"{sym}: no tier table ({reason}); add 'tiers' by hand before backtesting")
        entry["tiers"] = tiers
        entry["tier_history"] = history
        if tiers:
            try:
                MarketSpec.from_dict(entry, exchange=ex.id)
            except MarketSpecError as exc:
                raise DownloadError(f"{ex.id} {sym} market snapshot is invalid: {exc}") from exc
        doc_markets[sym] = entry

    source = (f"ccxt {ccxt.__version__} fetchMarkets snapshot of {iso(fetched_at)}"
              + ("; leverage tiers from ccxt" if "fetchLeverageTiers" in tier_sources else "")
              + ("; tiers from the bundled spec" if "bundled" in tier_sources else ""))
    doc = {"exchange": ex.id, "source": source, "notes": list(dict.fromkeys(notes)),
           "markets": dict(sorted(doc_markets.items()))}
    return store.write_markets(ex.id, doc), list(dict.fromkeys(notes)), requests
