"""Bad input to the new model kinds: an error that names the problem, raised before any kernel runs;
non-contiguous and channels-last inputs just work."""

from __future__ import annotations

import pytest
import torch

import sparsec
from sparsec.targets.cpu.sparse_linear import SparseLinear
from tests.conftest import assert_close
from tests.models import zoo


@pytest.fixture(scope="module")
def bert():
    model, inputs = zoo.bert(hidden=64, inter=128, seq=12)
    return model, inputs, sparsec.sparse_compile(model, inputs, target="cpu", force_format="csr", calibrate=False)


@pytest.fixture(scope="module")
def cnn():
    model, inputs = zoo.cnn(width=8)
    return model, inputs, sparsec.sparse_compile(model, inputs, target="cpu", force_format="csr",
                                                 min_weight_numel=0, calibrate=False)


@pytest.fixture
def no_kernel(monkeypatch):
    """Fails the test if any sparse kernel module runs."""
    def forbidden(self, *args, **kwargs):
        raise AssertionError(f"kernel {self.layer_name} ran on bad input")

    monkeypatch.setattr(SparseLinear, "forward", forbidden)


@pytest.mark.parametrize("bad, match", [
    (lambda ids, mask: (ids.float(), mask), "input 0: dtype torch.float32.*compiled for torch.int64"),
    (lambda ids, mask: (ids, mask.to("meta")), "input 1: on device meta"),
    (lambda ids, mask: (ids[0], mask), r"input 0: shape \(12,\) has rank 1"),
    (lambda ids, mask: (ids,), "wrong number of inputs"),
    (lambda ids, mask: (ids, mask, mask), "wrong number of inputs"),
    (lambda ids, mask: (ids, mask.tolist()), "input 1: expected a tensor, got list"),
])
def test_bert_bad_inputs(bert, no_kernel, bad, match):
    _, (ids, mask), cm = bert
    with pytest.raises(sparsec.InputError, match=match):
        cm(*bad(ids, mask))


def test_bert_keyword_instead_of_positional(bert, no_kernel):
    _, (ids, mask), cm = bert
    with pytest.raises(sparsec.InputError, match=r"keyword input\(s\) \['attention_mask'\]"):
        cm(ids, attention_mask=mask)


@pytest.mark.parametrize("bad, match", [
    (lambda x: x.double(), "dtype torch.float64"),
    (lambda x: x[:, :2], r"\(2, 2, 32, 32\).*dimension 1 must be 3"),
    (lambda x: x[0], "rank 3"),
    (lambda x: x.to(torch.bfloat16), "dtype torch.bfloat16"),
])
def test_cnn_bad_inputs(cnn, no_kernel, bad, match):
    _, (x,), cm = cnn
    with pytest.raises(sparsec.InputError, match=match):
        cm(bad(x))


def test_non_contiguous_and_channels_last_inputs(bert, cnn):
    model, (ids, mask), cm = bert
    wide_ids, wide_mask = ids.repeat(1, 2), mask.repeat(1, 2)
    with torch.no_grad():  # every other token: a strided view
        got = cm(wide_ids[:, ::2], wide_mask[:, ::2]).last_hidden_state
        assert_close(got, model(wide_ids[:, ::2].contiguous(), wide_mask[:, ::2].contiguous()).last_hidden_state)
    model, (x,), cm = cnn
    with torch.no_grad():
        assert_close(cm(x.to(memory_format=torch.channels_last)), model(x))
        xt = x.transpose(2, 3)  # a transposed view of the image
        assert_close(cm(xt), model(xt.contiguous()))
