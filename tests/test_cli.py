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


def _small_mlp():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.rand_like(model[0].weight) > 0.9)
    return model, (torch.randn(8, 64),)


def _json(out: str) -> dict:
    import json

    return json.loads(out[: out.rindex("}") + 1])


def test_report_demo_model_table_and_plots(tmp_path, capsys):
    from sparsec.cli import main

    assert main(["report", "mlp", "--repeats", "1", "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("layer ") and "fc1" in out and "pJ/FLOP" in out
    for name in ("density.png", "time.png", "speedup.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_report_checkpoints(tmp_path, capsys):
    """torch.save of a CompiledModel, of a module with --inputs, of {'model', 'inputs'}; the errors."""
    import pytest
    import torch

    import sparsec
    from sparsec.cli import main

    model, inputs = _small_mlp()
    cm = sparsec.sparse_compile(model, inputs, target="cpu", min_weight_numel=1024, force_format="csr")
    torch.save(cm, tmp_path / "cm.pt")
    assert main(["report", str(tmp_path / "cm.pt"), "--json", "--repeats", "1", "--plots", str(tmp_path / "p")]) == 0
    data = _json(capsys.readouterr().out)
    assert data["compiled"] and data["layers"][0]["kind"] == "csr"
    assert data["layers"][0]["executed_flops"] == 2 * 8 * int((model[0].weight != 0).sum())
    assert (tmp_path / "p" / "speedup.png").stat().st_size > 1000
    assert main(["inspect", "lowered", "--model", str(tmp_path / "cm.pt")]) == 0
    assert "sparsec_" in capsys.readouterr().out

    torch.save(model, tmp_path / "module.pt")
    torch.save(inputs, tmp_path / "inputs.pt")
    assert main(["report", str(tmp_path / "module.pt"), "--inputs", str(tmp_path / "inputs.pt"), "--json",
                 "--repeats", "1"]) == 0
    data = _json(capsys.readouterr().out)
    assert not data["compiled"] and data["layers"][0]["executed_flops"] == 2 * 8 * 128 * 64
    torch.save({"model": model, "inputs": inputs}, tmp_path / "both.pt")
    assert main(["report", str(tmp_path / "both.pt"), "--compiled", "--json", "--repeats", "1"]) == 0
    assert _json(capsys.readouterr().out)["compiled"]

    for bad in (["report", str(tmp_path / "module.pt")],  # no inputs
                ["report", str(tmp_path / "inputs.pt")],  # not a module
                ["report", str(tmp_path / "missing.pt")],
                ["inspect", "lowered", "--model", str(tmp_path / "module.pt")]):  # not compiled
        with pytest.raises(SystemExit):
            main(bad)
    err = capsys.readouterr().err
    assert "--inputs" in err and "not a compiled model" in err and "neither" in err
