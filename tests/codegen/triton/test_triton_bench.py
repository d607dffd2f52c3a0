"""benchmarks/bench_gpu.py: the no-GPU exit and, in smoke mode on the CPU, the whole harness."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]


def _bench_module():
    spec = importlib.util.spec_from_file_location("sparsec_bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_exits_with_clear_message_without_gpu(tmp_path, monkeypatch, capsys):
    bench = _bench_module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([str(tmp_path / "r.md")]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_smoke_run_writes_markdown_and_json(tmp_path):
    bench = _bench_module()
    out = tmp_path / "RESULTS.md"
    rc = bench.main([str(out), "--smoke", "--shapes", "40x70", "--n", "3", "--blocks", "16",
                     "--epilogue", "bias,silu,residual"])
    assert rc == 0
    text = out.read_text()
    assert "SMOKE RUN" in text and "| 40x70 | 3 | bsr16x16 | sparsec triton bsr_linear |" in text
    assert "`python " in text and "--smoke" in text
    payload = json.loads(out.with_suffix(".json").read_text())
    impls = {r["impl"]: r for r in payload["records"]}
    for name in ("cuBLAS F.linear", "sparsec triton bsr_linear", "sparsec triton csr_linear",
                 "sparsec triton nm_linear", "torch semi-structured (cusparselt)", "torch semi-structured (cutlass)"):
        assert name in impls
    for name in ("sparsec triton bsr_linear", "sparsec triton csr_linear", "sparsec triton nm_linear"):
        assert impls[name]["ok"] is True and impls[name]["bad_rows"] == 0
    assert "needs a CUDA GPU" in impls["torch semi-structured (cutlass)"]["note"]
    assert payload["selector_2_4"][0]["choice"] == "sparsec triton nm_linear"


def test_check_catches_unwritten_rows_and_sweep_reports_model_vs_best():
    bench = _bench_module()
    args = bench.parse_args(["x.md", "--smoke"])
    runner = bench.Bench(args, torch.device("cpu"), bench.Timer(False, 1, 1))
    w = torch.randn(24, 40).half()
    prob = bench.Problem(torch.randn(5, 40).half(), None, None, None)
    y = (prob.x.float() @ w.float().t()).half()
    assert bench.check(y, w, prob)[0]
    y[3, 7] = float("nan")
    assert bench.check(y, w, prob)[2] == 1
    from sparsec.codegen.triton import LaunchConfig, csr_linear
    from sparsec.codegen.triton.layouts import dense_to_csr

    parts = dense_to_csr(w)
    runner.sweep("csr", "csr", w, prob, lambda cfg: csr_linear(prob.x, *parts, 24, config=cfg),
                 [LaunchConfig(16, 16, 16), LaunchConfig(32, 32, 16)])
    (s,) = runner.sweeps
    assert s["tried"] == 3 and s["best_us"] > 0 and s["best_config"]["block_k"] == 16
