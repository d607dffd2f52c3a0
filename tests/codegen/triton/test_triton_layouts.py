"""The reference packers produce exactly the layout contract and invert cleanly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec.codegen.triton.layouts import (
    bsr_to_dense,
    csr_to_dense,
    dense_to_bsr,
    dense_to_csr,
    dense_to_nm,
    nm_to_dense,
    prune_nm,
)


@st.composite
def weights(draw):
    out_f, in_f = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    return torch.randn(out_f, in_f, generator=gen) * (torch.rand(out_f, in_f, generator=gen) < density)


@settings(max_examples=40, deadline=None)
@given(weights())
def test_csr_roundtrip(w):
    indptr, indices, values = dense_to_csr(w)
    assert indptr.dtype == indices.dtype == torch.int32 and indptr.shape == (w.shape[0] + 1,)
    assert values.shape == indices.shape == (int((w != 0).sum()),)
    assert torch.equal(csr_to_dense(indptr, indices, values, tuple(w.shape)), w)


@settings(max_examples=40, deadline=None)
@given(weights(), st.sampled_from([(1, 1), (4, 4), (16, 16), (16, 32), (3, 5)]))
def test_bsr_roundtrip(w, block):
    bh, bw = block
    indptr, indices, values = dense_to_bsr(w, block)
    assert indptr.shape == (-(-w.shape[0] // bh) + 1,) and indptr.dtype == torch.int32
    assert values.shape == (indices.shape[0], bh, bw) and indices.dtype == torch.int32
    assert all(bool((b != 0).any()) for b in values)  # only blocks with a nonzero are stored
    assert torch.equal(bsr_to_dense(indptr, indices, values, block, tuple(w.shape)), w)


@settings(max_examples=40, deadline=None)
@given(weights(), st.sampled_from([(2, 4), (1, 4), (4, 8), (3, 7)]))
def test_nm_roundtrip_and_contract(w, pattern):
    n, m = pattern
    wn = prune_nm(w, n, m)
    values, indices = dense_to_nm(wn, n, m)
    width = -(-w.shape[1] // m) * n
    assert values.shape == indices.shape == (w.shape[0], width) and indices.dtype == torch.uint8
    pos = indices.long().reshape(w.shape[0], -1, n)
    assert bool((pos < m).all()) and bool((pos[..., 1:] > pos[..., :-1]).all())  # strictly increasing
    assert torch.equal(nm_to_dense(values, indices, n, m, w.shape[1]), wn)


def test_nm_rejects_too_dense_groups():
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        dense_to_nm(torch.ones(2, 8), 2, 4)
