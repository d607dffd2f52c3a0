"""Smoke test of benchmarks/bench_training.py: its pieces on a small model; no timing is asserted."""

import sys
from pathlib import Path

import torch

import sparsec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_training as bt  # noqa: E402


def test_pieces_on_a_small_mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))
    bt.prune_linears(model, 0.9)
    assert abs(float((model[0].weight == 0).float().mean()) - 0.9) < 0.01
    masked = bt.masked_copy(model)
    x = torch.randn(16, 64)
    torch.testing.assert_close(masked(x), model(x))
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", calibrate=False, min_weight_numel=0)
    step = bt.make_step(model, cm, x)
    compiled = cm._primary
    step()
    step()
    assert bt.refresh_cost(cm) >= 0
    assert cm._primary is compiled  # steps refreshed values, no recompile
    assert torch.equal(model[0].weight != 0, masked[0].parametrizations.weight.original != 0)
    assert bt.mask_change_cost(cm, model) >= 0
    assert cm._primary is compiled  # the mask change re-packed one layer in place
    mod = next(m for m in cm.graph_module.modules() if getattr(m, "train_refs", None) is not None)
    assert mod.pattern is not None and mod.stored == int(mod.pattern.sum())
    step()  # training goes on with the new pattern


def test_report_flags_load_and_targets():
    r = {"median": {"compiled": 0.01, "dense": 0.03, "masked": 0.035}, "refresh": 0.001, "repack": 0.2,
         "formats": ["csr"], "x": (256, 768)}
    md = bt.report({"mlp": r, "bert": dict(r, median={"compiled": 0.02, "dense": 0.025, "masked": 0.03})},
                   (2.5, 2.0), 2, 3, "python benchmarks/bench_training.py")
    assert "(loaded)" in md and "not final" in md
    assert "| mlp: compiled step ≥ 2.0× eager dense | 3.00× (loaded) | met |" in md
    assert "| bert: compiled step ≥ 1.5× eager dense | 1.25× (loaded) | **missed** |" in md
    assert "10.0%" in md  # refresh as % of the compiled step
