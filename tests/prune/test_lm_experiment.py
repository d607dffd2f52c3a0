"""The LM experiment's pipeline, in its --quick mode, writes every row with finite perplexities, the claims,
the compiled-speed table and the plot."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "experiments" / "lm" / "run.py"


def test_quick_lm_experiment_writes_all_rows_claims_and_plot(tmp_path):
    pytest.importorskip("transformers")
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(tmp_path), "--no-cache"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    methods = {(r["method"], r["target_sparsity"]) for r in results["rows"]}
    expected = [("dense", 0.0), ("dense + fine-tune (control)", 0.0), ("IMP, rewind to step 2", 0.8),
                ("IMP mask, random re-init", 0.8)]
    for label in ("magnitude", "Wanda", "SparseGPT"):
        for pattern in ("50%", "2:4", "4:8"):
            expected += [(f"{label} {pattern}, no fine-tune", 0.5), (f"{label} {pattern} + fine-tune", 0.5)]
    expected += [(m, sp) for m in ("gradual magnitude (cubic)", "movement (cubic)") for sp in (0.7, 0.9)]
    expected += [(m, sp) for m in ("static random mask (ERK)", "SET (ERK)", "RigL (ERK)") for sp in (0.8, 0.9)]
    assert not set(expected) - methods, set(expected) - methods
    for row in results["rows"]:
        for run in row["runs"]:
            assert math.isfinite(run["test"]) and math.isfinite(run["val"]) and run["test"] > 1.0
            # exact zeros in the finalized block Linears: at least the target (2:4 / 4:8 / IMP: exactly)
            assert run["sparsity"] >= 100 * row["target_sparsity"] - 0.5, row["method"]
    timed = [r for r in results["rows"] if r["runs"][0]["speed"]]
    assert {r["method"] for r in timed} == {"dense", "SparseGPT 2:4 + fine-tune"}
    for r in timed:
        sp = r["runs"][0]["speed"]
        assert "error" not in sp, sp
        assert sp["compiled_ms"] > 0 and sp["eager_ms"] > 0 and sp["max_abs_diff"] < 1e-3
    assert len(results["claims"]) == 11
    assert all(c["claim"] in proc.stdout for c in results["claims"])
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| claim | result |" in text and "sparse_compile" in text
    assert (tmp_path / "results.png").stat().st_size > 10_000
