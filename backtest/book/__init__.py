"""Books: several positions in one margin account (issue: books of perpetuals and puts under
shared cross margin). Inputs (:class:`BookBars`), settings (:class:`BookSettings`, :class:`Leg`)
and the slow reference simulator (:func:`simulate_book_reference`) live here; the numba kernel
follows the single-instrument engine's layout."""

from backtest.book.bars import BookBars
from backtest.book.reference import simulate_book_reference
from backtest.book.settings import (BOOK_RECORD_DTYPES, BOOK_SERIES, POSITION_SERIES, BookSettings, Intrabar,
                                    Leg)

__all__ = ["BOOK_RECORD_DTYPES", "BOOK_SERIES", "POSITION_SERIES", "BookBars", "BookSettings", "Intrabar", "Leg",
           "simulate_book_reference"]
