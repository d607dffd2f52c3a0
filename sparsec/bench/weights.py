"""Seeded weights of exact sparsity in the benchmark's patterns: unstructured, 2:4 and square blocks."""

from __future__ import annotations

import torch

PATTERNS = ("unstructured", "nm2:4", "block16", "block32")


def pattern_block(pattern: str) -> int | None:
    """The block size of a ``block<b>`` pattern, else None."""
    return int(pattern[5:]) if pattern.startswith("block") else None


def make_weight(rows: int, cols: int, sparsity: float, pattern: str, seed: int = 0) -> torch.Tensor:
    """A [rows, cols] fp32 weight with exactly ``round(sparsity * count)`` zeros of the pattern.

    ``unstructured``: zeros at uniformly random positions. ``block<b>``: whole b x b blocks zeroed,
    ``round(sparsity * blocks)`` of them (edge blocks are partial). ``nm2:4``: the 2 largest magnitudes
    of every 4 consecutive inputs kept (sparsity must be 0.5; cols a multiple of 4).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    if pattern == "unstructured":
        k = int(round(sparsity * w.numel()))
        w.view(-1)[torch.randperm(w.numel(), generator=g)[:k]] = 0.0
        return w
    b = pattern_block(pattern)
    if b is not None:
        br, bc = -(-rows // b), -(-cols // b)
        k = int(round(sparsity * br * bc))
        keep = torch.ones(br * bc, dtype=torch.bool)
        keep[torch.randperm(br * bc, generator=g)[:k]] = False
        mask = keep.view(br, bc).repeat_interleave(b, 0).repeat_interleave(b, 1)[:rows, :cols]
        return w * mask
    if pattern == "nm2:4":
        if abs(sparsity - 0.5) > 1e-9 or cols % 4:
            raise ValueError(f"2:4 means 50% sparsity and cols % 4 == 0 (got {sparsity}, cols {cols})")
        groups = w.view(rows, cols // 4, 4)
        keep = groups.abs().topk(2, dim=2).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, keep, True)
        return (groups * mask).view(rows, cols)
    raise ValueError(f"unknown pattern {pattern!r}; known: {PATTERNS}")
