"""Books: several perpetuals in one margin account under shared (cross) margin, isolated
positions beside them, and option legs (rolled long puts or calls, :class:`OptionLeg`). Inputs (:class:`BookBars`), settings (:class:`BookSettings`, :class:`Leg`),
the numba book kernel behind :func:`simulate_book` (a :class:`BookResult`; ``to_sim_result()``
feeds metrics and reports) and the slow reference simulator it is tested against
(:func:`simulate_book_reference`)."""

from typing import TYPE_CHECKING

from backtest.lazy import lazy_exports

if TYPE_CHECKING:  # the names, for type checkers and readers; imported on first use below
    from backtest.book.bars import BookBars
    from backtest.book.core import BookResult, check_book_inputs, simulate_book
    from backtest.book.exposure import EXPOSURE_SERIES
    from backtest.book.options import OPTION_SERIES, OptionLeg, OptionPaths, option_paths
    from backtest.book.reference import simulate_book_reference
    from backtest.book.settings import BOOK_RECORD_DTYPES, BOOK_SERIES, POSITION_SERIES, BookSettings, Intrabar, Leg

# Each public name -> the module defining it. The package imports none of them up front: a perp
# run or sweep imports this package for one settings class (its config's option fields, the
# book's intrabar modes), and the rest pulls in compiled kernels that it never calls.
_WHERE = {name: module for module, names in {
    'backtest.book.bars': ('BookBars',),
    'backtest.book.core': ('BookResult', 'check_book_inputs', 'simulate_book'),
    'backtest.book.exposure': ('EXPOSURE_SERIES',),
    'backtest.book.options': ('OPTION_SERIES', 'OptionLeg', 'OptionPaths', 'option_paths'),
    'backtest.book.reference': ('simulate_book_reference',),
    'backtest.book.settings': ('BOOK_RECORD_DTYPES', 'BOOK_SERIES', 'POSITION_SERIES', 'BookSettings', 'Intrabar', 'Leg'),
}.items() for name in names}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)


__all__ = ["BOOK_RECORD_DTYPES", "BOOK_SERIES", "EXPOSURE_SERIES", "OPTION_SERIES", "POSITION_SERIES", "BookBars", "BookResult",
           "BookSettings", "Intrabar", "Leg", "OptionLeg", "OptionPaths", "check_book_inputs", "option_paths",
           "simulate_book", "simulate_book_reference"]
