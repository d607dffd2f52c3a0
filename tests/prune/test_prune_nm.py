"""N:M patterns checked element by element, for Linear and Conv weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparsec.prune as prune

PATTERNS = [(2, 4), (1, 4), (4, 8)]


def _check_groups(weight: torch.Tensor, original: torch.Tensor, n: int, m: int) -> None:
    """Every group of m consecutive input weights keeps exactly its n largest magnitudes."""
    w = weight.movedim(1, -1).reshape(-1, m)
    o = original.movedim(1, -1).reshape(-1, m).abs()
    for g in range(w.shape[0]):
        kept = [j for j in range(m) if w[g, j] != 0]
        assert len(kept) == n
        dropped = [j for j in range(m) if w[g, j] == 0]
        assert all(o[g, k] >= o[g, d] for k in kept for d in dropped)


@given(st.sampled_from(PATTERNS), st.integers(1, 6), st.integers(1, 4), st.integers(0, 999))
@settings(max_examples=40, deadline=None)
def test_linear_pattern_element_by_element(pattern, out, groups, seed):
    n, m = pattern
    torch.manual_seed(seed)
    lin = nn.Linear(groups * m, out)
    dense = lin.weight.detach().clone()
    sp = prune.NMPruner(n, m)
    sp.prepare(nn.Sequential(lin))
    sp.step()
    _check_groups(lin.weight.detach(), dense, n, m)
    assert prune.is_nm_sparse(lin.weight, n, m)
    assert sp.sparsity == pytest.approx(1 - n / m)


@given(st.sampled_from(PATTERNS), st.integers(1, 3), st.integers(1, 3), st.integers(0, 999))
@settings(max_examples=20, deadline=None)
def test_conv_pattern_runs_along_input_channels(pattern, out, k, seed):
    n, m = pattern
    torch.manual_seed(seed)
    conv = nn.Conv2d(2 * m, out, k)
    dense = conv.weight.detach().clone()
    sp = prune.NMPruner(n, m)
    sp.prepare(nn.Sequential(conv))
    sp.step()
    _check_groups(conv.weight.detach(), dense, n, m)


def test_partial_group_fraction_for_gradual_ramp():
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    keep = prune.nm_mask(w, 2, 4, group_fraction=0.5)
    per_group = keep.view(-1, 4).sum(1)
    assert int((per_group == 2).sum()) == 16 and int((per_group == 4).sum()) == 16
    sp = prune.NMPruner(2, 4)
    sp.prepare(nn.Sequential(nn.Linear(16, 8)))
    sp.update_masks(0.25)
    assert int((sp.targets["0"].weight == 0).sum()) == 32
    with pytest.raises(ValueError, match="at most sparsity 0.5"):
        sp.update_masks(0.6)


def test_is_nm_sparse_detects_violations():
    w = torch.tensor([[1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    assert prune.is_nm_sparse(w, 3, 4)
    assert not prune.is_nm_sparse(w, 2, 4)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="N <= M, got 5:4"):
        prune.NMPruner(5, 4)
    with pytest.raises(ValueError, match="positive"):
        prune.NMPruner(0, 4)
    with pytest.raises(TypeError):
        prune.NMPruner(2.0, 4)
    with pytest.raises(ValueError, match=r"input dimension 6 of weight shape \(3, 6\) is not divisible by M=4"):
        prune.NMPruner(2, 4).prepare(nn.Sequential(nn.Linear(6, 3)))
