"""The book's beta-weighted (BTC-equivalent) exposure per bar, derived from the positions'
notionals after a run (the kernel's wrapper and the reference both call :func:`beta_exposure`:
one definition).

``B_t = sum_i beta_i,t * N_i,t``: each position's signed notional at the close (settlement
currency; an option leg's is its delta-equivalent notional, ``q * delta * S``, so an option adds
its delta times its underlying's beta) times the beta of its instrument (an option leg: of its
underlying) to the benchmark. Reported as

* ``beta_exposure``: ``B_t / equity_t``, the BTC-equivalent exposure as a multiple of equity
  (signed; NaN where equity <= 0);
* ``beta_exposure_coin``: ``B_t`` in units of the benchmark's coin, ``B_t * usd_t / S_bench,t``
  (``usd_t``: USD per unit of the settlement currency; ``S_bench``: the benchmark's mark close).

The betas are an input (``simulate_book(betas=...)``): the runner passes the rolling OLS beta
that the beta-weighted basket strategy sizes with (``strategies.book_strategies.betas``), so that
the series shows what the strategy aimed at. A held position whose beta is NaN (a beta still
warming up) makes the bar's exposure NaN: nothing is filled in.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from backtest.engine.bars import EngineInputError

EXPOSURE_SERIES = ("beta_exposure", "beta_exposure_coin")


def book_betas(betas: Any, n: int, symbols: Sequence[str]) -> np.ndarray:
    """The betas as float64 (n, K): a (K,) array (constant betas), a (n, K) array, or a dict
    ``{symbol: beta or (n,) array}`` naming every instrument."""
    kk = len(symbols)
    if isinstance(betas, dict):
        missing = [s for s in symbols if s not in betas]
        extra = [s for s in betas if s not in symbols]
        if missing or extra:
            raise EngineInputError(f"betas names {sorted(map(str, betas))} but the book holds {list(symbols)} "
                                   f"(missing {missing}, unknown {extra}); give one beta per instrument of the book")
        cols = []
        for s in symbols:
            v = np.asarray(betas[s], dtype=np.float64)
            if v.ndim == 0:
                v = np.full(n, float(v))
            if v.shape != (n,):
                raise EngineInputError(f"betas[{s!r}] has shape {v.shape}; give a number or one beta per bar ({n},)")
            cols.append(v)
        arr = np.column_stack(cols) if cols else np.zeros((n, 0))
    else:
        arr = np.asarray(betas, dtype=np.float64)
        if arr.ndim == 1:
            arr = np.broadcast_to(arr, (n, arr.shape[0]))
        if arr.shape != (n, kk):
            raise EngineInputError(f"betas has shape {np.shape(betas)} but the book has {n} bars and {kk} instruments "
                                   f"{list(symbols)}; give ({kk},) constant betas or ({n}, {kk}) betas per bar")
    if np.isinf(arr).any():
        t, k = (int(x) for x in np.argwhere(np.isinf(arr))[0])
        raise EngineInputError(f"betas is infinite at bar {t}, instrument {symbols[k]}; give a finite beta "
                               "(NaN where it is unknown)")
    return np.ascontiguousarray(arr, dtype=np.float64)


def beta_exposure(notional: np.ndarray, equity: np.ndarray, betas: np.ndarray, option_k: np.ndarray,
                  bench_close: np.ndarray, price_usd: np.ndarray) -> dict[str, np.ndarray]:
    """The beta-weighted exposure series (module docstring).

    Parameters
    ----------
    notional : float64 (n, K + J, m): signed notional at the close, settlement currency (the
        option rows' delta-equivalent notional filled by ``option_outputs``; in a coin book
        ``q * delta`` coins, the unit of its perpetuals' notional).
    equity : float64 (n, m), settlement currency.
    betas : float64 (n, K) (:func:`book_betas`).
    option_k : int64 (J,): each option leg's underlying instrument.
    bench_close : float64 (n,): the benchmark's mark close (USD per coin).
    price_usd : float64 (n,): USD per unit of the settlement currency.

    Returns
    -------
    ``beta_exposure`` (x equity) and ``beta_exposure_coin`` (benchmark coins), float64 (n, m).
    """
    kk = betas.shape[1]
    option_k = np.asarray(option_k, dtype=np.int64)
    if notional.shape[1] != kk + option_k.shape[0]:
        raise EngineInputError(f"notional has {notional.shape[1]} rows for {kk} instruments and "
                               f"{option_k.shape[0]} option legs")
    beta_rows = np.concatenate([betas, betas[:, option_k]], axis=1)  # (n, K + J): a leg takes its underlying's
    # a flat position contributes 0 whatever its beta; a held one with an unknown beta: NaN
    terms = np.where(notional != 0.0, beta_rows[:, :, None] * notional, 0.0)
    b = terms.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_equity = np.where(equity > 0.0, b / equity, np.nan)
        coin = b * (price_usd / bench_close)[:, None]
    return {"beta_exposure": per_equity, "beta_exposure_coin": coin}
