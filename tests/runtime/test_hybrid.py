"""The hybrid format (BSR blocks + CSR remainder): exact against dense torch, selection, save/load, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsec
from sparsec.errors import InputError
from sparsec.formats import registry
from sparsec.formats.facts import compute_facts
from sparsec.formats.hybrid import Hybrid, split
from sparsec.targets.cpu.hybrid_linear import HybridLinear
from tests.conftest import assert_close, random_weight, reference


def blocks_plus_outliers(rows: int, cols: int, b: int, density: float, outliers: float, seed: int) -> torch.Tensor:
    """Full b x b blocks at ``density`` plus scattered nonzeros at ``outliers``."""
    w = random_weight(rows, cols, density, seed, f"block{b}")
    g = torch.Generator().manual_seed(seed + 1)
    stray = torch.rand(rows, cols, generator=g) < outliers
    return torch.where(stray & (w == 0), torch.randn(rows, cols, generator=g), w)


@settings(max_examples=25, deadline=None)
@given(
    b=st.sampled_from([8, 16]),
    rows=st.integers(1, 70),
    cols=st.integers(1, 70),
    n=st.sampled_from([1, 2, 7, 64, 130]),
    density=st.sampled_from([0.0, 0.2, 0.6]),
    outliers=st.sampled_from([0.0, 0.02, 0.1]),
    bias=st.booleans(),
    activation=st.sampled_from([None, "relu", "gelu", "silu", "tanh"]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 10_000),
)
def test_matches_dense(b, rows, cols, n, density, outliers, bias, activation, residual, threads, seed):
    w = blocks_plus_outliers(rows, cols, b, density, outliers, seed)
    g = torch.Generator().manual_seed(seed + 2)
    bv = torch.randn(rows, generator=g) if bias else None
    x = torch.randn(n, cols, generator=g)
    r = torch.randn(n, rows, generator=g) if residual else None
    mod = HybridLinear("h", Hybrid(b), w, bv, activation, residual, threads)
    with torch.no_grad():
        got = mod(x, r)
    assert not got.isnan().any(), "an output element was never written (poisoned buffers)"
    assert_close(got, reference(x, w, bv, activation, r))


def test_three_dim_input_and_split_is_exact():
    w = blocks_plus_outliers(48, 40, 16, 0.5, 0.05, 3)
    blk, rest = split(w, 16, 0.5)
    assert torch.equal(blk + rest, w) and not ((blk != 0) & (rest != 0)).any()
    fmt = registry.get_format("hybrid16x16")
    assert torch.equal(fmt.unpack(fmt.pack(w)), w)
    mod = HybridLinear("h", fmt, w, None, None, False, 2)
    x = torch.randn(2, 5, 40)
    with torch.no_grad():
        assert_close(mod(x), reference(x, w))
    assert [p.fmt.label for p in mod.parts] == ["bsr16x16", "csr"]


def test_accepts_only_block_structured_weights():
    fmt = registry.get_format("hybrid16x16")
    scattered = random_weight(256, 256, 0.1, 0)
    assert "block" in fmt.accepts(compute_facts(scattered))
    mixed = blocks_plus_outliers(256, 256, 16, 0.1, 0.015, 0)
    assert fmt.accepts(compute_facts(mixed)) is None
    pure = random_weight(256, 256, 0.1, 0, "block16")
    assert "plain bsr" in fmt.accepts(compute_facts(pure))
    assert fmt.accepts_layer(torch.bfloat16, "linear", "cpu") is not None
    assert fmt.accepts_layer(torch.float32, "conv2d", "cpu") is not None
    assert fmt.accepts_layer(torch.float32, "linear", "gpu") is not None


def test_cost_is_the_sum_of_its_parts():
    fmt = registry.get_format("hybrid16x16")
    facts = compute_facts(blocks_plus_outliers(768, 768, 16, 0.1, 0.015, 1))
    bsr, csr = registry.get_format("bsr16x16"), registry.get_format("csr")
    cost = fmt.cost(facts, 64)
    assert cost > 0 and cost < bsr.cost(facts, 64) + csr.cost(facts, 64)


def _model(w: torch.Tensor, bias: bool = True) -> torch.nn.Module:
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        lin.weight.copy_(w)
    return torch.nn.Sequential(lin, torch.nn.GELU()).eval()


def test_force_format_and_save_load(tmp_path):
    w = blocks_plus_outliers(96, 80, 16, 0.3, 0.03, 5)
    model = _model(w).requires_grad_(False)
    x = torch.randn(9, 80)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", min_weight_numel=0, force_format="hybrid16x16")
    assert [layer.format for layer in cm.report().layers] == ["hybrid16x16"]
    with torch.no_grad():
        want = model(x)
        assert_close(cm(x), want)
    cm.save(tmp_path / "m")
    loaded = sparsec.load(tmp_path / "m")
    assert [layer.format for layer in loaded.report().layers] == ["hybrid16x16"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), cm(x), rtol=0, atol=0)


def test_not_chosen_for_weights_that_require_grad():
    w = blocks_plus_outliers(96, 80, 16, 0.3, 0.03, 6)
    cm = sparsec.sparse_compile(_model(w), (torch.randn(9, 80),), target="cpu", min_weight_numel=0,
                                force_format="hybrid16x16")
    layer = cm.report().layers[0]
    assert layer.format == "dense" and "training" in layer.reason


def test_grad_through_the_module_raises():
    w = blocks_plus_outliers(32, 32, 16, 0.5, 0.05, 7)
    mod = HybridLinear("h", registry.get_format("hybrid16x16"), w, None, None, False)
    with pytest.raises(NotImplementedError, match="gradients through the hybrid"):
        mod(torch.randn(4, 32, requires_grad=True))


def test_bad_input():
    w = blocks_plus_outliers(32, 32, 16, 0.5, 0.05, 8)
    fmt = registry.get_format("hybrid16x16")
    mod = HybridLinear("h", fmt, w, None, None, True)
    with torch.no_grad(), pytest.raises(InputError):
        mod(torch.randn(4, 31), torch.randn(4, 32))
    with torch.no_grad(), pytest.raises(InputError, match="residual"):
        mod(torch.randn(4, 32))
    with pytest.raises(ValueError):
        Hybrid(12)
    with pytest.raises(NotImplementedError):
        HybridLinear("h", fmt, w.bfloat16(), None, None, False)
    with pytest.raises(InputError):
        HybridLinear("h", registry.get_format("csr"), w, None, None, False)


def test_selector_skips_scattered_weights():
    model = _model(random_weight(256, 256, 0.1, 9)).requires_grad_(False)
    x = torch.randn(64, 256)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", min_weight_numel=0, calibrate=False)
    assert not cm.report().layers[0].format.startswith("hybrid")
    with torch.no_grad():
        assert_close(cm(x), model(x))
