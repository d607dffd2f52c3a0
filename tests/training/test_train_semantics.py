"""Train-mode guard, backward guard, and the O(nnz) value refresh after optimizer steps."""

import numpy as np
import pytest
import torch

import sparsec
from sparsec.errors import UnsupportedError
from tests.training.test_grad import Block, prune_


def _model(seed=0):
    torch.manual_seed(seed)
    model = Block(64, 128, "relu", True)
    gen = torch.Generator().manual_seed(seed)
    prune_(model.up.weight, "csr", gen)
    prune_(model.down.weight, "csr", gen)
    return model


def test_train_mode_dropout_runs_as_in_eager():
    """Once refused; now a train-mode variant (tests/training/test_train_mode.py has the full checks)."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Dropout(0.5))
    x = torch.randn(4, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False)
    with torch.no_grad():
        torch.manual_seed(0)
        y = cm(x)
        torch.manual_seed(0)
        torch.testing.assert_close(y, model(x))
        model.eval()
        torch.testing.assert_close(cm(x), model(x))


def test_untrainable_graph_raises_on_backward():
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), torch.nn.BatchNorm2d(16)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.rand_like(model[0].weight) > 0.9)
    x = torch.randn(2, 8, 12, 12)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False, force_format="csr",
                             min_weight_numel=0)
    assert [layer.format for layer in cm.report().layers] == ["csr"]
    y = cm(x)  # inference still works; the folded BatchNorm has no parameter to give a gradient to
    torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(UnsupportedError, match="backward"):
        y.sum().backward()


def test_optimizer_steps_refresh_values_without_recompiling():
    model = _model()
    x = torch.randn(16, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", calibrate=False)
    compiled = cm._primary
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mask = model.up.weight != 0
    for _ in range(3):
        opt.zero_grad()
        cm(x).pow(2).mean().backward()
        opt.step()
    assert cm._primary is compiled  # refreshed in place, not recompiled
    assert torch.equal(model.up.weight != 0, mask)  # static sparse training keeps the pattern
    with torch.no_grad():
        torch.testing.assert_close(cm(x), model(x), rtol=1e-4, atol=1e-5)


def test_mask_change_repacks():
    model = _model()
    x = torch.randn(16, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", calibrate=False)
    compiled = cm._primary
    with torch.no_grad():
        model.up.weight[0, :].fill_(0.5)  # grow: positions that were not stored
        y = cm(x)
    assert cm._primary is not compiled
    torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-5)


def test_negative_zeros_outside_the_pattern_are_not_a_mask_change():
    """Multiplicative pruning leaves -0.0 at pruned negative weights: the refresh counts them as zeros and
    leaves the parameter alone, and a real nonzero outside is still seen as a mask change."""
    from sparsec.targets.cpu.sparse_grad import refresh_values

    model = _model()
    x = torch.randn(16, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", calibrate=False)
    cm(x.requires_grad_()).sum().backward()
    mod = cm.graph_module.sparsec_up
    assert mod.trainable.kernel  # CSR: the refresh kernel
    w = model.up.weight
    with torch.no_grad():
        w[w == 0] = -0.0  # every pruned weight of up
    before = w.detach().clone()
    version = w._version
    assert refresh_values(mod)
    assert bool(torch.signbit(w[w == 0]).all()) and w._version == version and torch.equal(w, before)
    with torch.no_grad():
        w.view(-1)[int(torch.nonzero(w.view(-1) == 0)[0])] = 1e-3
    assert not refresh_values(mod)


@pytest.mark.parametrize("fmt", ["csr", "bsr16x16", "nm2:4", "coo"])
def test_refresh_equals_a_fresh_pack(fmt):
    """After optimizer steps the refreshed packed values (forward, W^T copy, twin) are a fresh pack's."""
    from sparsec.targets.cpu import sparse_grad

    torch.manual_seed(1)
    model = Block(64, 128, "gelu", True)
    gen = torch.Generator().manual_seed(1)
    prune_(model.up.weight, fmt, gen)
    prune_(model.down.weight, fmt, gen)
    x = torch.randn(16, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format=fmt, calibrate=False, threads=2,
                                min_weight_numel=0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        cm(x.requires_grad_()).pow(2).mean().backward()
        opt.step()
    mods = [m for m in cm.graph_module.modules() if getattr(m, "trainable", None) is not None]
    assert mods and all(m.trainable.transposed is not None for m in mods)
    for m in mods:
        assert sparse_grad.refresh_values(m)
        for fresh, (packed, b, _) in zip(m._pack(m.trainable.refs[0].detach(), m.trainable.refs[1], len(m.slabs)),
                                         m.slabs, strict=True):
            for name, buf in fresh[0].buffers.items():
                assert np.array_equal(buf, packed.buffers[name]), name
            if b is not None:
                assert torch.equal(fresh[1], b)
        tmod = m.trainable.transposed[0]
        wt = m.trainable.refs[0].detach().t().contiguous()
        for fresh, (packed, _, _) in zip(tmod._pack(wt, None, len(tmod.slabs)), tmod.slabs, strict=True):
            assert np.array_equal(fresh[0].buffers["values"], packed.buffers["values"])
    with torch.no_grad():
        torch.testing.assert_close(cm(x), model(x), rtol=1e-4, atol=1e-5)
