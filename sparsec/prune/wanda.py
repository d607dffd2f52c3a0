"""Wanda (Sun et al. 2023): prune by |W_ij| * ||X_j||_2, compared within each output row (or N:M group)."""

from __future__ import annotations

import torch
from torch import nn

from .base import lowest_k_mask
from .calib import as_batches, call_order, collect, parse_pattern, prunable, weight_2d
from .finalize import finalize
from .masks import attach_mask, set_mask, zero_pruned_
from .nm import nm_mask


def wanda_scores(weight: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """Wanda's metric |W| * ||X_j|| for a [out, in] weight and per-input sums of squares of X."""
    return weight.detach().abs() * sq_norms.sqrt().to(weight.dtype).unsqueeze(0)


def score_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """Keep-mask of a [out, in] score matrix: N:M groups, or round(sparsity*in) lowest per row."""
    if nm is not None:
        return nm_mask(scores, nm[0], nm[1])
    k = int(round(sparsity * scores.shape[1]))
    return torch.stack([lowest_k_mask(row, k) for row in scores])


class OneShotPruner:
    """prepare(model, calib_batches=...) -> step() -> finalize(): calibration-based one-shot pruning.

    ``sequential=True`` prunes layer by layer in call order, recomputing each layer's input statistics
    through the already pruned earlier layers (as in the papers); otherwise all from the dense model.
    """

    def __init__(self, sparsity: float | None = None, *, pattern: str | None = None, sequential: bool = False):
        self.sparsity, self.nm = parse_pattern(sparsity, pattern)
        self.sequential = bool(sequential)
        self.model: nn.Module | None = None

    def prepare(self, model: nn.Module, modules=None, *, calib_batches) -> nn.Module:
        """Choose the layers (default: all Linear/Conv1D but lm_head and tied weights), attach masks."""
        self.batches = as_batches(calib_batches)
        self.targets = prunable(model, modules)
        if self.nm is not None:
            for name, m in self.targets.items():
                if weight_2d(m).shape[1] % self.nm[1]:
                    raise ValueError(f"{name}: input dimension {weight_2d(m).shape[1]} not divisible by "
                                     f"M={self.nm[1]}")
        self.model = model
        for m in self.targets.values():
            attach_mask(m, "weight")
        return model

    def step(self) -> None:
        """Collect statistics and prune every target layer once."""
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.prepare(model, calib_batches=...) must be called first")
        if not self.sequential:
            stats = collect(self.model, self.targets, self.batches, self.stat)
            for name, m in self.targets.items():
                self.prune_layer(m, stats[name])
            return
        for name in call_order(self.model, self.targets, self.batches[0]):
            one = {name: self.targets[name]}
            self.prune_layer(one[name], collect(self.model, one, self.batches, self.stat)[name])

    def finalize(self) -> nn.Module:
        """Bake the masks into plain weights and return the model."""
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.prepare(model, calib_batches=...) must be called first")
        return finalize(self.model)

    #: torch.ao.pruning name for the same operation.
    squash_mask = finalize

    def install(self, module: nn.Module, keep_2d: torch.Tensor) -> None:
        keep = keep_2d.t() if keep_2d.shape != module.parametrizations.weight.original.shape else keep_2d
        set_mask(module, "weight", keep)
        zero_pruned_(module, "weight")


class WandaPruner(OneShotPruner):
    """Wanda: no weight update, just the |W|·||X|| mask per output row (unstructured) or N:M group."""

    @staticmethod
    def stat(x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(0)

    def prune_layer(self, module: nn.Module, sq_norms: torch.Tensor) -> None:
        with torch.no_grad():
            w = weight_2d(module)
            self.install(module, score_mask(wanda_scores(w, sq_norms), self.sparsity, self.nm))


def wanda(model: nn.Module, calib_batches, sparsity: float | None = None, *, pattern: str | None = None,
          sequential: bool = False, modules=None) -> nn.Module:
    """Prune ``model`` in place with Wanda from ``calib_batches`` (model inputs); returns it finalized."""
    p = WandaPruner(sparsity, pattern=pattern, sequential=sequential)
    p.prepare(model, modules, calib_batches=calib_batches)
    p.step()
    return p.finalize()
