"""The shared epilogue: activations against torch over a wide range, and the standalone kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsec.codegen.triton import apply_epilogue
from sparsec.codegen.triton.testing import RTOL

ACTS = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


def _values() -> torch.Tensor:
    # Covers tanh's small-|x| series branch and its switch point, saturation, and large negatives.
    special = torch.tensor([0.0, -0.0, 1e-7, -1e-7, 1e-3, 0.0624, 0.0626, -0.0626, 0.5, -3.0, 9.0, -20.0, 40.0,
                            -80.0, 88.0])
    return torch.cat([special, torch.linspace(-12, 12, 241), torch.randn(256) * 3]).reshape(-1, 16)


@pytest.mark.parametrize("activation", list(ACTS))
def test_activations_match_torch_fp32(activation):
    y = _values()
    got = apply_epilogue(y, activation=activation)
    ref = ACTS[activation](y.double())
    torch.testing.assert_close(got.double(), ref, rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("activation", list(ACTS))
def test_bias_activation_residual_low_precision(dtype, activation):
    g = torch.Generator().manual_seed(1)
    y = (torch.randn(37, 70, generator=g) * 2).to(dtype)
    b = torch.randn(70, generator=g).to(dtype)
    r = torch.randn(37, 70, generator=g).to(dtype)
    out = torch.full_like(y, float("nan"))
    got = apply_epilogue(y, b, activation, r, out=out)
    assert got is out
    ref = ACTS[activation](y.double() + b.double()) + r.double()
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got.double(), ref, rtol=RTOL[dtype], atol=1e-6)


def test_strided_source_and_in_place():
    # The semi-structured path feeds a column slice of a padded result; in-place (out=y) is allowed.
    full = torch.randn(9, 48)
    src = full[:, :40]
    got = apply_epilogue(src, torch.ones(40), "relu")
    torch.testing.assert_close(got, F.relu(src + 1))
    y = torch.randn(4, 3, 8)
    ref = F.gelu(y.clone())
    assert apply_epilogue(y, activation="gelu", out=y) is y
    torch.testing.assert_close(y, ref, rtol=2e-6, atol=2e-7)
