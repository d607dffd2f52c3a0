"""N:M semi-structured pruning: at most N non-zeros in every group of M consecutive input-dim weights."""

from __future__ import annotations

import torch
from torch import nn

from .base import BaseSparsifier
from .masks import effective
from .schedule import check_sparsity


def _check_nm(n: int, m: int) -> None:
    if not (isinstance(n, int) and isinstance(m, int)) or isinstance(n, bool) or isinstance(m, bool):
        raise TypeError(f"N and M must be ints, got N={n!r}, M={m!r}")
    if m < 1 or n < 1:
        raise ValueError(f"N and M must be positive, got N={n}, M={m}")
    if n > m:
        raise ValueError(f"N:M needs N <= M, got {n}:{m}")


def _groups_view(t: torch.Tensor, m: int, what: str) -> torch.Tensor:
    """(out, in, *k) -> (out * prod(k) * in / m, m): groups of M consecutive weights along the input dim."""
    if t.dim() < 2:
        raise ValueError(f"N:M pruning needs a weight with an input dimension, got shape {tuple(t.shape)}")
    in_dim = t.shape[1]
    if in_dim % m:
        raise ValueError(f"{what}: input dimension {in_dim} of weight shape {tuple(t.shape)} is not divisible "
                         f"by M={m}")
    # Move the input dim last so that consecutive input channels of one output (and kernel position) group.
    moved = t.movedim(1, -1).contiguous()
    return moved.view(-1, m)


def _from_groups(groups: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    moved_shape = (shape[0], *shape[2:], shape[1])
    return groups.reshape(moved_shape).movedim(-1, 1).contiguous()


def nm_mask(weight: torch.Tensor, n: int, m: int, group_fraction: float = 1.0, what: str = "weight") -> torch.Tensor:
    """Keep-mask keeping the ``n`` largest ``|w|`` of each group of ``m`` along the input dim (dim 1).

    ``group_fraction < 1`` enforces the pattern only on that fraction of groups (those whose pruned
    entries have the smallest total magnitude); a gradual N:M schedule ramps it to 1.
    """
    _check_nm(n, m)
    if not 0.0 <= group_fraction <= 1.0:
        raise ValueError(f"group_fraction must be in [0, 1], got {group_fraction}")
    groups = _groups_view(weight.detach().abs(), m, what)
    order = torch.argsort(groups, dim=1, stable=True)  # ascending: the first m-n are dropped
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, : m - n], False)
    n_enforced = int(round(group_fraction * groups.shape[0]))
    if n_enforced < groups.shape[0]:
        cost = torch.gather(groups, 1, order[:, : m - n]).sum(dim=1)
        relaxed = torch.argsort(cost, stable=True)[n_enforced:]
        keep[relaxed] = True
    return _from_groups(keep, weight.shape)


def is_nm_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive input-dim entries has at most ``n`` non-zeros."""
    _check_nm(n, m)
    groups = _groups_view(weight.detach(), m, "weight")
    return bool(((groups != 0).sum(dim=1) <= n).all())


class NMPruner(BaseSparsifier):
    """N:M pruning along the input dim (2:4 is what sparse tensor cores accelerate; 1:4, 4:8 also work).

    Its full sparsity is ``1 - N/M``. :meth:`update_masks` with a smaller sparsity enforces the pattern on
    a proportional fraction of groups, which is how :class:`GradualPruner` ramps N:M up.
    """

    def __init__(self, n: int = 2, m: int = 4) -> None:
        _check_nm(n, m)
        super().__init__(1.0 - n / m if n < m else 0.0)
        self.n, self.m = n, m

    def prepare(self, model: nn.Module, modules=None, *, optimizer=None) -> nn.Module:
        super().prepare(model, modules, optimizer=optimizer)
        for name, module in self.targets.items():  # fail at prepare time, not mid-training
            _groups_view(module.weight.detach(), self.m, f"{name} ({type(module).__name__})")
        return model

    def update_masks(self, sparsity: float) -> None:
        self._require_prepared()
        check_sparsity(sparsity)
        full = 1.0 - self.n / self.m
        if sparsity > full + 1e-9:
            raise ValueError(f"{self.n}:{self.m} reaches at most sparsity {full:.4f}, asked for {sparsity}")
        fraction = 1.0 if full == 0 else min(1.0, sparsity / full)
        masks = {name: nm_mask(effective(module), self.n, self.m, fraction, name)
                 for name, module in self.targets.items()}
        self.apply_masks(masks)
