"""Every format's MLIR kernel against dense torch: random shapes, densities, epilogues, N = 1 and more."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec.codegen.mlir.emit import emit_kernel
from sparsec.codegen.mlir.jit import compile_kernel
from sparsec.codegen.spec import KernelSpec
from sparsec.errors import InputError, KernelCompileError
from sparsec.formats import registry
from sparsec.targets.cpu.sparse_linear import SparseLinear
from tests.conftest import assert_close, random_weight, reference
from tests.formats.test_formats import SPARSE, _pattern_for

#: the formats SparseLinear runs; bitmap, nm2:4c and hybrid bring their own modules, tested in their files
LEVEL_FORMATS = [f for f in SPARSE if f.own_kernels is None]


@settings(max_examples=30, deadline=None)
@given(
    fmt=st.sampled_from(LEVEL_FORMATS),
    rows=st.integers(1, 48),
    cols=st.integers(1, 48),
    n=st.sampled_from([1, 2, 5, 8, 17, 33]),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", "silu", "tanh"]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 1000),
)
def test_kernel_matches_dense(fmt, rows, cols, n, density, bias, act, residual, threads, seed):
    w = random_weight(rows, cols, density, seed, _pattern_for(fmt))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, cols, generator=g) * 3
    b = torch.randn(rows, generator=g) if bias else None
    r = torch.randn(n, rows, generator=g) if residual else None
    layer = SparseLinear("t", fmt, w, b, act, residual, threads=threads)
    got = layer(x, r) if residual else layer(x)
    assert_close(got, reference(x, w, b, act, r))


def test_leading_dims_and_noncontiguous_input():
    fmt = registry.get_format("csr")
    w = random_weight(24, 16, 0.3, 0)
    layer = SparseLinear("t", fmt, w, None, "relu", False)
    x = torch.randn(3, 16, 5).transpose(1, 2)  # [3, 5, 16], not contiguous
    assert_close(layer(x), reference(x, w, None, "relu"))
    empty = layer(torch.randn(0, 16))
    assert empty.shape == (0, 24)


def test_activation_accuracy_extremes():
    """The arith-only exp/erf stay accurate far into the tails (no overflow, exact limits)."""
    fmt = registry.get_format("csr")
    w = torch.eye(32)
    x = torch.linspace(-60, 60, 32 * 16).reshape(16, 32)
    for act in ("gelu", "silu", "tanh"):
        layer = SparseLinear("t", fmt, w, None, act, False)
        got = layer(x)
        want = reference(x, w, None, act)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), act


def test_shared_kernels_across_equal_layers():
    fmt = registry.get_format("csr")
    a = SparseLinear("a", fmt, random_weight(32, 32, 0.2, 1), None, None, False)
    b = SparseLinear("b", fmt, random_weight(32, 32, 0.2, 2), None, None, False)
    assert a.kernels(4)[0] is b.kernels(4)[0]


def test_emitted_mlir_names_the_encoding():
    spec = KernelSpec("csr", "(i, j) -> (i : dense, j : compressed)", 8, 8, 4, bias=True, activation="gelu", vl=4)
    text = emit_kernel(spec)
    assert "#sparse_tensor.encoding" in text and "j : compressed" in text
    assert "materialize_in_destination" in text  # writes the caller's buffer


def test_failing_pipeline_names_a_repro(tmp_path):
    spec = KernelSpec("bad", "(i, j) -> (i : compressed, j : singleton)", 8, 8, 4, vl=4)
    with pytest.raises(KernelCompileError, match="reproduce with"):
        # a singleton level under a unique compressed one is not a valid storage scheme in MLIR
        compile_kernel(spec)


def test_spec_validation():
    with pytest.raises(ValueError):
        KernelSpec("csr", "(i, j) -> (i : dense, j : compressed)", 8, 8, 4, activation="softplus")
    with pytest.raises(ValueError):
        KernelSpec("csr", "(i, j) -> (i : dense, j : compressed)", 8, 8, 4, form="dot")


def test_kernel_buffers_survive_garbage_collection():
    """Descriptors hold raw pointers: every buffer a kernel reads must stay owned by the layer."""
    import gc

    import numpy as np

    w = random_weight(512, 1024, 0.1, 3)
    layer = SparseLinear("t", registry.get_format("csr"), w, None, None, False, threads=2)
    assert layer.index_bits == 16
    gc.collect()
    junk = [np.full(1 << 16, 7.0) for _ in range(64)]  # reuse freed memory if anything was dropped
    x = torch.randn(9, 1024)
    assert_close(layer(x), reference(x, w))
    assert_close(layer(x[:1]), reference(x[:1], w))
    del junk


@pytest.mark.parametrize("label", [f.label for f in SPARSE if f.own_kernels is not None])
def test_sparse_linear_refuses_formats_with_their_own_kernels(label):
    fmt = registry.get_format(label)
    w = random_weight(16, 16, 0.5, 0, _pattern_for(fmt))
    with pytest.raises(InputError, match="its own"):
        SparseLinear("t", fmt, w, None, None, False)
