"""What the compiler sees: a finalized model exports with plain weights holding the zeros."""

from __future__ import annotations

import torch
from prune_helpers import mlp

import sparsec.prune as prune


def test_finalized_model_exports_with_sparse_plain_weights():
    model = mlp()
    pruner = prune.NMPruner(2, 4)
    pruner.prepare(model)
    pruner.step()
    x = torch.randn(3, 16)
    expected = model(x)
    prune.finalize(model)
    program = torch.export.export(model, (x,))
    state = program.state_dict
    assert not any("parametrizations" in k or k.endswith(".mask") for k in state)
    weights = [v for k, v in state.items() if k.endswith("weight")]
    assert len(weights) == 3
    assert all(prune.is_nm_sparse(w, 2, 4) for w in weights[:2])
    assert torch.allclose(program.module()(x), expected, atol=1e-6)
