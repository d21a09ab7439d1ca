"""Time helpers of the data layer: ccxt timeframe strings, user-given instants, ISO output.

Kept free of ccxt and pandas so that ``backtest download --help`` stays fast.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import overload

_UNIT_MS = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "M": 30 * 86_400_000,  # ccxt's nominal month
    "y": 365 * 86_400_000,  # ccxt's nominal year
}
# Calendar timeframes whose real length varies; their ms value is ccxt's nominal one.
CALENDAR_UNITS = ("M", "y")
_TF_RE = re.compile(r"^([1-9][0-9]*)([smhdwMy])$")


def parse_timeframe(timeframe: str) -> int:
    """Length of a ccxt timeframe string in milliseconds (``'1h'`` -> 3_600_000).

    Months and years use ccxt's nominal 30 and 365 days.

    Raises
    ------
    ValueError
        If the string is not ``<positive int><unit>`` with unit one of s m h d w M y.
    """
    m = _TF_RE.match(str(timeframe))
    if m is None:
        raise ValueError(
            f"timeframe {timeframe!r} is not a ccxt timeframe; use e.g. '1m', '15m', '1h', '4h', '1d', '1w'")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def is_calendar(timeframe: str) -> bool:
    """True for month/year timeframes, whose bars do not all have the same length."""
    parse_timeframe(timeframe)
    return timeframe[-1] in CALENDAR_UNITS


@overload
def parse_time(value: None, *, name: str = "time") -> None: ...
@overload
def parse_time(value: str | int | float | datetime, *, name: str = "time") -> int: ...
def parse_time(value: str | int | float | datetime | None, *, name: str = "time") -> int | None:
    """Parse a user-given instant into int64 milliseconds UTC.

    Accepts ``None`` (returned as is), an integer number of milliseconds (int or digit
    string), an ISO date or date-time (``2021-01-01``, ``2021-01-01T08:00``,
    ``2021-01-01T08:00:00Z``; a naive value is taken as UTC), a ``datetime`` or a pandas
    ``Timestamp``.

    Raises
    ------
    ValueError
        Naming ``name`` and the accepted formats.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not a time")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or int(value) != value:
            raise ValueError(f"{name}: {value!r} is not a whole number of milliseconds")
        return int(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return int(round(dt.timestamp() * 1000))
    text = str(value).strip()
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(
            f"{name}: {value!r} is neither an ISO date/time (2021-01-01, 2021-01-01T08:00:00Z) "
            "nor milliseconds since the epoch") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def iso(ms: int | None) -> str:
    """ISO 8601 UTC string of a millisecond timestamp (``2021-01-01T00:00:00+00:00``)."""
    if ms is None:
        return "-"
    ms = int(ms)
    try:
        dt = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        # never let an error message crash on the bad value it reports
        return f"{ms} ms (outside the calendar)"
    out = dt.isoformat()
    if ms % 1000:
        out = out.replace("+00:00", f".{ms % 1000:03d}+00:00")
    return out


def now_ms() -> int:
    """The current time in milliseconds UTC."""
    return int(datetime.now(tz=timezone.utc).timestamp() * 1000)


def ms_index(ms, name: str | None = "time"):
    """UTC ``DatetimeIndex`` of millisecond timestamps, in the microsecond unit that
    ``pd.to_datetime(ms, unit="ms", utc=True)`` gives, built from the integers directly (ten
    times faster on a year of minute bars). pandas is imported here, not at module level."""
    import numpy as np
    import pandas as pd

    us = np.asarray(ms, dtype=np.int64) * 1000
    return pd.DatetimeIndex(us.view("datetime64[us]"), dtype="datetime64[us, UTC]", name=name)
