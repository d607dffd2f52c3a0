"""sparsec::sparse_linear as a first-class op: opcheck, torch.compile, and the dtype it refuses."""

import pytest
import torch

import sparsec
from sparsec.errors import InputError
from tests.training.test_grad import Block, prune_


def _layer(act="relu", residual=True, seed=1):
    torch.manual_seed(seed)
    model = Block(64, 128, act, residual)
    gen = torch.Generator().manual_seed(seed)
    prune_(model.up.weight, "csr", gen)
    prune_(model.down.weight, "csr", gen)
    x = torch.randn(8, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", calibrate=False, min_weight_numel=0)
    return model, cm


@pytest.mark.parametrize("which", ["sparsec_up", "sparsec_down"])
def test_opcheck(which):
    _, cm = _layer()
    mod = cm.graph_module.get_submodule(which)
    mod.enable_training(*mod.train_refs)
    w, b = mod.train_refs
    gen = torch.Generator().manual_seed(0)
    res = torch.randn(8, mod.out_features, generator=gen, requires_grad=True) if mod.has_residual else None
    for x in (torch.randn(8, mod.in_features, generator=gen),  # contiguous, and the kernels' transposed layout
              torch.randn(mod.in_features, 8, generator=gen).t(), torch.randn(2, 4, mod.in_features, generator=gen)):
        if res is not None:
            res = torch.randn(*x.shape[:-1], mod.out_features, generator=gen, requires_grad=True)
        out = torch.library.opcheck(torch.ops.sparsec.sparse_linear.default,
                                    (x.requires_grad_(), w, b, res, mod._handle))
        assert set(out.values()) == {"SUCCESS"}, out


def test_torch_compile_composes_forward_and_backward():
    model, cm = _layer(act="gelu")
    mod = cm.graph_module.sparsec_up
    mod.enable_training(*mod.train_refs)
    w, b = mod.train_refs

    def f(x):
        return torch.ops.sparsec.sparse_linear(x, w, b, None, mod._handle).sin().sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    x = torch.randn(8, 64, requires_grad=True)
    want, (gx,) = f(x), torch.autograd.grad(f(x), x)
    got = compiled(x)
    (gx_c,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gx_c, gx)
    # the whole compiled model under torch.compile: the same gradients as without
    xx = torch.randn(8, 64, requires_grad=True)
    model.zero_grad()
    torch.compile(cm, backend="aot_eager")(xx).pow(2).sum().backward()
    g_w, g_x = model.up.weight.grad.clone(), xx.grad.clone()
    model.zero_grad()
    xx.grad = None
    cm(xx).pow(2).sum().backward()
    torch.testing.assert_close(model.up.weight.grad, g_w)
    torch.testing.assert_close(xx.grad, g_x)


def test_float64_is_refused_with_a_dtype_error():
    """The CPU kernels are float32 only, so float64 gradcheck cannot run through them: a clear error."""
    _, cm = _layer()
    mod = cm.graph_module.sparsec_up
    mod.enable_training(*mod.train_refs)
    w, b = mod.train_refs
    x = torch.randn(8, 64, dtype=torch.float64, requires_grad=True)
    with pytest.raises(InputError, match="float64.*float32"):
        torch.ops.sparsec.sparse_linear(x, w.double(), b.double(), None, mod._handle)
    with pytest.raises(InputError, match="float64"):
        cm(x)
