"""Bad input gets a clear error that names the problem, before any kernel runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsec
from sparsec.demo import prune_linears
from sparsec.models import MLP


@pytest.fixture(scope="module")
def compiled():
    torch.manual_seed(0)
    model = prune_linears(MLP(32, 64, 16).eval(), 0.9)
    return model, sparsec.sparse_compile(model, (torch.randn(4, 32),), target="cpu", min_weight_numel=0)


def test_wrong_dtype(compiled):
    _, cm = compiled
    with pytest.raises(sparsec.InputError, match="dtype torch.float64"):
        cm(torch.randn(4, 32, dtype=torch.float64))


def test_wrong_rank(compiled):
    _, cm = compiled
    with pytest.raises(sparsec.InputError, match="rank 3"):
        cm(torch.randn(2, 4, 32))


def test_wrong_feature_dim_names_the_shape(compiled):
    _, cm = compiled
    with pytest.raises(sparsec.InputError, match=r"\(4, 31\)"):
        cm(torch.randn(4, 31))


def test_wrong_number_of_inputs(compiled):
    _, cm = compiled
    with pytest.raises(sparsec.InputError, match="number of inputs"):
        cm(torch.randn(4, 32), torch.randn(4, 32))


def test_not_a_tensor(compiled):
    _, cm = compiled
    with pytest.raises(sparsec.InputError, match="expected a tensor"):
        cm([1.0] * 32)


def test_non_exportable_model():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x)
            return x

    with pytest.raises(sparsec.CaptureError, match="data-dependent|control flow"):
        sparsec.sparse_compile(Branchy(), (torch.randn(2, 8),), target="cpu")


def test_not_a_module_and_bad_options():
    with pytest.raises(sparsec.CaptureError, match="nn.Module"):
        sparsec.sparse_compile(lambda x: x, (torch.randn(2),), target="cpu")
    with pytest.raises(ValueError, match="target"):
        sparsec.sparse_compile(nn.Linear(2, 2), (torch.randn(2, 2),), target="tpu")
    with pytest.raises(TypeError):
        sparsec.sparse_compile(nn.Linear(2, 2), (torch.randn(2, 2),), target="cpu", no_such_option=1)


def test_model_training_flag_restored():
    model = MLP(8, 16, 4).train()
    sparsec.sparse_compile(model, (torch.randn(2, 8),), target="cpu")
    assert model.training
