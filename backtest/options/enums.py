"""Int enums, series order and record dtypes of the put simulator (readable by numba)."""

from __future__ import annotations

import numpy as np


class RollReason:
    INITIAL = 0      # first purchase at the start bar
    SCHEDULED = 1    # the held put expired and was settled
    EARLY_DELTA = 2  # |delta| of the held put reached roll_delta
    EARLY_DTE = 3    # days to expiry fell to roll_dte
    ENTRY = 4        # the hold signal turned on while flat (not the first purchase)
    EXIT = 5         # the hold signal turned off: the put is sold, nothing bought
    names = ("initial", "scheduled", "early_delta", "early_dte", "entry", "exit")


class StrikeMode:
    MONEYNESS = 0
    DELTA = 1
    names = {"moneyness": 0, "delta": 1}


class SizeMode:
    NOTIONAL = 0
    BUDGET = 1
    names = {"notional": 0, "budget": 1}


class Purpose:
    DIRECTIONAL = 0  # puts alone
    PROTECTIVE = 1   # puts on top of a held long position in the underlying (its P&L is in equity)
    names = {"directional": 0, "protective": 1}


class VolSource:
    AUTO = 0
    IV = 1
    EWMA = 2
    names = {"auto": 0, "iv": 1, "ewma": 2}


class KernelError:
    """Status codes the kernel returns instead of raising (numba cannot format messages)."""
    OK = 0
    VOL = 1          # volatility missing or <= 0 at a bar after the start
    NO_EXPIRY = 2    # no expiry far enough after the bar in the schedule
    NO_STRIKE = 3    # the strike grid yields no strike > 0
    DELTA_ABOVE_ROLL = 4  # a newly bought put already has |delta| >= roll_delta


# Series the kernel writes, in this order (float64 (n_bars, n_cols), valued at the bar close).
SERIES = (
    "equity", "equity_usd", "position", "notional", "leverage", "cum_funding", "cum_fees",
    "capital_added", "delta", "gamma", "vega", "theta", "delta_exposure", "account_delta",
    "premium_paid", "cum_received", "option_value", "strike", "days_to_expiry", "put_vol",
    "atm_vol",
)
# Row of each series in the kernel's output array (kept in SERIES order; a test checks it).
(EQUITY, EQUITY_USD, POSITION, NOTIONAL, LEVERAGE, CUM_FUNDING, CUM_FEES, CAPITAL_ADDED, DELTA,
 GAMMA, VEGA, THETA, DELTA_EXPOSURE, ACCOUNT_DELTA, PREMIUM_PAID, CUM_RECEIVED, OPTION_VALUE,
 STRIKE, DAYS_TO_EXPIRY, PUT_VOL, ATM_VOL) = range(21)

roll_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64),
    ("reason", np.int64),          # RollReason
    ("expiry", np.int64),          # expiry of the bought put, ms UTC (-1 for an exit: nothing bought)
    ("strike", np.float64),        # USD
    ("contracts", np.float64),     # bought (1 contract = 1 coin of underlying)
    ("premium", np.float64),       # total paid incl. slippage, settlement currency
    ("fee", np.float64),           # total trading fee of the purchase, settlement currency
    ("price", np.float64),         # underlying price at the roll (USD)
    ("forward", np.float64),       # forward used for pricing (USD)
    ("vol", np.float64),           # skewed vol of the bought strike (fraction)
    ("delta", np.float64),         # Black-Scholes delta per contract at purchase
    ("clipped", np.int64),         # 1 if the size was cut to what the cash could pay
    ("sold_contracts", np.float64),  # early roll: contracts of the old put sold (0 otherwise)
    ("sale_proceeds", np.float64),   # early roll: total received, settlement currency
    ("sale_fee", np.float64),        # early roll: total fee of the sale
], align=True)

settlement_dt = np.dtype([
    ("bar", np.int64), ("col", np.int64),
    ("expiry", np.int64),            # ms UTC
    ("strike", np.float64),          # USD
    ("settle_price", np.float64),    # underlying close of the settlement bar (USD)
    ("contracts", np.float64),
    ("payoff_per_contract", np.float64),  # max(K - S_T, 0) (USD) or that / S_T (coin)
    ("payoff", np.float64),          # total, settlement currency, before the delivery fee
    ("fee", np.float64),             # total delivery fee, settlement currency
], align=True)

# Column layout of the kernel's raw record buffers (ints, floats) -> the dtypes above.
ROLL_INT = ("bar", "col", "reason", "expiry", "clipped")
ROLL_FLOAT = ("strike", "contracts", "premium", "fee", "price", "forward", "vol", "delta",
              "sold_contracts", "sale_proceeds", "sale_fee")
SETTLE_INT = ("bar", "col", "expiry")
SETTLE_FLOAT = ("strike", "settle_price", "contracts", "payoff_per_contract", "payoff", "fee")


def to_records(ints: np.ndarray, floats: np.ndarray, int_names: tuple, float_names: tuple,
               dtype: np.dtype) -> np.ndarray:
    """Raw (k, a) int and (k, b) float buffers -> structured array (kernel order: by column, then bar)."""
    rec = np.empty(ints.shape[0], dtype=dtype)
    for j, name in enumerate(int_names):
        rec[name] = ints[:, j]
    for j, name in enumerate(float_names):
        rec[name] = floats[:, j]
    return rec
