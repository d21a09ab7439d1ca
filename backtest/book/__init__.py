"""Books: several perpetuals in one margin account under shared (cross) margin, isolated
positions beside them. Inputs (:class:`BookBars`), settings (:class:`BookSettings`, :class:`Leg`)
and the slow reference simulator (:func:`simulate_book_reference`) live here. There is no numba
book kernel yet: the reference simulator is the specification it will be tested against."""

from backtest.book.bars import BookBars
from backtest.book.reference import simulate_book_reference
from backtest.book.settings import (BOOK_RECORD_DTYPES, BOOK_SERIES, POSITION_SERIES, BookSettings, Intrabar,
                                    Leg)

__all__ = ["BOOK_RECORD_DTYPES", "BOOK_SERIES", "POSITION_SERIES", "BookBars", "BookSettings", "Intrabar", "Leg",
           "simulate_book_reference"]
