"""One-shot magnitude pruning, layer-wise or global."""

from __future__ import annotations

import torch
from torch import nn

from .base import ScoreSparsifier, check_scope, topk_masks
from .masks import effective
from .schedule import check_sparsity


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Functional form: keep-masks dropping the ``round(sparsity * n)`` smallest ``|w|``."""
    check_sparsity(sparsity)
    check_scope(scope)
    return topk_masks({n: w.detach().abs() for n, w in weights.items()}, sparsity, scope)


class MagnitudePruner(ScoreSparsifier):
    """Prune the weights of smallest ``|W|`` (``scope="layer"``: per layer; ``"global"``: one threshold).

    Scores are taken on the effective (masked) weights, so repeated calls are monotone: a pruned weight
    scores 0 and stays pruned, which is what a gradual schedule relies on.
    """

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        return effective(module, "weight").abs()
