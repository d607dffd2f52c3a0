"""A model whose train() result differs from eval() raises in train() mode, even when no Dropout/BatchNorm
module shows it (issue 11, item 8): functional dropout, a branch on ``self.training``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsec
from sparsec.errors import UnsupportedError
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


@pytest.mark.parametrize("cls", [FunctionalDropout, TrainBranch, Counter])
def test_train_dependent_model_in_train_mode_raises(cls):
    model, x = cls(), torch.randn(4, 32)
    with pytest.raises(UnsupportedError, match=r"model\.eval\(\)"):
        sparsec.sparse_compile(model, (x,), **OPTS)
    model.eval()
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert [r.format for r in cm.report().layers] == ["csr"]
    assert_close(cm(x), model(x))
    if cls is Counter:
        assert int(model.seen) == 0  # the check's train-mode run left the buffer as it was
    model.train()
    with pytest.raises(UnsupportedError, match=r"model\.eval\(\)"):
        cm(x)
    model.eval()
    assert_close(cm(x), model(x))


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
    """cm.train() must not run eval semantics silently either: it puts the source model in train mode, so
    the next call raises as above; cm.eval() makes it callable again."""
    model, x = cls().eval(), torch.randn(4, 32)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert cm.train() is cm and model.training
    with pytest.raises(UnsupportedError, match=r"model\.eval\(\)"):
        cm(x)
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
