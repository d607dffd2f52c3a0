"""Lottery tickets: iterative magnitude pruning with weight rewinding (Frankle et al. 2019, 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import BaseSparsifier, check_scope, topk_masks
from .masks import effective, get_mask, original, zero_pruned_
from .schedule import check_sparsity


class LotteryTicket(BaseSparsifier):
    """Iterative magnitude pruning (IMP) with rewinding.

    Loop: train -> :meth:`step` (prune ``prune_fraction`` of the *remaining* weights by magnitude, then
    rewind every parameter and buffer of the model to the rewind point, keeping the new mask) -> train.
    The rewind point is the state at :meth:`prepare` (iteration 0, the original lottery ticket) until
    :meth:`save_rewind_point` is called at iteration ``k`` of the first training run (rewinding, which
    is what makes tickets work beyond small networks). The matching control is :meth:`random_reinit`:
    same mask, fresh random weights. Create a fresh optimizer after each round and restart the learning
    rate schedule from iteration ``k``.
    """

    def __init__(self, *, prune_fraction: float = 0.2, scope: str = "global") -> None:
        super().__init__(0.0)
        if not 0.0 < prune_fraction < 1.0:
            raise ValueError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
        self.prune_fraction = prune_fraction
        self.scope = check_scope(scope)
        self.rewind_state: dict[str, torch.Tensor] = {}
        self.rewind_step: int | None = None

    def prepare(self, model: nn.Module, modules=None, *, optimizer=None) -> nn.Module:
        super().prepare(model, modules, optimizer=optimizer)
        self.save_rewind_point(step=0)
        return model

    def _state(self) -> dict[str, torch.Tensor]:
        # Everything but the masks themselves: weights (originals), biases, norm statistics.
        return {k: v for k, v in self.model.state_dict().items() if not k.endswith(".mask")}

    def save_rewind_point(self, step: int | None = None) -> None:
        """Remember the current parameters and buffers as the point :meth:`rewind` returns to."""
        self._require_prepared()
        self.rewind_state = {k: v.detach().clone() for k, v in self._state().items()}
        self.rewind_step = step

    def current_sparsity(self) -> float:
        """Fraction of pruned weights over all target layers."""
        masks = self.masks()
        return 1.0 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())

    def next_sparsity(self) -> float:
        """Sparsity after one more round at ``prune_fraction``."""
        return 1.0 - (1.0 - self.current_sparsity()) * (1.0 - self.prune_fraction)

    def prune(self, target_sparsity: float | None = None) -> float:
        """Magnitude-prune the trained weights to ``target_sparsity`` (default: one more round). No rewind."""
        self._require_prepared()
        target = self.next_sparsity() if target_sparsity is None else check_sparsity(target_sparsity)
        if target + 1e-12 < self.current_sparsity():
            raise ValueError(f"target sparsity {target} is below the current {self.current_sparsity():.4f}; "
                             "IMP only removes weights")
        scores = {n: effective(m).abs() for n, m in self.targets.items()}
        self.apply_masks(topk_masks(scores, target, self.scope))
        self.sparsity = target
        return self.current_sparsity()

    def rewind(self) -> None:
        """Load the rewind point into the model (masks untouched), then zero the pruned weights."""
        self._require_prepared()
        self.model.load_state_dict(self.rewind_state, strict=False)
        for module in self.targets.values():
            zero_pruned_(module)

    def step(self, target_sparsity: float | None = None) -> float:
        """One IMP round: :meth:`prune` then :meth:`rewind`. Returns the new sparsity."""
        self.step_count += 1
        sparsity = self.prune(target_sparsity)
        self.rewind()
        return sparsity

    @torch.no_grad()
    def random_reinit(self, seed: int) -> None:
        """The control: keep the mask, draw fresh weights from PyTorch's default init, reproducibly."""
        self._require_prepared()
        gen = torch.Generator().manual_seed(seed)
        for module in self.model.modules():
            if module in self.targets.values():
                w = original(module)
                _kaiming_uniform(w, gen)
                if getattr(module, "bias", None) is not None:
                    bound = 1.0 / math.sqrt(_fan_in(w)) if _fan_in(w) > 0 else 0.0
                    module.bias.copy_(torch.rand(module.bias.shape, generator=gen) * 2 * bound - bound)
                zero_pruned_(module)
            elif hasattr(module, "reset_parameters") and get_mask(module) is None:
                module.reset_parameters()


def _fan_in(w: torch.Tensor) -> int:
    return w.shape[1] * math.prod(w.shape[2:]) if w.dim() > 1 else w.shape[0]


def _kaiming_uniform(w: torch.Tensor, gen: torch.Generator) -> None:
    # Same law as nn.Linear/ConvNd.reset_parameters (kaiming_uniform with a=sqrt(5)): U(-1/sqrt(fan_in), ...).
    bound = 1.0 / math.sqrt(_fan_in(w))
    w.copy_(torch.rand(w.shape, generator=gen) * 2 * bound - bound)
