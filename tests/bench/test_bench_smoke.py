"""Smoke test of the benchmark harness (sparsec.bench): tiny grid, 1-layer BERT; no timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch

from sparsec.bench.e2e import E2EConfig
from sparsec.bench.grid import GridConfig, grid_cases
from sparsec.bench.report import BEGIN, END
from sparsec.bench.run import BenchConfig, all_correct, output_paths, run_bench
from sparsec.bench.weights import make_weight

TINY = BenchConfig(
    grid=GridConfig(shapes=((64, 128),), ns=(1, 8), sparsities=(0.9,),
                    patterns=("unstructured", "nm2:4", "block16"), budget_s=0.004),
    e2e=E2EConfig(models=("bert",), bert_layers=1, budget_s=0.02, layer_budget_s=0.002, compile_subprocess=False),
    threads=2, quick=True,
)


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.9), ("nm2:4", 0.5), ("block16", 0.75)])
def test_weights_have_exact_sparsity(pattern, sparsity):
    w = make_weight(64, 128, sparsity, pattern, seed=1)
    assert float((w == 0).float().mean()) == pytest.approx(sparsity, abs=1e-3)
    if pattern == "nm2:4":
        assert int((w.view(64, 32, 4) != 0).sum(2).max()) <= 2
    if pattern == "block16":
        nz_blocks = (w.view(4, 16, 8, 16) != 0).any(3).any(1)
        assert int(nz_blocks.sum()) == 8  # 25% of 32 blocks; kept blocks are dense (randn is never 0)


def test_disturbed_dense_baseline_is_flagged():
    from sparsec.bench.grid import annotate_baseline
    from sparsec.bench.report import unstable

    def row(us, p25, p75):
        return {"out": 8, "in": 8, "n": 1, "methods": {"dense": {"us": us, "p25_us": p25, "p75_us": p75}}}

    rows = [row(100, 95, 105), row(400, 390, 410), row(110, 60, 200)]
    annotate_baseline(rows)
    assert [unstable(r) for r in rows] == [False, True, True]


def test_grid_cases_two_four_only_at_half():
    cases = grid_cases(GridConfig(shapes=((8, 8),), sparsities=(0.7, 0.9)))
    assert [(p, s) for _, p, s in cases if p == "nm2:4"] == [("nm2:4", 0.5)]
    assert sum(1 for _, p, _ in cases if p == "block32") == 2


def test_run_bench_writes_checked_results(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\nGPU notes kept.\n")
    payload = run_bench(TINY, out, "sparsec bench --test", log=lambda _s: None)
    assert all_correct(payload)
    rows = payload["grid"]
    assert len(rows) == 3 * 2
    for r in rows:
        assert {"dense", "sparsec", "torch_csr", "scipy_csr"} <= set(r["methods"])
        assert r["chosen"] in {"dense", "csr", "coo", "nm2:4", "nm1:4", "nm4:8"} or r["chosen"].startswith("bsr")
        assert all(v["ok"] and v["us"] > 0 for v in r["methods"].values())
    assert any(k.startswith("sparsec:nm") for r in rows for k in r["methods"])  # forced formats ran
    assert any(k.startswith("torch_bsr16") for r in rows for k in r["methods"])
    bert = payload["e2e"][0]
    assert bert["model"] == "bert" and bert["ok"] and bert["formats"]
    assert "compile" not in bert  # the fresh-process compile timing is exercised by `sparsec bench --quick`
    assert len(payload["targets"]) == 9

    text = out.read_text()
    assert text.startswith("# Results\n\nGPU notes kept.") and BEGIN in text and END in text
    assert "sparsec bench --test" in text and "## Targets" in text and torch.__version__ in text
    json_path, png_path = output_paths(out)
    assert json.loads(json_path.read_text())["grid"][0]["methods"]["dense"]["ok"]
    assert png_path.stat().st_size > 1000 and png_path.name in text
    run_bench(BenchConfig(grid=TINY.grid, e2e=E2EConfig(models=()), quick=True), out, "again", log=lambda _s: None)
    again = out.read_text()
    assert again.count(BEGIN) == 1 and "again" in again and "GPU notes kept." in again


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_target_without_gpu_exits_2(capsys):
    from sparsec.cli import main

    assert main(["bench", "--target", "gpu", "--quick"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_bench_rejects_unknown_options(capsys):
    from sparsec.cli import main

    assert main(["bench", "--no-such-option"]) == 2
    assert "unrecognized" in capsys.readouterr().err


def test_compile_time_child_compiles_saved_model(tmp_path):
    """The fresh-process compile timer's child, run in this process on a saved 1-layer BERT."""
    from sparsec.bench.compile_time import _child
    from sparsec.bench.e2e import bert_model

    model, _ = bert_model(1, seed=0)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    got = _child(str(tmp_path / "state.pt"), 1, 0, torch.get_num_threads())
    assert got["first_s"] > 0 and got["second_s"] > 0


def test_only_the_full_run_defaults_to_results_md():
    from sparsec.bench.cli import default_out, parse_args

    assert default_out(parse_args([])[0]).name == "RESULTS.md"
    assert default_out(parse_args(["--quick"])[0]).name == "RESULTS_quick.md"
    assert default_out(parse_args(["--shapes", "768x768"])[0]).name == "RESULTS_partial.md"


def test_gpu_target_calls_bench_gpu_main(tmp_path, monkeypatch):
    """With a GPU, --target gpu loads benchmarks/bench_gpu.py and passes --out, --quick and the rest on."""
    from sparsec.bench import gpu
    from sparsec.cli import main

    seen = tmp_path / "argv.json"
    script = tmp_path / "bench_gpu.py"
    script.write_text(f"import json\ndef main(argv):\n    open({str(seen)!r}, 'w').write(json.dumps(argv))\n"
                      "    return 0\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu, "find_bench_gpu", lambda: script)
    assert main(["bench", "--target", "gpu", "--quick", "--out", "g.md", "--dtype", "bf16"]) == 0
    assert json.loads(seen.read_text()) == ["g.md", *gpu.GPU_QUICK, "--dtype", "bf16"]
