"""The kernel's folded enum constants equal the public enums they repeat."""

from backtest.engine import nb
from backtest.engine.enums import FillReason, FillStatus
from backtest.engine.settings import AfterLiquidation, CallResponse, Excess, MarginMode, PolicyKind


def test_kernel_constants_match_public_enums():
    assert nb.CROSS == MarginMode.CROSS
    assert (nb.RESP_REDUCE, nb.RESP_TOP_UP) == (CallResponse.REDUCE, CallResponse.TOP_UP)
    assert nb.AFTER_STOP == AfterLiquidation.STOP
    assert nb.EXCESS_REJECT == Excess.REJECT
    assert (nb.POL_DRAWDOWN, nb.POL_CPPI) == (PolicyKind.DRAWDOWN, PolicyKind.CPPI)
    assert (nb.ST_FILLED, nb.ST_CLIPPED, nb.ST_REJECTED) == (FillStatus.FILLED, FillStatus.CLIPPED, FillStatus.REJECTED)
    assert (nb.RS_TARGET, nb.RS_CALL) == (FillReason.TARGET, FillReason.MARGIN_CALL)
