"""Movement pruning (Sanh et al. 2020): keep the weights that fine-tuning moves away from zero."""

from __future__ import annotations

import torch
from torch import nn

from .base import ScoreSparsifier
from .masks import get_mask


class MovementPruner(ScoreSparsifier):
    """Hard movement pruning: importance ``S = sum_t -W_t * dL/dW'_t`` accumulated over fine-tuning.

    ``dL/dW'`` is the gradient with respect to the *masked* weight, i.e. the straight-through gradient, so
    pruned weights keep accumulating score and can come back; for that reason their values are kept in
    the dense original (``zero_pruned = False``). Scores accumulate automatically on every backward pass
    (a gradient hook inside the mask), so the training loop is unchanged. Use it with
    :class:`GradualPruner` for the paper's cubic schedule; :meth:`step` alone prunes in one shot.
    """

    zero_pruned = False

    def __init__(self, sparsity: float, *, scope: str = "layer") -> None:
        super().__init__(sparsity, scope=scope)
        self.importance: dict[str, torch.Tensor] = {}

    def prepare(self, model: nn.Module, modules=None, *, optimizer=None) -> nn.Module:
        super().prepare(model, modules, optimizer=optimizer)
        for name, module in self.targets.items():
            score = torch.zeros_like(module.weight, dtype=torch.float32)
            self.importance[name] = score
            get_mask(module, "weight").grad_callback = self._accumulator(score)
        return model

    @staticmethod
    def _accumulator(score: torch.Tensor):
        def accumulate(weight: torch.Tensor, grad: torch.Tensor) -> None:
            # dS = -dL/dW' * W: a weight moving away from zero (gradient opposing its sign) gains score.
            score.sub_((weight * grad).float())
        return accumulate

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        return self.importance[name]

    def finalize(self) -> nn.Module:
        for module in self.targets.values():
            mask = get_mask(module, "weight")
            if mask is not None:
                mask.grad_callback = None
        return super().finalize()

    squash_mask = finalize
