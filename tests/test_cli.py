"""The command line runs the demo and prints stages."""

from __future__ import annotations

import subprocess
import sys


def test_inspect_prints_mlir():
    out = subprocess.run(
        [sys.executable, "-m", "sparsec.cli", "inspect", "mlir"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "func.func @sparsec_" in out.stdout and "// kernel" in out.stdout


def test_inspect_prints_a_pass_stage(capsys):
    from sparsec.cli import main

    assert main(["inspect", "select"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# stage select (pass ") and "#   format=" in out and "\ngraph():\n" in out


def test_demo_runs_and_checks(capsys):
    from sparsec.demo import run_demo

    results = run_demo(repeats=2)
    assert set(results) == {"mlp", "transformer_block"}
    for r in results.values():
        assert r["error"] < 1e-4 and r["speedup"] > 0
    assert "speedup" in capsys.readouterr().out
