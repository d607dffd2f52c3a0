"""How a global sparsity is split across layers for sparse-from-scratch training (uniform or ERK)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .schedule import check_sparsity

DISTRIBUTIONS = ("uniform", "erk")


def layer_densities(shapes: Mapping[str, Sequence[int]], sparsity: float,
                    distribution: str = "uniform") -> dict[str, float]:
    """Per-layer density (fraction kept) for a global ``sparsity`` target.

    ``uniform``: every layer gets ``1 - sparsity``. ``erk`` (Erdos-Renyi-Kernel, Evci et al. 2020): density
    proportional to ``sum(shape) / prod(shape)``, so small layers (e.g. a 10-way classifier) stay denser;
    layers whose density would exceed 1 are made dense and the rest re-scaled, keeping the global count.
    """
    check_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; expected one of {DISTRIBUTIONS}")
    density = 1.0 - sparsity
    if distribution == "uniform" or not shapes:
        return {name: density for name in shapes}
    numel = {name: math.prod(s) for name, s in shapes.items()}
    raw = {name: sum(s) / math.prod(s) for name, s in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(numel.values()) - sum(numel[n] for n in dense)
        free = [n for n in shapes if n not in dense]
        if not free:  # everything is dense (sparsity ~ 0): nothing left to scale
            eps = 0.0
            break
        eps = budget / sum(raw[n] * numel[n] for n in free)
        too_dense = [n for n in free if eps * raw[n] > 1.0]
        if not too_dense:
            break
        dense.update(too_dense)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def random_mask(shape: Sequence[int], density: float, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask with exactly ``round(density * numel)`` True entries at uniformly random positions."""
    n = math.prod(shape)
    keep = int(round(density * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:keep]] = True
    return mask.view(*shape)
