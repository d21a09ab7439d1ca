"""Equity-path policies, computed inside the engine loop (see
:class:`backtest.engine.settings.Policy` for the exact per-bar formulas). These models only
translate a named parameter set into the engine's Policy fields, so a user picks them by name
like the precomputed policies.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field, StrictBool

from strategies.policies.base import InLoop, register_policy


@register_policy
class Drawdown(InLoop):
    """``drawdown(max_drawdown)``: de-lever as the column's drawdown grows.

    Engine: ``dd = 1 - E / peak(E)``; factor = ``clip(1 - dd / max_drawdown, floor, 1)``;
    the target is ``signal * leverage * factor``, then ``|target| <= max_exposure``.

    Attributes
    ----------
    max_drawdown : drawdown (fraction of the peak) at which the factor reaches ``floor``, (0, 1].
    floor : smallest factor kept at or beyond ``max_drawdown`` (a "risk floor"), [0, 1).
    leverage : exposure multiple at zero drawdown (> 0).
    max_exposure : cap on |target| after the factor (> 0; inf = none).
    """

    name: ClassVar[str] = "drawdown"
    positional: ClassVar[tuple[str, ...]] = ("max_drawdown",)
    max_drawdown: float = Field(0.3, gt=0, le=1)
    floor: float = Field(0.0, ge=0, lt=1)
    leverage: float = Field(1.0, gt=0)
    max_exposure: float = Field(math.inf, gt=0, allow_inf_nan=True)

    def engine_fields(self) -> dict[str, Any]:
        return {"kind": "drawdown", "max_drawdown": self.max_drawdown, "floor": self.floor,
                "max_exposure": self.max_exposure}

    def target_scale(self) -> float:
        return self.leverage


@register_policy
class CPPI(InLoop):
    """``cppi(multiplier,floor)``: constant proportion portfolio insurance on the short.

    Engine: floor value ``F = floor * (peak(E) if ratchet else initial_capital)``; factor =
    ``multiplier * max(E - F, 0) / E``; the target is ``signal * factor`` (the signal gives the
    direction, normally +-1), then ``|target| <= max_exposure``.

    Attributes
    ----------
    multiplier : cushion multiplier m (> 0); a short loses the cushion on a rise of 1/m within
        one rebalance (gap risk), so m <= 5-10 for hourly crypto bars.
    floor : protected fraction of capital (or of the peak when ratcheting), [0, 1).
    ratchet : raise the floor with the equity peak (TIPP) instead of fixing it at the start;
        ``True`` or ``False`` (a label writes ``ratchet=true``; a number is refused).
    max_exposure : cap on |target| (> 0; inf = none).
    """

    name: ClassVar[str] = "cppi"
    positional: ClassVar[tuple[str, ...]] = ("multiplier", "floor")
    multiplier: float = Field(3.0, gt=0)
    floor: float = Field(0.8, ge=0, lt=1)
    ratchet: StrictBool = False
    max_exposure: float = Field(5.0, gt=0, allow_inf_nan=True)

    def engine_fields(self) -> dict[str, Any]:
        return {"kind": "cppi", "multiplier": self.multiplier, "floor": self.floor,
                "ratchet": self.ratchet, "max_exposure": self.max_exposure}
