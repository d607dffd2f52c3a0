"""Calling conventions and model shapes that once crashed: two sparse layers added, non-tensor inputs,
3-d constant weights, models built under inference_mode (issue 11, items 1, 2, 5, 7), dataclass results."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import sparsec
from sparsec.errors import CaptureError, InputError
from tests.conftest import assert_close, random_weight

OPTS = dict(target="cpu", force_format="csr", calibrate=False, min_weight_numel=0)


def _sparse_linear(i: int, o: int, seed: int) -> nn.Linear:
    lin = nn.Linear(i, o)
    with torch.no_grad():
        lin.weight.copy_(random_weight(o, i, 0.1, seed))
    return lin


class ParallelResidual(nn.Module):
    """Phi / GPT-NeoX / GPT-J shape: two sparse branches of the same input, summed (optionally activated)."""

    def __init__(self, act: bool) -> None:
        super().__init__()
        self.a, self.b, self.act = _sparse_linear(32, 32, 0), _sparse_linear(32, 32, 1), act

    def forward(self, x):
        a = self.a(x)
        return (torch.relu(a) if self.act else a) + self.b(x)


@pytest.mark.parametrize("act", [False, True])
def test_two_sparse_layers_added_fuse_once(act):
    model = ParallelResidual(act).eval()
    x = torch.randn(4, 32)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert_close(cm(x), model(x))
    assert [r.format for r in cm.report().layers] == ["csr", "csr"]
    assert sum("residual" in r.fused for r in cm.report().layers) == 1  # the add belongs to one kernel
    x2 = torch.randn(7, 32)
    assert_close(cm(x2), model(x2))


def test_two_sparse_layers_added_through_torch_compile():
    torch._dynamo.reset()
    model = ParallelResidual(False).eval()
    x = torch.randn(4, 32)
    fn = torch.compile(model, backend="sparsec", options={"force_format": "csr", "min_weight_numel": 0})
    with torch.no_grad():
        assert_close(fn(x), model(x))


class WithConstants(nn.Module):
    """Python scalars and HF-style flags next to the tensor input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = _sparse_linear(32, 32, 2)

    def forward(self, x, scale=1.0, steps=1, flip=False, use_cache=True, output_hidden_states=False):
        y = self.fc(x) * scale * steps
        y = -y if flip else y
        return (y, x) if output_hidden_states else y


def test_non_tensor_inputs_same_values_run():
    model = WithConstants().eval()
    x = torch.randn(4, 32)
    kwargs = {"use_cache": False, "output_hidden_states": True}
    cm = sparsec.sparse_compile(model, (x, 2.0, 3, True), kwargs, **OPTS)
    for xi in (x, torch.randn(4, 32)):
        got, want = cm(xi, 2.0, 3, True, **kwargs), model(xi, 2.0, 3, True, **kwargs)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])


def test_non_tensor_inputs_other_values_recompile():
    model = WithConstants().eval()
    x = torch.randn(4, 32)
    cm = sparsec.sparse_compile(model, (x, 2.0), {"flip": False}, **OPTS)
    # another value of a baked-in constant is a different graph: it gets its own variant, never the old one
    assert_close(cm(x, 0.5, flip=True), model(x, 0.5, flip=True))
    assert_close(cm(x, 2.0, flip=False), model(x, 2.0, flip=False))
    assert_close(cm(x, 2, flip=False), model(x, 2, flip=False))  # int 2 is not float 2.0 to export
    with pytest.raises(InputError, match="keyword"):
        cm(x, 2.0, flop=False)


class PerHead(nn.Module):
    """x @ W[heads, in, out]: a batched constant weight (and a 2-d one beside it)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(random_weight(4 * 32, 16, 0.1, 3).reshape(4, 32, 16))
        self.fc = _sparse_linear(64, 32, 4)

    def forward(self, x):  # x [B, 64]
        h = self.fc(x)  # [B, 32]
        heads = torch.matmul(h.unsqueeze(0).expand(4, -1, -1), self.w)  # [4, B, 16]
        return heads + torch.einsum("bi,hio->hbo", h, self.w)


def test_3d_constant_weight_stays_dense_with_a_note():
    model = PerHead().eval()
    x = torch.randn(5, 64)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert_close(cm(x), model(x))
    rep = cm.report()
    assert [r.name for r in rep.layers] == ["fc"]
    assert any("w [4x32x16] stays dense" in n for n in rep.notes), rep.notes
    assert "note: w [4x32x16]" in str(rep)


def test_model_built_under_inference_mode():
    with torch.inference_mode():
        model = nn.Sequential(_sparse_linear(32, 64, 5), nn.ReLU(), _sparse_linear(64, 32, 6)).eval()
    x = torch.randn(3, 32)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    with torch.inference_mode():
        want = model(x)
    assert_close(cm(x), want)
    assert [r.format for r in cm.report().layers] == ["csr", "csr"]
    model[0].weight = nn.Parameter(torch.zeros(64, 32))  # replaced weights are still noticed
    with torch.inference_mode():
        want = model(x)
    assert_close(cm(x), want)


def test_model_and_example_inputs_made_under_inference_mode():
    """Inputs made under inference_mode too (export cannot save inference tensors for backward)."""
    with torch.inference_mode():
        model = nn.Sequential(_sparse_linear(32, 48, 7), nn.GELU(), _sparse_linear(48, 16, 8)).eval()
        x = torch.randn(5, 32)
        want = model(x)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert [r.format for r in cm.report().layers] == ["csr", "csr"]
    assert_close(cm(x), want)
    with torch.inference_mode():  # compiling and calling inside inference_mode work as well
        cm2 = sparsec.sparse_compile(model, (x,), **OPTS)
        assert_close(cm2(x), want)
        assert_close(cm(x[:3]), want[:3])


@dataclasses.dataclass
class _Out:
    y: torch.Tensor
    z: torch.Tensor


@dataclasses.dataclass
class _RegisteredOut(_Out):
    pass


torch.export.register_dataclass(_RegisteredOut)


class ReturnsDataclass(nn.Module):
    def __init__(self, cls) -> None:
        super().__init__()
        self.fc, self.cls = _sparse_linear(32, 32, 8), cls

    def forward(self, x):
        return self.cls(self.fc(x), x + 1)


def test_dataclass_output_unregistered_says_how_registered_works():
    """A dataclass result once crashed the train-mode check (``==`` of tensors); now capture names the remedy."""
    x = torch.randn(4, 32)
    with pytest.raises(CaptureError, match=r"register_dataclass\(_Out\)"):
        sparsec.sparse_compile(ReturnsDataclass(_Out).eval(), (x,), **OPTS)
    model = ReturnsDataclass(_RegisteredOut).eval()
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    got, want = cm(x), model(x)
    assert type(got) is _RegisteredOut
    assert_close(got.y, want.y)
    assert_close(got.z, want.z)
