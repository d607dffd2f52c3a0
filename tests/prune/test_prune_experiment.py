"""The digits experiment's pipeline, in its --quick mode, writes every row and every claim check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "experiments" / "digits" / "run.py"


def test_quick_experiment_writes_all_rows_claims_and_plot(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    methods = {r["method"] for r in results["rows"]}
    for name in ("dense", "2:4 one-shot + fine-tune", "magnitude one-shot + fine-tune", "gradual magnitude (cubic)",
                 "movement (cubic)", "IMP mask, random re-init", "static random mask (ERK)", "RigL (ERK)",
                 "SET (ERK)"):
        assert name in methods
    for row in results["rows"]:
        for run in row["runs"]:
            # Finalized weights hold at least the target's zeros (IMP/static/one-shot: exactly).
            assert run["sparsity"] >= 100 * row["target_sparsity"] - 0.01
    assert len(results["claims"]) == 8
    assert all(("PASS" if c["pass"] else "FAIL") in proc.stdout for c in results["claims"])
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| claim | result |" in text and (tmp_path / "results.png").stat().st_size > 10_000
