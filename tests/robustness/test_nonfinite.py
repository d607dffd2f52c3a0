"""NaN / inf semantics (issue 11, item 9): skipped zeros do not propagate a non-finite input, as documented in
README "Shapes and inputs"; ``check_finite=True`` rejects non-finite inputs and weights, naming them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsec
from sparsec.errors import InputError
from tests.conftest import assert_close

OPTS = dict(target="cpu", calibrate=False, autotune=False, min_weight_numel=0)


def _layer(fmt: str) -> nn.Linear:
    torch.manual_seed(0)
    lin = nn.Linear(64, 32).eval()
    keep = torch.rand(32, 64) < 0.1
    if fmt == "nm2:4":
        keep = torch.zeros(32, 64, dtype=torch.bool)
        keep[:, ::2] = True
    elif fmt.startswith("bsr"):
        keep = torch.zeros(32, 64, dtype=torch.bool)
        keep[:16, 16:32] = True
    keep[:, 1] = False  # column 1: every weight zero
    keep[:, 2] = False
    keep[5, 2] = True  # column 2: one stored weight (row 5)
    with torch.no_grad():
        lin.weight.mul_(keep)
        lin.weight[5, 2] = 0.5
    return lin


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_skipped_zeros_do_not_propagate_nonfinite_inputs(bad):
    lin = _layer("csr")
    x = torch.randn(3, 64)
    cm = sparsec.sparse_compile(lin, (x,), force_format="csr", **OPTS)
    assert [r.format for r in cm.report().layers] == ["csr"]
    x[0, 1] = bad  # meets only zero weights
    x[1, 2] = bad  # meets one stored weight (row 5 of the output)
    with torch.no_grad():
        got, want = cm(x), lin(x)
    assert torch.isnan(want[0]).all()  # eager multiplies by the zeros too: NaN * 0 and inf * 0 are NaN
    assert torch.isfinite(got[0]).all()  # the compiled model skips them: row 0 is the finite answer
    clean = x[0].clone()
    clean[1] = 0.0
    with torch.no_grad():
        assert_close(got[0], lin(clean[None])[0])
    # at a column with stored weights the non-finite value reaches exactly those outputs
    assert not torch.isfinite(got[1, 5])
    others = torch.ones(32, dtype=torch.bool)
    others[5] = False
    assert torch.isfinite(got[1, others]).all()
    assert_close(got[2], want[2])  # a finite row is unaffected


@pytest.mark.parametrize("fmt", ["csr", "bsr16x16", "nm2:4"])
def test_nonfinite_outputs_are_a_subset_of_eagers(fmt):
    """Formats that store explicit zeros (a block's, an N:M group's free slot) propagate through those too,
    never further than eager does."""
    lin = _layer(fmt)
    x = torch.randn(4, 64)
    cm = sparsec.sparse_compile(lin, (x,), force_format=fmt, **OPTS)
    assert [r.format for r in cm.report().layers] == [fmt]
    x[0, 1], x[1, 2], x[2, 40] = float("nan"), float("inf"), float("-inf")
    with torch.no_grad():
        got, want = cm(x), lin(x)
    assert (~torch.isfinite(got) <= ~torch.isfinite(want)).all()
    assert_close(got[3], want[3])


def test_check_finite_rejects_inputs_naming_them():
    lin = _layer("csr")
    x = torch.randn(3, 64)
    cm = sparsec.sparse_compile(lin, (x,), force_format="csr", check_finite=True, **OPTS)
    assert_close(cm(x), lin(x))
    x[1, 1] = float("nan")
    x[2, 3] = float("-inf")
    with pytest.raises(InputError, match=r"input 0 \(shape \(3, 64\)\) holds 1 NaN and 1 inf"):
        cm(x)
    with pytest.raises(InputError, match="input 0"):  # the example inputs are checked at compile too
        sparsec.sparse_compile(lin, (x,), force_format="csr", check_finite=True, **OPTS)
    # without the option the same call runs (and follows the documented semantics)
    cm2 = sparsec.sparse_compile(lin, (torch.randn(3, 64),), force_format="csr", **OPTS)
    assert cm2(x).shape == (3, 32)


def test_check_finite_rejects_weights_naming_the_layer():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), _layer("csr")).eval()
    x = torch.randn(3, 64)
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    with pytest.raises(InputError, match=r"parameter '2.weight' \(32, 64\): 0 NaN and 1 inf"):
        sparsec.sparse_compile(model, (x,), force_format="csr", check_finite=True, **OPTS)
    with torch.no_grad():
        model[2].weight[0, 0] = 0.0
    cm = sparsec.sparse_compile(model, (x,), force_format="csr", check_finite=True, **OPTS)
    assert_close(cm(x), model(x))
    with torch.no_grad():  # a weight edited after compiling is checked by the recompile it triggers
        model[0].bias[3] = float("nan")
    with pytest.raises(InputError, match=r"parameter '0.bias'"):
        cm(x)
