"""Zero-compressed saved weights (sparsec/compiler/saved_weights.py): bit-exact round trips, compared unbuilt."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec import knobs
from sparsec.compiler.saved_weights import (
    SavedWeights,
    _bits,
    compress,
    decompress,
    digest,
    equal,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int8, torch.bool]


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), rows=st.integers(1, 40), cols=st.integers(1, 70),
       density=st.floats(0.0, 0.7), seed=st.integers(0, 2**31 - 1), specials=st.booleans())
def test_round_trip_is_bit_exact(dtype, rows, cols, density, seed, specials):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(rows, cols, generator=g) < density
    if dtype == torch.bool:
        x = keep
    else:
        x = (torch.randn(rows, cols, generator=g) * 50).to(dtype) * keep.to(dtype)  # -0.0 where negatives were
    if specials and dtype.is_floating_point:
        x.view(-1)[0] = float("nan")
        x.view(-1)[-1] = -0.0
    parts = compress(x)
    nonzero = int((x != 0).sum())  # NaN counts (NaN != 0), -0.0 does not
    if parts is None:  # only when too dense to gain
        assert nonzero > knobs.get("saved_weight_max_density") * x.numel()
        return
    y = decompress(*parts, tuple(x.shape))
    assert y.dtype == x.dtype and y.shape == x.shape
    assert torch.equal(_bits(y), _bits(x))
    clean = torch.nan_to_num(x) if dtype.is_floating_point else x
    if dtype.is_floating_point:
        parts = compress(clean)
    assert equal(*parts, tuple(x.shape), clean)
    if x.numel() > 1 and dtype != torch.bool:
        other = clean.clone()
        other.view(-1)[x.numel() // 2] += 1
        assert not equal(*parts, tuple(x.shape), other)
    assert not equal(*parts, tuple(x.shape), clean.reshape(-1))


@pytest.mark.parametrize("digests", [False, True])
def test_saved_weights_rebuild_on_access_only(digests):
    x = torch.randn(8, 8) * (torch.rand(8, 8) < 0.2)  # -0.0 where a negative was masked
    dense = torch.randn(3)
    w = SavedWeights({"b": dense}, {"w": (*compress(x), (8, 8))}, {"w": digest(x)} if digests else None)
    assert set(w) == {"b", "w"} and len(w) == 2 and "w" in w and w.compressed() == ["w"]
    assert w.matches("w", x.clone()) and not w.matches("w", x + 1)
    assert w.matches("w", x.abs() * torch.sign(x))  # +0.0 for -0.0: other bytes, equal values
    assert not w.matches("w", x.t().contiguous()) and not w.matches("w", x.reshape(4, 16))
    assert "w" not in w._dense  # matches compared without rebuilding
    assert torch.equal(w["w"], x) and w["w"] is w["w"]  # rebuilt once, kept
    assert w.matches("b", dense.clone()) and w.get("missing") is None


def test_write_compresses_weights_only_train_refs_name(tmp_path):
    """graph_io.write: a weight only a ``train_refs`` tuple names is stored zero-compressed (once, under both
    names when tied); one the graph reads stays dense; a frozen read gives None for the refs, a bound one the
    caller's tensors."""
    from sparsec.compiler import graph_io

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 64)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(64, 64) < 0.1)
    read = torch.randn(64) * (torch.rand(64) < 0.1)  # sparse too, but the graph reads it: kept dense
    holder = torch.nn.Module()
    holder.train_refs = (lin.weight, lin.bias)
    holder.scale = read
    source = {"a.weight": lin.weight, "b.weight": lin.weight, "a.bias": lin.bias, "s": read}
    graph_io.write(tmp_path, {"graph": {"owned": {"m": holder}}}, source, True)
    saved, arrays = graph_io.read_weights(tmp_path)
    assert sorted(saved.compressed()) == ["a.weight", "b.weight"]  # the dense bias is not worth it
    for name, t in source.items():
        assert torch.equal(_bits(saved[name]), _bits(t)), name
    frozen = graph_io.read(tmp_path, saved, arrays, frozen=True)["graph"]["owned"]["m"]
    assert frozen.train_refs is None and torch.equal(frozen.scale, read)
    bound = graph_io.read(tmp_path, source, arrays)["graph"]["owned"]["m"]
    assert bound.train_refs[0] is lin.weight and bound.train_refs[1] is lin.bias and bound.scale is read
