"""benchmarks/peers/targets.py: the targets table from given figures (no timing), and its 16x16 weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "targets.py"
_spec = importlib.util.spec_from_file_location("peers_targets", _PATH)
targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(targets)


def test_targets_table_marks_met_and_missed():
    peers = {
        "BERT-base 90%": {"torch eager": 0.2, "sparsec": 0.03, "DeepSparse": 0.04},
        "BERT-base dense": {"torch eager": 0.2, "sparsec": 0.21},
        "Linear 3072x768, N=64, 90%": {"sparsec": 0.6e-3, "DeepSparse": 0.5e-3},
    }
    rates = [{"format": "csr", "shape": "768x768", "n": 128, "gflops": 120.0, "sparse_ms": 0.1, "dense_ms": 1.0,
              "speedup": 10.0},
             {"format": "bsr16x16", "shape": "768x768", "n": 64, "gflops": 50.0, "sparse_ms": 0.2, "dense_ms": 1.0,
              "speedup": 5.0}]
    guard = {"dense 3072x768": {"formats": ["dense"], "vs_eager": 0.99, "calibration": "measured"},
             "2:4 3072x768": {"formats": ["csr"], "vs_eager": 0.5, "calibration": "disturbed"}}
    one = {"eager_ms": 400.0, "sparsec_ms": 80.0, "speedup": 5.0}
    md = targets.targets_markdown(peers, rates, one, guard, quick=False).splitlines()
    status = {ln.split(" | ")[0].lstrip("| "): ln.rstrip(" |").rsplit("| ", 1)[1] for ln in md[2:]}
    assert status["BERT-base 90%"] == "met"  # 0.04 / 0.03 = 1.33x
    assert status["Linear 3072x768, N=64, 90%"] == "missed"
    assert status["CSR kernel 768x768, N=128, 90%"] == "met"
    assert status["BERT-base dense"] == "missed"  # 0.95x eager
    assert status["dense 3072x768, calibrated while a GEMM burner ran"] == "met"
    assert status["2:4 3072x768, calibrated while a GEMM burner ran"] == "missed"
    assert status["16x16 blocks 90%, 768x768, N=64"] == "missed"
    assert status["BERT-base 90%, 1 thread, CPU time"] == "met"


def test_block_weight_keeps_whole_blocks_at_ten_percent():
    w = targets._weight(768, 768, 16, torch.Generator().manual_seed(0))
    blocks = (w.view(48, 16, 48, 16) != 0).any(3).any(1)
    assert 0.05 < float(blocks.float().mean()) < 0.15
    assert int((w != 0).sum()) == int(blocks.sum()) * 256
