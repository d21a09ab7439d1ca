"""Books: several perpetuals in one margin account under shared (cross) margin, isolated
positions beside them, and option legs (rolled long puts or calls, :class:`OptionLeg`). Inputs (:class:`BookBars`), settings (:class:`BookSettings`, :class:`Leg`),
the numba book kernel behind :func:`simulate_book` (a :class:`BookResult`; ``to_sim_result()``
feeds metrics and reports) and the slow reference simulator it is tested against
(:func:`simulate_book_reference`)."""

from backtest.book.bars import BookBars
from backtest.book.core import BookResult, check_book_inputs, simulate_book
from backtest.book.exposure import EXPOSURE_SERIES
from backtest.book.options import OPTION_SERIES, OptionLeg, OptionPaths, option_paths
from backtest.book.reference import simulate_book_reference
from backtest.book.settings import (BOOK_RECORD_DTYPES, BOOK_SERIES, POSITION_SERIES, BookSettings, Intrabar,
                                    Leg)

__all__ = ["BOOK_RECORD_DTYPES", "BOOK_SERIES", "EXPOSURE_SERIES", "OPTION_SERIES", "POSITION_SERIES", "BookBars", "BookResult",
           "BookSettings", "Intrabar", "Leg", "OptionLeg", "OptionPaths", "check_book_inputs", "option_paths",
           "simulate_book", "simulate_book_reference"]
