"""cm.stages() / cm.ir(name) / dump_dir: every pass's stage, in pipeline order, never an empty text."""

from __future__ import annotations

import re

import pytest
import torch

import sparsec
from sparsec.compiler.pipeline import PASSES
from sparsec.demo import prune_linears
from sparsec.models import MLP


def _model(sparsity: float = 0.9) -> torch.nn.Module:
    torch.manual_seed(0)
    return prune_linears(MLP(64, 128, 32).eval(), sparsity)


def _compile(model, **kw):
    kw = {"target": "cpu", "calibrate": False, "min_weight_numel": 0, **kw}
    return sparsec.sparse_compile(model, (torch.randn(8, 64),), **kw)


@pytest.fixture(scope="module")
def csr():
    return _compile(_model(), force_format="csr")


def test_stages_are_every_pass_in_pipeline_order(csr):
    names = csr.stages()
    assert names == ["fx", "calibrate", *(name for name, _ in PASSES), "lowered", "mlir", "llvm"]
    assert set(names) <= set(sparsec.STAGES)


def test_every_stage_has_text(csr):
    for name in csr.stages():
        text = csr.ir(name)
        assert text.strip(), name
    for i, (name, _) in enumerate(PASSES, 1):  # each pass: purpose, summary, then the graph after it
        text = csr.ir(name)
        assert text.startswith(f"# stage {name} (pass {i} of {len(PASSES)}) - ") and "\ngraph():\n" in text


def test_pass_stages_show_what_sparsec_knew_then(csr):
    assert "aten.linear" in csr.ir("fx") and "# sparsec" not in csr.ir("fx")
    analyze = csr.ir("analyze")
    assert "# sparsec: fc1 n=8 shape=128x64 density=0.100" in analyze and "format=" not in analyze
    select = csr.ir("select")
    assert "#   format=csr (forced by force_format='csr')" in select and "fused epilogue" not in select
    assert "fused epilogue: activation=gelu" in csr.ir("fuse")
    lower = csr.ir("lower")
    assert "call_module[target=sparsec_fc1]" in lower and "runs sparsec_fc1 (SparseLinear)" in lower
    assert "aten.linear" not in lower and "aten.linear" in csr.ir("fuse")
    assert "# built-in rates (calibrate=False)" in csr.ir("calibrate") and "dense_flops = " in csr.ir("calibrate")
    assert "sparsec_fc1" in csr.ir("lowered")
    assert "func.func" in csr.ir("mlir") and "llvm.func" in csr.ir("llvm")


def test_unknown_stage_lists_the_valid_ones(csr):
    with pytest.raises(ValueError) as err:
        csr.ir("sparse_tensor")
    assert "unknown stage 'sparse_tensor'" in str(err.value)
    assert "known stages: " + ", ".join(csr.stages()) in str(err.value)


def test_empty_stages_say_why(csr):
    dense = _compile(_model(0.0))
    assert {r.format for r in dense.report().layers} == {"dense"}
    mlir = dense.ir("mlir")
    assert "no kernel was compiled" in mlir and "stayed dense" in mlir
    assert "no kernel was compiled" in dense.ir("llvm")
    # another target's codegen stage: text naming the target that has it
    assert "produced by target 'gpu' or 'interpret'" in csr.ir("triton")
    assert "fold_bn: nothing to do" in csr.ir("fold_bn")


def test_empty_triton_stage_on_interpret_says_why():
    pytest.importorskip("triton")
    cm = _compile(_model(0.0), target="interpret")
    assert cm.stages()[-3:] == ["triton", "ttgir", "ptx"]
    for stage in ("triton", "ttgir", "ptx"):
        assert "stayed dense" in cm.ir(stage)
    assert "GPU cost model" in cm.ir("calibrate")


def test_dump_dir_writes_every_stage_in_order(tmp_path, csr):
    cm = _compile(_model(), force_format="csr", dump_dir=str(tmp_path / "d"))
    files = sorted((tmp_path / "d").iterdir())
    assert [p.name for p in files] == [f"{i:02d}-{s}.txt" for i, s in enumerate(cm.stages())]
    for p, stage in zip(files, cm.stages(), strict=True):
        assert p.read_text().rstrip("\n") == cm.ir(stage).rstrip("\n")
    assert cm.dump(str(tmp_path / "e"))[-1].endswith(f"{len(cm.stages()) - 1:02d}-llvm.txt")


def test_loaded_model_has_the_stages(tmp_path, csr):
    csr.save(tmp_path / "m")
    loaded = sparsec.load(tmp_path / "m")
    assert loaded.stages() == csr.stages()
    # the stage texts are saved with the lowered graph: the loaded model shows the compile it came from
    assert [loaded.ir(s) for s in loaded.stages()] == [csr.ir(s) for s in csr.stages()]
    assert "runs sparsec_fc1 (SparseLinear)" in loaded.ir("lower") and "func.func" in loaded.ir("mlir")


def test_docs_list_the_stages_in_order():
    from pathlib import Path

    from sparsec.compiler import pipeline

    names = [name for name, _ in PASSES]
    doc = pipeline.__doc__
    at = [re.search(rf"\b{n}\b", doc) for n in names]
    assert all(at), [n for n, m in zip(names, at, strict=True) if m is None]
    assert [m.start() for m in at] == sorted(m.start() for m in at)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### What gets compiled", 1)[1].split("\n### ", 1)[0]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| `")]
    listed = [name.strip(" `") for row in rows for name in row.split(",")]
    assert listed == list(sparsec.STAGES)
