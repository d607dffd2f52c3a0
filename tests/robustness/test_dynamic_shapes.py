"""Other batch sizes, sequence lengths and image sizes after compiling: the right answer or an InputError
that names the shape, never a wrong answer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsec
from sparsec.demo import prune_linears
from sparsec.models import MLP
from tests.conftest import assert_close
from tests.models import zoo


def test_size_relation_broken_recompiles_or_names_the_shape():
    """A flatten into a Linear fixes H * W but not H or W: other splits recompile, other products fail."""
    torch.manual_seed(0)
    model = zoo.FlattenCNN(8, 16).eval()
    cm = sparsec.sparse_compile(model, (torch.randn(2, 3, 16, 16),), target="cpu", calibrate=False)
    for shape in ((3, 3, 16, 16), (2, 3, 8, 32)):  # 8 * 32 == 16 * 16: the same Linear width
        x = torch.randn(*shape)
        with torch.no_grad():
            assert_close(cm(x), model(x))
    with pytest.raises(sparsec.InputError, match=r"\(2, 3, 24, 24\)"):
        cm(torch.randn(2, 3, 24, 24))
    with torch.no_grad():  # still fine afterwards
        x = torch.randn(2, 3, 16, 16)
        assert_close(cm(x), model(x))


def test_static_capture_compiles_a_variant_per_shape_up_to_the_limit():
    model = prune_linears(MLP(32, 64, 16).eval(), 0.9)
    cm = sparsec.sparse_compile(model, (torch.randn(4, 32),), target="cpu", dynamic=False, max_variants=3,
                                force_format="csr", min_weight_numel=0, calibrate=False)
    for batch in (4, 2, 9, 2, 4):
        x = torch.randn(batch, 32)
        assert_close(cm(x), model(x))
    with pytest.raises(sparsec.InputError, match=r"\[\(5, 32\)\].*max_variants=3"):
        cm(torch.randn(5, 32))


def test_fixed_dimension_error_names_the_shape():
    model, (x,) = zoo.cnn(width=8)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False)
    with pytest.raises(sparsec.InputError, match=r"\(2, 4, 32, 32\).*dimension 1 must be 3"):
        cm(torch.randn(2, 4, 32, 32))


def test_sequence_of_one_and_empty_batch():
    model = prune_linears(nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Linear(96, 48)).eval(), 0.9)
    cm = sparsec.sparse_compile(model, (torch.randn(3, 10, 48),), target="cpu", force_format="csr",
                                min_weight_numel=0, calibrate=False)
    for shape in ((3, 1, 48), (1, 1, 48), (1, 10, 48), (2, 33, 48)):
        x = torch.randn(*shape)
        assert_close(cm(x), model(x))
