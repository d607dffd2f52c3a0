"""Dynamic sparse training: RigL (Evci et al. 2020) and SET (Mocanu et al. 2018) drop-and-grow."""

from __future__ import annotations

import torch
from torch import nn

from .base import BaseSparsifier, lowest_k_mask
from .distribution import layer_densities
from .masks import get_mask, original, zero_optimizer_state
from .schedule import cosine_update_fraction
from .static import initial_random_masks


class RigL(BaseSparsifier):
    """Every ``update_interval`` steps until ``end_step``, per layer: drop the ``k`` active weights of
    smallest ``|W|`` and grow the ``k`` inactive ones of largest dense ``|dL/dW|``, with
    ``k = f_t * n_active`` and ``f_t = alpha/2 (1 + cos(pi t / end_step))``. Per-layer sparsity is constant.

    Grown weights start at zero with zero optimizer state (so they do not perturb the function); a weight
    dropped and regrown in the same update keeps its value. The dense gradient comes from a hook inside
    the mask that is switched on only for the backward pass preceding an update, so other steps pay
    nothing. Call :meth:`step` after ``optimizer.step()``, once per training step.
    """

    def __init__(self, sparsity: float, *, end_step: int, update_interval: int = 100, alpha: float = 0.3,
                 distribution: str = "erk", seed: int = 0) -> None:
        super().__init__(sparsity)
        if update_interval < 1:
            raise ValueError(f"update_interval must be >= 1, got {update_interval}")
        cosine_update_fraction(0, alpha=alpha, end_step=end_step)  # validates alpha and end_step
        layer_densities({}, sparsity, distribution)
        self.end_step = end_step
        self.update_interval = update_interval
        self.alpha = alpha
        self.distribution = distribution
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.dense_grads: dict[str, torch.Tensor] = {}
        self.history: list[tuple[int, float, int]] = []  # (step, fraction, weights moved) per update

    def prepare(self, model: nn.Module, modules=None, *, optimizer=None) -> nn.Module:
        super().prepare(model, modules, optimizer=optimizer)
        self.apply_masks(initial_random_masks(self.targets, self.sparsity, self.distribution, self.seed))
        self._arm_capture(self.step_count + 1)
        return model

    def is_update_step(self, step: int) -> bool:
        return step % self.update_interval == 0 and step < self.end_step

    def _arm_capture(self, next_step: int) -> None:
        """Capture dense gradients during the backward of ``next_step`` only if it will update masks."""
        capture = self.needs_gradient and self.is_update_step(next_step)
        self.dense_grads = {}
        for name, module in self.targets.items():
            get_mask(module).grad_callback = self._collector(name) if capture else None

    needs_gradient = True

    def _collector(self, name: str):
        def collect(weight: torch.Tensor, grad: torch.Tensor) -> None:
            g = grad.detach()
            self.dense_grads[name] = self.dense_grads[name] + g if name in self.dense_grads else g.clone()
        return collect

    def grow_scores(self, name: str, module: nn.Module) -> torch.Tensor:
        """RigL grows where the dense gradient is largest."""
        if name not in self.dense_grads:
            raise RuntimeError(f"RigL update at step {self.step_count} found no gradient for {name!r}: call "
                               "step() once per training step, after backward() and optimizer.step()")
        return self.dense_grads[name].abs()

    def step(self) -> None:
        self._require_prepared()
        self.step_count += 1
        t = self.step_count
        if self.is_update_step(t):
            self._update(cosine_update_fraction(t, alpha=self.alpha, end_step=self.end_step))
        self._arm_capture(t + 1)

    @torch.no_grad()
    def _update(self, fraction: float) -> None:
        moved = 0
        for name, module in self.targets.items():
            keep = get_mask(module).mask
            weight = original(module)
            n_active = int(keep.sum())
            k = min(int(fraction * n_active), keep.numel() - n_active)
            if k == 0:
                continue
            # Drop: among active weights, the k smallest magnitudes (inactive ones rank below all of them).
            drop_score = torch.where(keep, weight.abs().float(), torch.full_like(weight, -1.0, dtype=torch.float))
            survivors = lowest_k_mask(drop_score, (keep.numel() - n_active) + k)
            # Grow: among everything not surviving (just-dropped included), the k highest scores.
            grow = self.grow_scores(name, module).float()
            grow = torch.where(survivors, torch.full_like(grow, float("-inf")), grow)
            grown = ~lowest_k_mask(-grow, k)
            new_keep = survivors | grown
            newly_active = new_keep & ~keep
            weight.masked_fill_(newly_active | ~new_keep, 0.0)
            keep.copy_(new_keep)
            zero_optimizer_state(self.optimizer, weight, ~newly_active & new_keep)
            moved += int(newly_active.sum())
        self.history.append((self.step_count, fraction, moved))

    def update_masks(self, sparsity: float) -> None:
        raise RuntimeError(f"{type(self).__name__} keeps each layer's sparsity fixed and updates masks in step()")


class SET(RigL):
    """Sparse Evolutionary Training: RigL's drop-by-magnitude with *random* growth (no gradient needed).

    Uses the same cosine-decayed update fraction as RigL so the two differ only in the growth criterion.
    """

    needs_gradient = False

    def grow_scores(self, name: str, module: nn.Module) -> torch.Tensor:
        return torch.rand(module.weight.shape, generator=self.generator).to(module.weight.device)
