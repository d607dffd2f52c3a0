"""Every registered format: accepts what it should, packs and unpacks exactly, costs sensibly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec.errors import FormatError
from sparsec.formats import registry
from sparsec.formats.bsr import BSR
from sparsec.formats.facts import compute_facts
from sparsec.formats.nm import NM
from tests.conftest import random_weight

SPARSE = [f for f in registry.formats() if f.name != "dense"]


def _pattern_for(fmt) -> str:
    if fmt.name.startswith("nm"):  # nm, and the compact 2:4 (nm2:4c)
        return f"nm{fmt.n}:{fmt.m}"
    if fmt.name == "bsr":
        return f"block{fmt.bh}"
    return "unstructured"


@settings(max_examples=15, deadline=None)
@given(
    fmt=st.sampled_from(SPARSE),
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    seed=st.integers(0, 1000),
)
def test_pack_unpack_round_trip(fmt, rows, cols, density, seed):
    w = random_weight(rows, cols, density, seed, _pattern_for(fmt))
    packed = fmt.pack(w)
    assert packed.shape == (rows, cols)
    assert packed.padded_shape[0] >= rows and packed.padded_shape[1] >= cols
    assert torch.equal(fmt.unpack(packed), w)
    for buf in packed.buffers.values():
        assert buf.size == 0 or buf.ctypes.data % 64 == 0, "packed buffers are 64-byte aligned"


def test_empty_rows_are_kept():
    w = random_weight(16, 24, 0.3, 1)
    w[[0, 5, 15]] = 0
    for fmt in SPARSE:
        if fmt.accepts(compute_facts(w)) is None:
            assert torch.equal(fmt.unpack(fmt.pack(w)), w), fmt.label


def test_facts():
    w = torch.zeros(8, 16)
    w[0, 0] = w[0, 3] = w[2, 9] = 1.0
    f = compute_facts(w)
    assert f.nnz == 3 and f.shape == (8, 16)
    assert f.zero_rows == 6 and f.zero_cols == 13
    assert f.nm["2:4"] and f.nm["4:8"] and not f.nm["1:4"]
    assert f.block_nonzero[8] == 2
    assert abs(f.density - 3 / 128) < 1e-12


def test_nm_rejects_dense_and_bsr_rejects_scattered():
    dense = torch.randn(32, 32)
    assert NM(2, 4).accepts(compute_facts(dense)) is not None
    scattered = random_weight(64, 64, 0.02, 3)
    assert BSR(16).accepts(compute_facts(scattered)) is not None
    with pytest.raises(FormatError):
        NM(2, 4).pack(dense)


def test_cost_prefers_sparse_only_when_sparse():
    dense_fmt, csr = registry.get_format("dense"), registry.get_format("csr")
    sparse_facts = compute_facts(random_weight(768, 768, 0.05, 0))
    dense_facts = compute_facts(torch.randn(768, 768))
    assert csr.cost(sparse_facts, 64) < dense_fmt.cost(sparse_facts, 64)
    assert csr.cost(dense_facts, 64) > dense_fmt.cost(dense_facts, 64)


def test_registry_errors():
    with pytest.raises(FormatError, match="no format"):
        registry.get_format("nope")
    with pytest.raises(FormatError, match="registered already"):
        registry.register_format(registry.get_format("csr"))
    with pytest.raises(ValueError):
        NM(4, 4)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 70), cols=st.integers(1, 70), density=st.floats(0, 1), seed=st.integers(0, 999))
def test_facts_match_brute_force(rows, cols, density, seed):
    """The byte-packing tricks in compute_facts agree with plain reductions on any shape."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)
    f = compute_facts(w)
    nz = w != 0
    for (n, m), key in (((2, 4), "2:4"), ((1, 4), "1:4"), ((4, 8), "4:8")):
        groups = F.pad(nz, (0, (-cols) % m)).reshape(rows, -1, m)
        assert f.nm[key] == bool((groups.sum(2) <= n).all())
    for b in (8, 16, 32):
        p = F.pad(nz, (0, (-cols) % b, 0, (-rows) % b))
        blocks = p.reshape(p.shape[0] // b, b, p.shape[1] // b, b).any(3).any(1)
        assert f.block_nonzero[b] == int(blocks.sum())
    assert f.nnz == int(nz.sum())
    assert f.zero_rows == int((~nz.any(1)).sum()) and f.zero_cols == int((~nz.any(0)).sum())


@settings(max_examples=20, deadline=None)
@given(
    fmt=st.sampled_from(SPARSE),
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    seed=st.integers(0, 1000),
)
def test_slot_coords_locate_every_stored_value(fmt, rows, cols, density, seed):
    """Training's slot maps: each value slot's position, read off the buffers, holds that slot's value."""
    from sparsec.targets.cpu.sparse_grad import stored_index

    w = random_weight(rows, cols, density, seed, _pattern_for(fmt))
    packed = fmt.pack(w)
    if fmt.own_kernels is not None:  # bitmap, nm2:4c, hybrid: own runtime module, no training through it
        with pytest.raises(NotImplementedError, match="no slot map"):
            stored_index(fmt, packed)
        return
    idx = stored_index(fmt, packed)
    vals = packed.buffers["values"]
    assert idx.shape == vals.shape
    valid = idx >= 0
    assert (vals[~valid] == 0).all(), "slots outside the weight are padding"
    assert len(set(idx[valid].tolist())) == int(valid.sum()), "no position is stored twice"
    assert (w.reshape(-1).numpy()[idx[valid]] == vals[valid]).all()
    assert set(torch.nonzero(w.reshape(-1)).reshape(-1).tolist()) <= set(idx[valid].tolist())
