"""Shared test helpers: random sparse weights of every pattern, the dense oracle, poisoned outputs."""

from __future__ import annotations

import os
import tempfile

# Tests never read or write the user's cache: one fresh cache directory per test session.
os.environ["SPARSEC_CACHE_DIR"] = tempfile.mkdtemp(prefix="sparsec-test-cache-")
# Tests compile the same models many times and check what a compile does (warnings, stage texts, kernel
# counts): the captured-graph cache would replay earlier compiles. tests/runtime/test_graph_cache.py
# turns it on where it is the subject.
os.environ["SPARSEC_GRAPH_CACHE"] = "0"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sparsec import knobs  # noqa: E402

ACT = {None: lambda t: t, "relu": torch.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every kernel output buffer starts as NaN: an element a kernel fails to write fails the test."""
    with knobs.scope(poison_outputs=True):
        yield


def random_weight(rows: int, cols: int, density: float, seed: int, pattern: str = "unstructured") -> torch.Tensor:
    """A random weight of the given pattern: 'unstructured', 'nm2:4' style, or 'block<b>'."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    if pattern == "unstructured":
        return w * (torch.rand(rows, cols, generator=g) < density)
    if pattern.startswith("nm"):
        n, m = (int(v) for v in pattern[2:].split(":"))
        pad = (-cols) % m
        wp = F.pad(w, (0, pad)).reshape(rows, -1, m)
        keep = wp.abs().topk(n, dim=2).indices
        mask = torch.zeros_like(wp, dtype=torch.bool).scatter_(2, keep, True)
        mask &= torch.rand(mask.shape, generator=g) < max(density * m / n, 0.0)  # some groups sparser
        return (wp * mask).reshape(rows, -1)[:, :cols]
    if pattern.startswith("block"):
        b = int(pattern[5:])
        br, bc = -(-rows // b), -(-cols // b)
        blocks = torch.rand(br, bc, generator=g) < density
        mask = blocks.repeat_interleave(b, 0).repeat_interleave(b, 1)[:rows, :cols]
        return w * mask
    raise ValueError(pattern)


def reference(x, w, bias=None, activation=None, residual=None):
    """The dense torch result the kernels must match."""
    y = ACT[activation](F.linear(x, w, bias))
    return y + residual if residual is not None else y


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-4) -> None:
    """fp32 closeness relative to the output's scale (the issue's tolerance)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert not torch.isnan(got).any(), "output holds NaN: an element was never written"
    scale = want.abs().max().clamp_min(1.0)
    err = (got - want).abs().max() / scale
    assert err <= rtol, f"max error {err:.3e} relative to scale {scale:.3e}"
