"""Block pruning: whole blocks of any shape are kept or dropped by their (size-normalised) norm."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import BaseSparsifier, check_scope, topk_masks
from .masks import effective
from .schedule import check_sparsity

NORMS = ("l1", "l2")


def _blocked(weight: torch.Tensor, block_shape: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """View of ``weight`` on which ``block_shape`` applies: itself (same rank) or (out, rest) for rank 2."""
    block = tuple(block_shape)
    if not block or any((not isinstance(b, int)) or b < 1 for b in block):
        raise ValueError(f"block_shape must be positive ints, got {block_shape!r}")
    if len(block) == weight.dim():
        return weight, block
    if len(block) == 2 and weight.dim() > 2:
        return weight.reshape(weight.shape[0], -1), block
    raise ValueError(f"block_shape {block} does not fit weight shape {tuple(weight.shape)}: give one size per "
                     "dimension, or two for the (out, in * kernel) view")


def _pad(t: torch.Tensor, block: tuple[int, ...]) -> torch.Tensor:
    # F.pad takes (last_lo, last_hi, ..., first_lo, first_hi); pad only at the high end.
    pads: list[int] = []
    for size, b in zip(reversed(t.shape), reversed(block), strict=True):
        pads += [0, (-size) % b]
    return F.pad(t, pads)


def _block_sum(t: torch.Tensor, block: tuple[int, ...]) -> torch.Tensor:
    padded = _pad(t, block)
    split: list[int] = []
    for size, b in zip(padded.shape, block, strict=True):
        split += [size // b, b]
    x = padded.reshape(split)
    return x.sum(dim=tuple(range(1, len(split), 2)))


def block_scores(weight: torch.Tensor, block_shape: Sequence[int], norm: str = "l2") -> torch.Tensor:
    """Norm of each block divided by ``count ** (1/p)`` (RMS for l2, mean |w| for l1).

    Edge blocks of a shape that does not divide the weight are zero-padded; the normalisation by the
    number of real entries keeps those partial blocks from being pruned just for being small.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    view, block = _blocked(weight.detach(), block_shape)
    p = 1 if norm == "l1" else 2
    total = _block_sum(view.abs().float() ** p, block)
    count = _block_sum(torch.ones_like(view, dtype=torch.float32), block)
    return (total / count) ** (1.0 / p)


def expand_block_mask(block_keep: torch.Tensor, weight_shape: torch.Size, block_shape: Sequence[int]) -> torch.Tensor:
    """Blow a per-block keep-mask up to the weight's shape (cropping the padding)."""
    view_shape = _blocked(torch.empty(weight_shape, device="meta"), block_shape)[0].shape
    out = block_keep
    for dim, b in enumerate(tuple(block_shape)):
        out = out.repeat_interleave(b, dim=dim)
    out = out[tuple(slice(0, s) for s in view_shape)]
    return out.reshape(weight_shape)


def block_mask(weight: torch.Tensor, block_shape: Sequence[int], sparsity: float, norm: str = "l2") -> torch.Tensor:
    """Keep-mask dropping the ``round(sparsity * n_blocks)`` blocks of lowest normalised norm."""
    check_sparsity(sparsity)
    scores = block_scores(weight, block_shape, norm)
    keep = topk_masks({"w": scores}, sparsity, "layer")["w"]
    return expand_block_mask(keep, weight.shape, block_shape)


class BlockPruner(BaseSparsifier):
    """Prune ``sparsity`` of the blocks (``block_shape``, e.g. ``(4, 4)`` or ``(1, 8)``), per layer or globally.

    For Conv weights a 2-tuple applies to the ``(out, in * kernel)`` view; a tuple of the weight's rank
    applies directly. The sparsity counts blocks; it equals the element sparsity when the shape divides.
    """

    def __init__(self, sparsity: float, block_shape: Sequence[int] = (4, 4), *, norm: str = "l2",
                 scope: str = "layer") -> None:
        super().__init__(sparsity)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.block_shape = tuple(block_shape)
        self.norm = norm
        self.scope = check_scope(scope)

    def prepare(self, model: nn.Module, modules=None, *, optimizer=None) -> nn.Module:
        super().prepare(model, modules, optimizer=optimizer)
        for module in self.targets.values():  # validate the block shape for every layer up front
            _blocked(module.weight.detach(), self.block_shape)
        return model

    def update_masks(self, sparsity: float) -> None:
        self._require_prepared()
        check_sparsity(sparsity)
        scores = {n: block_scores(effective(m), self.block_shape, self.norm) for n, m in self.targets.items()}
        keep = topk_masks(scores, sparsity, self.scope)
        self.apply_masks({n: expand_block_mask(keep[n], self.targets[n].weight.shape, self.block_shape)
                          for n in self.targets})


def n_blocks(weight_shape: Sequence[int], block_shape: Sequence[int]) -> int:
    """Number of (possibly partial) blocks of ``block_shape`` covering a weight of ``weight_shape``."""
    view, block = _blocked(torch.empty(tuple(weight_shape), device="meta"), block_shape)
    return math.prod(-(-s // b) for s, b in zip(view.shape, block, strict=True))
