"""Block pruning: whole blocks kept or dropped, exact block counts, padding for shapes that do not divide."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparsec.prune as prune
from sparsec.prune.block import n_blocks


def _blocks(t: torch.Tensor, bh: int, bw: int):
    for i in range(0, t.shape[0], bh):
        for j in range(0, t.shape[1], bw):
            yield t[i:i + bh, j:j + bw]


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.floats(0, 0.99),
       st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_divisible_blocks_element_by_element(bh, bw, nh, nw, sparsity, seed):
    torch.manual_seed(seed)
    lin = nn.Linear(bw * nw, bh * nh)
    sp = prune.BlockPruner(sparsity, (bh, bw))
    sp.prepare(nn.Sequential(lin))
    sp.step()
    w = lin.weight.detach()
    zero_blocks = 0
    for block in _blocks(w, bh, bw):
        assert torch.all(block == 0) or torch.all(block != 0)
        zero_blocks += bool(torch.all(block == 0))
    assert zero_blocks == int(round(sparsity * nh * nw))
    assert int((w == 0).sum()) == zero_blocks * bh * bw  # element sparsity is exact when the shape divides


@given(st.integers(2, 5), st.integers(2, 5), st.integers(3, 13), st.integers(3, 13), st.integers(0, 999))
@settings(max_examples=30, deadline=None)
def test_non_dividing_shapes_are_padded(bh, bw, rows, cols, seed):
    torch.manual_seed(seed)
    w = torch.randn(rows, cols)
    keep = prune.block_mask(w, (bh, bw), 0.5)
    count = 0
    for block in _blocks(keep, bh, bw):
        assert block.all() or not block.any()
        count += bool(not block.any())
    assert count == int(round(0.5 * n_blocks((rows, cols), (bh, bw))))


def test_partial_blocks_are_scored_by_rms_not_by_size():
    w = torch.ones(5, 4)
    w[:4] = 0.5  # full 4x4 block of 0.5; the partial 1x4 edge block is 1.0 and must survive
    keep = prune.block_mask(w, (4, 4), 0.5)
    assert keep[4].all() and not keep[:4].any()
    scores = prune.block_scores(w, (4, 4), "l1")
    assert scores.flatten().tolist() == [0.5, 1.0]


def test_conv_blocks_use_out_by_flattened_in_view_or_full_rank():
    conv = nn.Conv2d(4, 8, 3)
    sp = prune.BlockPruner(0.5, (2, 6))
    sp.prepare(nn.Sequential(conv))
    sp.step()
    view = conv.weight.detach().reshape(8, 36)
    for block in _blocks(view, 2, 6):
        assert torch.all(block == 0) or torch.all(block != 0)
    keep = prune.block_mask(torch.randn(8, 4, 3, 3), (2, 2, 3, 3), 0.25)
    assert int((~keep).sum()) == round(0.25 * 8) * (2 * 2 * 3 * 3)


def test_global_block_scope_counts_blocks_over_layers():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    sp = prune.BlockPruner(0.5, (2, 2), scope="global")
    sp.prepare(model)
    sp.step()
    zeros = sum(int((m.weight == 0).sum()) for m in sp.targets.values())
    assert zeros == round(0.5 * (16 + 8)) * 4


def test_errors():
    with pytest.raises(ValueError, match=r"block_shape \(2, 2, 2\) does not fit weight shape \(3, 4\)"):
        prune.BlockPruner(0.5, (2, 2, 2)).prepare(nn.Sequential(nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="positive ints"):
        prune.block_mask(torch.ones(4, 4), (0, 2), 0.5)
    with pytest.raises(ValueError, match="norm"):
        prune.BlockPruner(0.5, (2, 2), norm="linf")
