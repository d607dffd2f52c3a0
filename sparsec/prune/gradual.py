"""Gradual pruning: drive any pruner's sparsity along the cubic schedule while training."""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import BaseSparsifier
from .schedule import CubicSchedule


class GradualPruner:
    """Wrap a pruner (magnitude, N:M, block, channel, movement) and ramp it per Zhu & Gupta (2017).

    Call :meth:`step` once per training step, after ``optimizer.step()``. Between ``start_step`` and
    ``end_step`` the wrapped pruner's masks are recomputed every ``frequency`` steps for the sparsity
    ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))**3``; the last update lands exactly on ``end_step``
    so the final sparsity is the wrapped pruner's target.
    """

    def __init__(self, pruner: BaseSparsifier, *, start_step: int, end_step: int, frequency: int = 1,
                 initial_sparsity: float = 0.0) -> None:
        if not isinstance(pruner, BaseSparsifier):
            raise TypeError(f"GradualPruner wraps a sparsec pruner, got {type(pruner).__name__}")
        if frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.pruner = pruner
        self.schedule = CubicSchedule(final=pruner.sparsity, start_step=start_step, end_step=end_step,
                                      initial=initial_sparsity)
        self.frequency = frequency
        self.step_count = 0
        self.current_sparsity = 0.0

    def prepare(self, model: nn.Module, modules=None, **kwargs: Any) -> nn.Module:
        """Same arguments as the wrapped pruner's ``prepare`` (e.g. ``optimizer=``, ``example_inputs=``)."""
        return self.pruner.prepare(model, modules, **kwargs)

    def step(self) -> None:
        """Advance one training step; update masks when the schedule says so."""
        self.step_count += 1
        t, s = self.step_count, self.schedule
        if t < s.start_step or t > s.end_step:
            return
        if (t - s.start_step) % self.frequency == 0 or t == s.end_step:
            self.current_sparsity = s(t)
            self.pruner.update_masks(self.current_sparsity)

    def masks(self):
        return self.pruner.masks()

    def finalize(self) -> nn.Module:
        return self.pruner.finalize()

    squash_mask = finalize
