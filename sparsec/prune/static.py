"""Static sparse training: a fixed (random or given) mask from the first step to the last."""

from __future__ import annotations

import torch
from torch import nn

from .base import BaseSparsifier
from .distribution import layer_densities, random_mask
from .masks import get_mask, original, zero_optimizer_state, zero_pruned_


class StaticSparsifier(BaseSparsifier):
    """Fixed mask; masked weights are zero, receive zero gradient, and have zero optimizer state.

    The mask is random with per-layer densities from ``distribution`` ("uniform" or "erk") unless
    ``masks`` (``{module_name: bool tensor}``) is given, e.g. a lottery ticket's. :meth:`step` (call it
    after ``optimizer.step()``) re-zeroes the pruned originals and their optimizer state: with the
    parametrization their gradient is exactly zero, so this only guards against outside writes (a
    ``load_state_dict``, an optimizer with a non-zero-preserving update) and costs one multiply.
    """

    def __init__(self, sparsity: float, *, distribution: str = "uniform", seed: int = 0,
                 masks: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(sparsity)
        self.distribution = distribution
        self.seed = seed
        self.initial_masks = masks
        layer_densities({}, sparsity, distribution)  # validates the distribution name early

    def prepare(self, model: nn.Module, modules=None, *, optimizer=None) -> nn.Module:
        if self.initial_masks is not None and modules is None:
            modules = list(self.initial_masks)
        super().prepare(model, modules, optimizer=optimizer)
        if self.initial_masks is not None:
            masks = {n: self.initial_masks[n] for n in self.targets}
        else:
            masks = initial_random_masks(self.targets, self.sparsity, self.distribution, self.seed)
        self.apply_masks(masks)
        return model

    def step(self) -> None:
        self._require_prepared()
        self.step_count += 1
        for module in self.targets.values():
            zero_pruned_(module)
            zero_optimizer_state(self.optimizer, original(module), get_mask(module).mask)

    def update_masks(self, sparsity: float) -> None:
        raise RuntimeError("StaticSparsifier keeps its mask fixed; use RigL/SET or a GradualPruner instead")


def initial_random_masks(targets: dict[str, nn.Module], sparsity: float, distribution: str,
                         seed: int) -> dict[str, torch.Tensor]:
    """Random keep-masks with ``distribution``'s per-layer densities, reproducible from ``seed``."""
    shapes = {n: tuple(m.weight.shape) for n, m in targets.items()}
    densities = layer_densities(shapes, sparsity, distribution)
    gen = torch.Generator().manual_seed(seed)
    return {n: random_mask(shapes[n], densities[n], gen).to(targets[n].weight.device) for n in targets}
