"""A model whose train() result differs from eval() runs its train() semantics in train() mode, even when no
Dropout/BatchNorm module shows it (issue 11, item 8; issue 12): functional dropout, a branch on
``self.training``, a buffer updated in train mode. It once raised; it now gets a train-mode variant."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparsec
from tests.conftest import assert_close, random_weight

OPTS = dict(target="cpu", force_format="csr", calibrate=False, min_weight_numel=0)


class FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 32)
        with torch.no_grad():
            self.fc.weight.copy_(random_weight(32, 32, 0.1, 0))

    def forward(self, x):
        return nn.functional.dropout(self.fc(x), 0.5, self.training)


class TrainBranch(FunctionalDropout):
    def forward(self, x):
        return self.fc(x) * (0.5 if self.training else 1.0)


class Counter(FunctionalDropout):
    """Updates a buffer in train mode (like BatchNorm's running statistics) and scales by it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        if self.training:
            self.seen += 1
        return self.fc(x) + self.seen


def _seeded(fn, x, seed=0):
    with torch.no_grad():
        torch.manual_seed(seed)
        return fn(x)


@pytest.mark.parametrize("cls", [FunctionalDropout, TrainBranch, Counter])
def test_train_dependent_model_in_train_mode_runs_train_semantics(cls):
    model, x = cls(), torch.randn(4, 32)
    ref = copy.deepcopy(model)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert [r.format for r in cm.report().layers] == ["csr"]
    if cls is Counter:
        assert int(model.seen) == 0  # neither the check's train-mode run nor compiling counted
    assert_close(_seeded(cm, x), _seeded(ref, x))
    model.eval()
    ref.eval()
    assert_close(cm(x), ref(x))
    model.train()
    ref.train()
    assert_close(_seeded(cm, x, 1), _seeded(ref, x, 1))
    if cls is Counter:
        assert int(model.seen) == int(ref.seen) == 2


def test_train_mode_model_without_train_behaviour_compiles():
    """train() mode is fine when it changes nothing (sparse training compiles models left in train())."""
    model = nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32), nn.Dropout(0.0))
    with torch.no_grad():
        model[0].weight.copy_(random_weight(32, 32, 0.1, 1))
    x = torch.randn(4, 32)
    state = torch.random.get_rng_state()
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert model.training and torch.equal(state, torch.random.get_rng_state())
    with torch.no_grad():
        assert_close(cm(x), model(x))


@pytest.mark.parametrize("cls", [FunctionalDropout, TrainBranch])
def test_compiled_model_train_reaches_the_source_model(cls):
    """cm.train() puts the source model in train mode, and the next call runs train semantics (not eval
    semantics silently); cm.eval() returns to the eval-mode variant."""
    model, x = cls().eval(), torch.randn(4, 32)
    ref = copy.deepcopy(model).train()
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert cm.train() is cm and model.training
    assert_close(_seeded(cm, x), _seeded(ref, x))
    cm.eval()
    assert not model.training
    assert_close(cm(x), model(x))


def test_compiled_model_train_without_train_behaviour_runs():
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight.copy_(random_weight(32, 32, 0.1, 2))
    x = torch.randn(4, 32)
    cm = sparsec.sparse_compile(model, (x,), **OPTS).train()
    assert model.training
    assert_close(cm(x), model(x))
