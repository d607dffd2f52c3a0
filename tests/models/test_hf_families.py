"""Sweep: every transformers family torch.export captures, pruned three ways, compiled == eager on two inputs.

Pruning is plain torch masking of every 2-d Linear weight (what a new user does); the format is forced per
pattern so each family really runs sparse kernels (at hidden 64 the cost model would keep most dense).
Families that cannot be captured are listed in docs/models.md with the reason (none at present).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils import _pytree as pytree

import sparsec
from tests.conftest import assert_close
from tests.models.hf_families import FAMILIES, build, inputs

pytestmark = pytest.mark.filterwarnings("ignore")

#: Swin's dynamic-shape export takes ~100 s (symbolic reasoning over window partitioning; static: < 1 s)
STATIC = {"swin"}
#: pruning -> the format forced for it
PRUNINGS = {"unstructured90": "csr", "nm2:4": "nm2:4", "block16": "bsr16x16"}


def _mask(w: torch.Tensor, how: str) -> torch.Tensor:
    if how == "unstructured90":
        k = max(1, int(0.1 * w.numel()))
        return w.abs() >= w.abs().flatten().kthvalue(w.numel() - k + 1).values
    if how == "nm2:4":
        pad = (-w.shape[1]) % 4
        g = torch.nn.functional.pad(w.abs(), (0, pad)).reshape(w.shape[0], -1, 4)
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.topk(2, dim=2).indices, True)
        return keep.reshape(w.shape[0], -1)[:, : w.shape[1]]
    rows, cols = -(-w.shape[0] // 16), -(-w.shape[1] // 16)
    keep = torch.rand(rows, cols, generator=torch.Generator().manual_seed(w.numel())) < 0.25
    return keep.repeat_interleave(16, 0).repeat_interleave(16, 1)[: w.shape[0], : w.shape[1]]


def prune(model: torch.nn.Module, how: str) -> int:
    """Zero every nn.Linear weight by ``how``; returns how many weights were pruned."""
    count = 0
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.mul_(_mask(mod.weight, how))
                count += 1
    return count


def _tensors(out) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("how", list(PRUNINGS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_compiles_and_matches_eager(family, how):
    model = build(family)
    assert prune(model, how) > 0
    args, kwargs = inputs(family, 0)
    cm = sparsec.sparse_compile(model, args, kwargs, target="cpu", calibrate=False, autotune=False,
                                force_format=PRUNINGS[how], min_weight_numel=0, dynamic=family not in STATIC)
    formats = [r.format for r in cm.report().layers]
    assert PRUNINGS[how] in formats, cm.report()
    for seed in (0, 1):
        args, kwargs = inputs(family, seed)
        with torch.no_grad():
            got, want = _tensors(cm(*args, **kwargs)), _tensors(model(*args, **kwargs))
        assert len(got) == len(want) > 0
        for g, w in zip(got, want, strict=True):
            assert_close(g, w)
