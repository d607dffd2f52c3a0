"""The toolkit's finalized models go straight into sparse_compile and keep their outputs."""

from __future__ import annotations

import torch
from torch import nn

import sparsec
from sparsec import prune


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


def test_magnitude_and_nm_models_compile_and_match():
    x = torch.randn(32, 64)
    for pruner, fmt in ((prune.MagnitudePruner(0.9), "csr"), (prune.NMPruner(2, 4), "nm2:4")):
        model = _mlp()
        pruner.prepare(model, [m for m in model if isinstance(m, nn.Linear)])
        pruner.step()
        model = pruner.finalize()
        cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format=fmt, min_weight_numel=0)
        assert all(r.format == fmt for r in cm.report().layers)
        with torch.no_grad():
            torch.testing.assert_close(cm(x), model(x), rtol=1e-4, atol=1e-4)
