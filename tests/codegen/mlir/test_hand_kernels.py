"""The hand-scheduled vector kernels (CSR tiled by input columns, ...) against dense torch.

Odd shapes on purpose: N of 1, 3, 65 (segments of 16/8/4/1 lanes), out/in not multiples of any vector
width or tile, empty rows, a fully-empty weight, tiles smaller than a row's span; outputs start as NaN.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec import knobs
from sparsec.codegen.mlir import emit_rowvec
from sparsec.formats import registry
from sparsec.formats.bsr import BSR
from sparsec.targets.cpu.sparse_linear import SparseLinear
from tests.conftest import assert_close, random_weight, reference


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 70),
    cols=st.integers(1, 150),
    n=st.sampled_from([1, 2, 3, 17, 65]),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    k_tile=st.sampled_from([0, 1, 7, 16, 64]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu"]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2]),
    natural=st.booleans(),
    outer_kb=st.sampled_from([256, 0]),
    seed=st.integers(0, 1000),
)
def test_tiled_csr_matches_dense(rows, cols, n, density, k_tile, bias, act, residual, threads, natural, outer_kb,
                                 seed):
    """Both CSR layouts: natural (X [N, in] -> Y [N, out], the default; row blocks or, with
    ``csr_tiles_outer_kb=0``, input tiles outermost) and Y^T = W X^T."""
    w = random_weight(rows, cols, density, seed)
    w[seed % rows] = 0  # always one empty row
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, cols, generator=g)
    b = torch.randn(rows, generator=g) if bias else None
    r = torch.randn(n, rows, generator=g) if residual else None
    with knobs.scope(csr_k_tile=k_tile, csr_natural_kernel=natural, csr_tiles_outer_kb=outer_kb):
        layer = SparseLinear("t", registry.get_format("csr"), w, b, act, residual, threads=threads)
        spec = layer.kernels(n)[0].spec
    assert layer.k_tile == (0 if k_tile >= cols else k_tile)
    assert spec.form == ("dot" if n == 1 else "natural" if natural else "scatter")
    assert spec.tiles_outer == (outer_kb == 0 and natural and n > 1 and layer.k_tile > 0)
    got = layer(x, r) if residual else layer(x)
    assert_close(got, reference(x, w, b, act, r))


@pytest.mark.parametrize(("rows", "cols", "n"), [(600, 300, 130), (257, 16, 64), (8, 8, 8)])
def test_natural_csr_row_and_input_blocks(rows, cols, n):
    """Several row blocks (256) and input blocks (64) with tails, 8x8-aligned and not; strided x and residual."""
    w = random_weight(rows, cols, 0.2, rows)
    g = torch.Generator().manual_seed(cols)
    x = torch.randn(cols, n, generator=g).t()  # column-strided: the runtime makes it row-contiguous
    b, r = torch.randn(rows, generator=g), torch.randn(n, 2 * rows, generator=g)[:, ::2]
    layer = SparseLinear("t", registry.get_format("csr"), w, b, "silu", True, threads=2)
    assert layer.natural and layer.kernels(n)[0].spec.form == "natural"
    y = layer(x, r)
    assert y.is_contiguous()
    assert_close(y, reference(x, w, b, "silu", r))


def test_natural_csr_transpose_masks_are_a_transpose():
    from sparsec.codegen.mlir import emit_csrnat

    rows = [list(range(8 * i, 8 * i + 8)) for i in range(8)]
    for b in (4, 2, 1):
        lo, hi = (list(map(int, m.split(", "))) for m in emit_csrnat._masks(b))
        new = list(rows)
        for i in range(8):
            if not i & b:
                pair = rows[i] + rows[i + b]
                new[i], new[i + b] = [pair[j] for j in lo], [pair[j] for j in hi]
        rows = new
    assert rows == [list(range(j, 64, 8)) for j in range(8)]


@pytest.mark.parametrize("n", [1, 3, 65, 128])
def test_tiled_csr_bert_shape_and_empty_weight(n):
    w = random_weight(96, 768, 0.1, 4)
    x = torch.randn(n, 768)
    layer = SparseLinear("t", registry.get_format("csr"), w, None, None, False)
    assert layer.k_tile == 128  # the knob's default
    assert_close(layer(x), reference(x, w))
    empty = torch.zeros(33, 300)
    layer = SparseLinear("e", registry.get_format("csr"), empty, torch.ones(33), "gelu", False)
    assert_close(layer(x[:, :300]), reference(x[:, :300], empty, torch.ones(33), "gelu"))


@pytest.mark.parametrize("n", [64, 70])
def test_natural_csr_tiles_outer_at_bert_ffn_shape(n):
    """768x3072 (the FFN's second Linear): a 768 KB X panel, 192 KB of sums, so input tiles go outermost by
    default; with residual and the last tile narrower than the others (3000 columns)."""
    w = random_weight(768, 3000, 0.1, 5)
    g = torch.Generator().manual_seed(6)
    x, b, r = torch.randn(n, 3000, generator=g), torch.randn(768, generator=g), torch.randn(n, 768, generator=g)
    layer = SparseLinear("t", registry.get_format("csr"), w, b, "gelu", True, threads=2)
    assert all(k.spec.tiles_outer for k in layer.kernels(n))
    assert_close(layer(x, r), reference(x, w, b, "gelu", r))
    wide = SparseLinear("t", registry.get_format("csr"), random_weight(3072, 768, 0.1, 7), None, None, False)
    assert not wide.kernels(n)[0].spec.tiles_outer  # 768 KB of sums: row blocks stay outermost


def test_tile_positions_split_each_row_at_tile_starts():
    pos = np.array([0, 3, 3, 5], dtype=np.int32)
    crd = np.array([0, 4, 9, 5, 6], dtype=np.int32)  # rows: {0,4,9}, {}, {5,6}
    tpos = emit_rowvec.tile_positions(pos, crd, cols=10, k_tile=5)
    # tile starts 0, 5, 10 (end): row 0 -> 0,2,3; row 1 -> 3,3,3; row 2 -> 3,3,5
    assert tpos.reshape(3, 3).T.tolist() == [[0, 2, 3], [3, 3, 3], [3, 3, 5]]


@settings(max_examples=25, deadline=None)
@given(
    block=st.sampled_from([4, 8, 16, 32]),
    rows=st.integers(1, 70),
    cols=st.integers(1, 100),
    n=st.sampled_from([1, 3, 6, 7, 13, 65]),
    density=st.sampled_from([0.0, 0.2, 1.0]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", "silu"]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 1000),
)
def test_natural_bsr_matches_dense(block, rows, cols, n, density, bias, act, residual, threads, seed):
    w = random_weight(rows, cols, density, seed, f"block{block}")
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, cols, generator=g)
    b = torch.randn(rows, generator=g) if bias else None
    r = torch.randn(n, rows, generator=g) if residual else None
    fmt = BSR(block) if block == 4 else registry.get_format(f"bsr{block}x{block}")  # 4x4 is not registered
    layer = SparseLinear("t", fmt, w, b, act, residual, threads=threads)
    assert layer.natural and layer.kernels(n)[0].spec.form == "natural"
    got = layer(x, r) if residual else layer(x)
    assert_close(got, reference(x, w, b, act, r))


def test_natural_bsr_strided_input_and_value_refresh():
    """A transposed (column-strided) input; packed values changed in place reach the kernel's copy."""
    w = random_weight(64, 48, 0.5, 7, "block16")
    layer = SparseLinear("t", registry.get_format("bsr16x16"), w, None, None, False, threads=2)
    x = torch.randn(48, 5).t()
    assert_close(layer(x), reference(x, w))
    for packed, _, _ in layer.slabs:
        packed.buffers["values"] *= 2.0
    layer.sync_values()
    assert_close(layer(x), reference(x, 2.0 * w))


def test_natural_bsr_off_by_knob_uses_sparsifier():
    w = random_weight(32, 32, 0.5, 8, "block8")
    with knobs.scope(bsr_vector_kernel=False):
        layer = SparseLinear("t", registry.get_format("bsr8x8"), w, None, None, False)
    assert not layer.natural and layer.kernels(4)[0].spec.form == "scatter"
    x = torch.randn(4, 32)
    assert_close(layer(x), reference(x, w))


def test_slabs_balance_nonzeros_on_row_quanta():
    """A weight whose nonzeros crowd into its first rows: the two threads' slabs hold about equal nonzeros."""
    from sparsec.targets.cpu.sparse_linear import slab_bounds

    w = random_weight(512, 256, 0.05, 3)
    w[:128] = random_weight(128, 256, 1.0, 4)
    bounds = slab_bounds(w, 1, 2)
    assert bounds[0][0] == 0 and bounds[-1][1] == 512 and all(r0 % 64 == 0 for r0, _ in bounds)
    nnz = [int((w[r0:r1] != 0).sum()) for r0, r1 in bounds]
    assert max(nnz) < 0.65 * sum(nnz), (bounds, nnz)  # equal rows would put 84% in the first slab
    assert slab_bounds(torch.zeros(512, 8), 1, 2) == [(0, 256), (256, 512)]
    assert slab_bounds(w, 16, 3)[0][1] % 64 == 0
    layer = SparseLinear("t", registry.get_format("csr"), w, torch.randn(512), "relu", False, threads=2)
    assert [r for _, _, r in layer.slabs] == bounds
    x = torch.randn(16, 256)
    assert_close(layer(x), reference(x, w, layer_bias(layer), "relu"))


def layer_bias(layer: SparseLinear) -> torch.Tensor:
    """The bias a layer packed, gathered back from its slabs."""
    return torch.cat([b[: r1 - r0] for _, b, (r0, r1) in layer.slabs])


@settings(max_examples=15, deadline=None)
@given(
    rows=st.integers(1, 200),
    cols=st.integers(1, 150),
    n=st.sampled_from([2, 9, 64, 67]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2]),
    fmt=st.sampled_from(["csr", "bsr8x8"]),
    seed=st.integers(0, 1000),
)
def test_prepared_natural_calls_follow_each_calls_tensors(rows, cols, n, residual, threads, fmt, seed):
    """The prepared descriptors of a layer (``natural_call.Plan``) are re-pointed per call: new inputs, row-strided views
    of X and of the residual, then the general path while another call holds the plan (and always for a
    BSR weight whose blocks pad rows or columns)."""
    w = random_weight(rows, cols, 0.2, seed)
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(rows, generator=g)
    layer = SparseLinear("t", registry.get_format(fmt), w, b, "relu", residual, threads=threads)
    for k in range(4):
        wide = torch.randn(n, 2 * cols + 1, generator=g)
        x = wide[:, 1 : cols + 1] if k == 1 else wide[:, :cols].contiguous()
        r = torch.randn(n, rows + 3, generator=g)[:, 3:] if k == 2 else torch.randn(n, rows, generator=g)
        want = reference(x, w, b, "relu", r if residual else None)
        if k == 3:  # a concurrent call holds the plan: this one builds its own descriptors
            assert layer._plan_lock.acquire(blocking=False)
        try:
            got = layer(x, r) if residual else layer(x)
        finally:
            if k == 3:
                layer._plan_lock.release()
        assert_close(got, want)
    unpadded = fmt == "csr" or (rows % 8 == 0 and cols % 8 == 0)  # BSR's padded blocks take the general path
    assert (layer._plans[n] is not None) == unpadded


def test_prepared_natural_calls_from_threads_and_after_pickling():
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    w = random_weight(300, 200, 0.1, 1)
    layer = SparseLinear("t", registry.get_format("csr"), w, None, None, False, threads=2)
    xs = [torch.randn(64, 200) for _ in range(16)]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(layer, xs))
    for x, y in zip(xs, outs, strict=True):
        assert_close(y, reference(x, w))
    assert 64 in layer._plans
    again = pickle.loads(pickle.dumps(layer))
    assert not again._plans
    assert_close(again(xs[0]), reference(xs[0], w))
