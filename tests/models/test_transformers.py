"""HF BertModel (attention mask with padding) and GPT2Model (Conv1D weights [in, out]) vs eager."""

from __future__ import annotations

import pytest
import torch

import sparsec
from tests.conftest import assert_close
from tests.models import zoo

pytestmark = pytest.mark.filterwarnings("ignore")


# the built-in rates and no measurement (autotune=False): these tests check how the choices those rates make
# are lowered, and a measurement on this machine would make the choice of these tiny layers timing-dependent
@pytest.fixture(scope="module")
def bert():
    model, inputs = zoo.bert()
    return model, inputs, sparsec.sparse_compile(model, inputs, target="cpu", calibrate=False, autotune=False)


@pytest.fixture(scope="module")
def gpt2():
    model, inputs = zoo.gpt2()
    return model, inputs, sparsec.sparse_compile(model, inputs, target="cpu", calibrate=False, autotune=False)


def test_bert_matches_eager_with_padding_mask(bert):
    model, inputs, cm = bert
    assert inputs[1][-1].eq(0).any(), "the example must pad"
    with torch.no_grad():
        got, want = cm(*inputs), model(*inputs)
    assert_close(got.last_hidden_state, want.last_hidden_state)
    assert_close(got.pooler_output, want.pooler_output)


def test_bert_encoder_layers_are_sparse_and_residuals_fused(bert):
    _, _, cm = bert
    layers = {r.name: r for r in cm.report().layers}
    encoder = [r for name, r in layers.items() if name.startswith("encoder.")]
    assert len(encoder) == 12  # q, k, v, attention output, intermediate, output per layer
    assert all(r.format != "dense" and r.density < 0.15 for r in encoder)
    assert "gelu" in layers["encoder.layer.0.intermediate.dense"].fused
    # eval-mode dropout is removed, so the output projection absorbs the residual add
    assert "residual" in layers["encoder.layer.0.output.dense"].fused
    assert "dropout" not in cm.report().torch_ops


def test_bert_other_batch_and_sequence_lengths(bert):
    model, _, cm = bert
    for batch, seq in ((1, 32), (3, 20), (2, 7)):
        ids, mask = zoo.bert_inputs(batch, seq, seed=batch * 100 + seq)
        with torch.no_grad():
            assert_close(cm(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state)


def test_gpt2_conv1d_weights_are_read_in_out(gpt2):
    model, inputs, cm = gpt2
    with torch.no_grad():
        assert_close(cm(*inputs).last_hidden_state, model(*inputs).last_hidden_state)
    layers = {r.name: r for r in cm.report().layers}
    # c_attn stores [in=128, out=384]; the report shows the [out, in] matrix the kernel multiplies
    assert layers["h.0.attn.c_attn"].shape == (384, 128)
    assert layers["h.0.mlp.c_proj"].shape == (128, 512)
    assert all(r.format != "dense" for r in layers.values())


def test_gpt2_other_sequence_length(gpt2):
    model, _, cm = gpt2
    ids = torch.randint(0, 1000, (3, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert_close(cm(ids).last_hidden_state, model(ids).last_hidden_state)
