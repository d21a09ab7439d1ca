"""Calls into ccxt with bounded retries, and the exchange-capability checks of the downloader.

Retried (exponential backoff): :class:`ccxt.NetworkError` and its subclasses
``RateLimitExceeded``, ``DDoSProtection``, ``RequestTimeout``, ``ExchangeNotAvailable``.
Everything else ccxt raises (``BadSymbol``, ``NotSupported``, ``AuthenticationError``, other
``ExchangeError``) is permanent and surfaces at once as a :class:`DownloadError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

# ccxt method and exchange.has key per dataset kind
HAS_KEY = {
    "ohlcv": "fetchOHLCV",
    "mark": "fetchMarkOHLCV",
    "index": "fetchIndexOHLCV",
    "funding": "fetchFundingRateHistory",
}


# Page size where ccxt declares none (e.g. funding history everywhere in ccxt 4.5): small enough
# for every supported endpoint (OKX funding history serves at most 100 prints a page), and sent
# explicitly so that the downloader can tell a full page from a complete one.
DEFAULT_PAGE_LIMIT = 100

# ccxt maps the unified ``until`` to the endpoint's upper bound (Binance ``endTime``, Bybit
# ``end``/``endTime``, OKX candles ``after``) except where listed here: (ccxt exchange class,
# kind) -> (raw parameter, ms added to the inclusive ``until``). Facts about ccxt 4.5, kept as data.
RAW_UNTIL: dict[tuple[str, str], tuple[str, int]] = {
    # okx.fetch_funding_rate_history sends only 'before'; OKX's 'after' returns the prints
    # earlier than the given fundingTime (exclusive), newest first
    ("okx", "funding"): ("after", 1),
}


def ccxt_lineage(exchange: Any) -> set[str]:
    """Names of the ccxt exchange classes ``exchange`` derives from (``myokx`` -> also ``okx``)."""
    return {c.__name__ for c in type(exchange).__mro__}


def until_params(exchange: Any, kind: str, until: int) -> dict[str, Any]:
    """Request parameters that bound a page of ``kind`` above at ``until`` (ms, inclusive)."""
    for name in ccxt_lineage(exchange):
        raw = RAW_UNTIL.get((name, kind))
        if raw is not None:
            return {raw[0]: int(until) + raw[1]}
    return {"until": int(until)}


class DownloadError(RuntimeError):
    """A download failed; the message is one line naming the dataset, the cause and the fix.

    ``backtest download`` exits with code 1 for it (the exchange, the network or the machine
    failed), or 2 for a :class:`DownloadInputError`.
    """


class DownloadInputError(DownloadError):
    """The request cannot work as given (unknown exchange, symbol, kind or timeframe, a bad
    date, a kind the exchange does not offer, an unusable data folder): the user must change
    it. ``backtest download`` exits with code 2, as for every invalid input."""


@dataclass(frozen=True)
class Retry:
    """Retry policy for transient exchange errors.

    Attempt ``k`` (1-based) that fails with a transient error waits
    ``min(max_delay, base_delay * 2**(k-1))`` seconds before the next; after ``attempts``
    failures the last error is raised as :class:`DownloadError`.

    ``sleep`` is injectable so tests run without waiting.
    """

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if int(self.attempts) < 1:
            raise ValueError(f"Retry.attempts is {self.attempts}; it must be >= 1")
        if not (self.base_delay >= 0 and self.max_delay >= 0):
            raise ValueError("Retry.base_delay and Retry.max_delay must be >= 0 seconds")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1))


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``ExcType: first line of the message``, shortened to ``limit`` characters."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def call(fn: Callable[..., Any], *args: Any, retry: Retry, what: str,
         on_retry: Callable[[int, BaseException, float], None] | None = None, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)``, retrying transient ccxt errors per ``retry``.

    Raises
    ------
    DownloadError
        On a permanent ccxt error, or when the attempts are used up; ``what`` names the request.
    """
    import ccxt

    for attempt in range(1, int(retry.attempts) + 1):
        try:
            return fn(*args, **kwargs)
        except ccxt.NetworkError as exc:
            if attempt >= retry.attempts:
                raise DownloadError(
                    f"{what}: gave up after {attempt} attempts ({one_line(exc)}); "
                    "check the connection or retry later (the store keeps what was fetched)") from exc
            delay = retry.delay(attempt)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            retry.sleep(delay)
        except ccxt.BadSymbol as exc:
            raise DownloadError(f"{what}: the exchange rejected the symbol ({one_line(exc)})") from exc
        except ccxt.BaseError as exc:
            raise DownloadError(f"{what}: {one_line(exc)}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def check_capability(exchange: Any, kind: str, symbol: str) -> None:
    """Raise :class:`DownloadInputError` unless ``exchange.has`` offers the kind's endpoint and the
    market can have it (mark and index candles need a contract, funding a perpetual swap).

    Mark and index candles are only taken from ``fetchMarkOHLCV``/``fetchIndexOHLCV``:
    sending ``{'price': 'mark'}`` to an exchange that does not declare them may silently
    return trade prices.
    """
    key = HAS_KEY[kind]
    if not exchange.has.get(key):
        raise DownloadInputError(
            f"{exchange.id} {symbol} {kind}: the exchange does not offer {key} "
            f"(ccxt exchange.has[{key!r}] is {exchange.has.get(key)!r}); drop '-k {kind}' for this exchange")
    market = exchange.markets[symbol]
    if kind in ("mark", "index") and not market.get("contract"):
        # ccxt answers some spot markets' price='mark' with trade candles (e.g. bybit)
        raise DownloadInputError(
            f"{exchange.id} {symbol} {kind}: the market is {market.get('type')!r}; mark and index candles exist "
            f"only for contracts; drop '-k {kind}' or pick a contract symbol such as BTC/USDT:USDT")
    if kind == "funding" and not market.get("swap"):
        raise DownloadInputError(
            f"{exchange.id} {symbol} funding: the market is {market.get('type')!r}, funding exists only for "
            "perpetual swaps; drop '-k funding' or pick a swap symbol such as BTC/USDT:USDT")


def check_symbol(exchange: Any, symbol: str) -> None:
    """Raise :class:`DownloadInputError` naming close matches if ``symbol`` is not a market."""
    if symbol in exchange.markets:
        return
    base = symbol.split("/")[0].upper()
    close = sorted(s for s in exchange.markets if s.split("/")[0].upper() == base)[:8]
    hint = f"; markets with base {base}: {', '.join(close)}" if close else ""
    raise DownloadInputError(f"{exchange.id}: no market {symbol!r} (ccxt BadSymbol){hint}")


def check_timeframe(exchange: Any, timeframe: str) -> None:
    tfs = getattr(exchange, "timeframes", None) or {}
    if tfs and timeframe not in tfs:
        raise DownloadInputError(
            f"{exchange.id}: timeframe {timeframe!r} is not offered; choose one of {', '.join(tfs)}")


def page_limit(exchange: Any, market: dict[str, Any], kind: str) -> int | None:
    """Largest page size ccxt declares for this market and kind (``exchange.features``), or None."""
    feats = getattr(exchange, "features", None) or {}
    node = feats.get(market.get("type") or "", {})
    if isinstance(node, dict) and market.get("contract"):
        sub = "linear" if market.get("linear") else "inverse"
        node = node.get(sub, node) if isinstance(node.get(sub), dict) else node
    if not isinstance(node, dict):
        return None
    spec = node.get(HAS_KEY[kind]) if kind == "funding" else node.get("fetchOHLCV")
    if not isinstance(spec, dict):
        return None
    value = spec.get(kind) if kind in ("mark", "index") and spec.get(kind) else spec.get("limit")
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None
