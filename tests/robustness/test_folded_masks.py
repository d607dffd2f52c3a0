"""Sparsity held as masks or parametrizations, and autocast inside forward, must be seen (issue 11, item 10):
torch.nn.utils.prune left unfinalized, sparsec.prune's own masks, any torch parametrization, autocast."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import sparsec
from sparsec import prune
from sparsec.errors import UnsupportedError
from tests.conftest import assert_close

pytestmark = pytest.mark.filterwarnings("ignore")
OPTS = dict(target="cpu", force_format="csr", calibrate=False, autotune=False, min_weight_numel=0)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 32)).eval()


def _check(cm, model, names=("0", "2"), max_density=0.15):
    rows = {r.name: r for r in cm.report().layers}
    assert sorted(rows) == sorted(names), cm.report()
    for r in rows.values():
        assert r.format == "csr" and r.density <= max_density, cm.report()
    for batch in (5, 3):
        x = torch.randn(batch, 48)
        with torch.no_grad():
            assert_close(cm(x), model(x))


def _count_compiles(cm, monkeypatch) -> list:
    calls = []
    real = cm._compile
    monkeypatch.setattr(cm, "_compile", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_torch_prune_unfinalized_masks_are_folded(monkeypatch):
    model = _mlp()
    for lin in (model[0], model[2]):
        tprune.l1_unstructured(lin, "weight", amount=0.9)
    assert tprune.is_pruned(model) and "weight_orig" in dict(model[0].named_parameters())
    cm = sparsec.sparse_compile(model, (torch.randn(4, 48),), **OPTS)
    assert "fold_constants" in cm.stages() and "0.weight_orig" in cm.ir("fold_constants")
    _check(cm, model)
    # the prune hook re-assigns module.weight on every eager call: that is not a weight change
    calls = _count_compiles(cm, monkeypatch)
    x = torch.randn(4, 48)
    with torch.no_grad():
        model(x)
        cm(x)
    assert calls == []
    # the watch still sees the stored tensors: the original (optimizer step) and the mask
    with torch.no_grad():
        model[0].weight_orig.mul_(2.0)
        model[2].weight_mask[:, :16] = 0
    with torch.no_grad():
        assert_close(cm(x), model(x))
    assert calls, "an in-place change to weight_orig / weight_mask must recompile"
    assert cm.report().layers[1].density < 0.1
    # a new pruning step replaces the mask buffer
    tprune.l1_unstructured(model[0], "weight", amount=0.5)
    with torch.no_grad():
        assert_close(cm(x), model(x))
    assert cm.report().layers[0].density <= 0.06


def test_sparsec_prune_masks_are_folded():
    model = _mlp()
    pruner = prune.MagnitudePruner(0.9)
    pruner.prepare(model)
    pruner.step()
    assert parametrize.is_parametrized(model[0], "weight")  # not finalized
    cm = sparsec.sparse_compile(model, (torch.randn(4, 48),), **OPTS)
    _check(cm, model)
    with torch.no_grad():  # the mask changes (a gradual pruner's next step): recompiled and re-folded
        prune.get_mask(model[2]).mask[:, :32] = False
    x = torch.randn(4, 48)
    with torch.no_grad():
        assert_close(cm(x), model(x))
    assert cm.report().layers[1].density < 0.1


class _Keep(nn.Module):
    """A user's own parametrization: W -> W * fixed pattern (every other column block zero)."""

    def __init__(self, shape) -> None:
        super().__init__()
        keep = torch.zeros(shape, dtype=torch.bool)
        keep[:, ::8] = True
        self.register_buffer("keep", keep)

    def forward(self, w):
        return torch.where(self.keep, w, torch.zeros_like(w))


@pytest.mark.parametrize("kind", ["weight_norm", "custom"])
def test_parametrizations_are_folded(kind):
    model = _mlp()
    for lin in (model[0], model[2]):
        if kind == "weight_norm":
            with torch.no_grad():  # every row keeps one entry: a zero row's norm is 0 (0/0 in eager too)
                keep = torch.rand_like(lin.weight) < 0.1
                keep[:, 0] = True
                lin.weight.mul_(keep)
            parametrizations.weight_norm(lin, "weight", dim=0)
        else:
            parametrize.register_parametrization(lin, "weight", _Keep(lin.weight.shape))
    cm = sparsec.sparse_compile(model, (torch.randn(4, 48),), **OPTS)
    _check(cm, model, max_density=0.2)


def test_transposed_weights_are_not_folded():
    """Layout chains of one weight stay for the matchers (training and the O(nnz) refresh read them)."""
    model = _mlp()
    with torch.no_grad():
        for lin in (model[0], model[2]):
            lin.weight.mul_(torch.rand_like(lin.weight) < 0.1)
    cm = sparsec.sparse_compile(model, (torch.randn(4, 48),), **OPTS)
    assert "nothing to do" in cm.ir("fold_constants") or "->" not in cm.ir("fold_constants")
    _check(cm, model)


def test_folded_weights_refuse_backward():
    model = _mlp()
    for lin in (model[0], model[2]):
        tprune.random_unstructured(lin, "weight", amount=0.9)
    cm = sparsec.sparse_compile(model, (torch.randn(4, 48),), **OPTS)
    x = torch.randn(4, 48, requires_grad=True)
    with pytest.raises(UnsupportedError, match="backward"):
        cm(x).sum().backward()


class _Autocast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(48, 64), nn.Linear(64, 32)

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = torch.relu(self.a(x))
        return self.b(h.float())


def test_autocast_in_forward_is_inlined_and_named():
    torch.manual_seed(0)
    model = _Autocast().eval()
    with torch.no_grad():
        for lin in (model.a, model.b):
            lin.weight.mul_(torch.rand_like(lin.weight) < 0.1)
    x = torch.randn(4, 48)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    rep = cm.report()
    rows = {r.name: r for r in rep.layers}
    assert set(rows) == {"a", "b"}, rep  # the layer inside the region is seen, not hidden in a higher-order op
    # the region's layer runs in bfloat16: the 16-bit CSR kernel or dense, as the cost model chooses
    assert rows["a"].format in ("csr", "dense") and rows["a"].density <= 0.15, rep
    assert rows["b"].format == "csr" and rows["b"].density <= 0.15, rep
    assert any("autocast" in n and "bfloat16" in n for n in rep.notes), rep.notes
    for batch in (4, 7):
        x = torch.randn(batch, 48)
        with torch.no_grad():
            got, want = cm(x), model(x)
        assert got.dtype == want.dtype
        assert_close(got, want)


def test_call_inside_autocast_warns_once_and_keeps_its_dtype():
    """Autocast around the call is not applied (eager would return bfloat16): a warning says so, once."""
    model = _mlp().eval()
    x = torch.randn(4, model[0].in_features)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        with pytest.warns(UserWarning, match="inside torch.autocast"):
            got = cm(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cm(x)  # the second call is silent
    assert got.dtype == torch.float32
    with torch.no_grad():
        assert_close(got, model(x))
