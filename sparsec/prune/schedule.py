"""Sparsity schedules: the cubic ramp of Zhu & Gupta (2017) and RigL's cosine-decayed update fraction."""

from __future__ import annotations

import math
from dataclasses import dataclass


def check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    """Validate a sparsity level: a number in [0, 1). 1 would delete a layer entirely, so it is refused."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"{what} must be a float in [0, 1), got {type(sparsity).__name__}")
    if not (0.0 <= float(sparsity) < 1.0) or math.isnan(sparsity):
        raise ValueError(f"{what} must be in [0, 1), got {sparsity}")
    return float(sparsity)


def cubic_sparsity(step: int, *, initial: float, final: float, start_step: int, end_step: int) -> float:
    """Zhu & Gupta (2017), eq. 1: ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3``.

    Before ``start_step`` the sparsity is ``initial``; from ``end_step`` on it is ``final``. The ramp
    prunes fast while the network has many redundant weights and slowly near the target.
    """
    check_sparsity(initial, "initial sparsity")
    check_sparsity(final, "final sparsity")
    if end_step <= start_step:
        raise ValueError(f"end_step ({end_step}) must be greater than start_step ({start_step})")
    if step <= start_step:
        return initial
    if step >= end_step:
        return final
    progress = (step - start_step) / (end_step - start_step)
    return final + (initial - final) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class CubicSchedule:
    """Callable form of :func:`cubic_sparsity` (``schedule(step) -> sparsity``)."""

    final: float
    start_step: int
    end_step: int
    initial: float = 0.0

    def __post_init__(self) -> None:
        cubic_sparsity(self.start_step, initial=self.initial, final=self.final, start_step=self.start_step,
                       end_step=self.end_step)

    def __call__(self, step: int) -> float:
        return cubic_sparsity(step, initial=self.initial, final=self.final, start_step=self.start_step,
                              end_step=self.end_step)


def cosine_update_fraction(step: int, *, alpha: float, end_step: int) -> float:
    """RigL's drop/grow fraction (Evci et al. 2020): ``alpha / 2 * (1 + cos(pi * t / T_end))``, 0 after T_end."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if end_step <= 0:
        raise ValueError(f"end_step must be positive, got {end_step}")
    if step >= end_step:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * step / end_step))
