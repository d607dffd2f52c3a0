"""target="interpret": the Triton kernels run the whole model on the CPU through Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

import sparsec
from sparsec import knobs
from sparsec.compiler.stages import layers_of
from sparsec.models import MLP
from sparsec.passes import autotune
from sparsec.prune import BlockPruner, MagnitudePruner, NMPruner
from sparsec.targets import get_target
from sparsec.targets.cpu.sparse_linear import SparseLinear
from sparsec.targets.gpu.triton_linear import TritonLinear
from tests.conftest import assert_close


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = MLP(64, 128, 32).eval()
    layers = [m.fc1, m.fc2, m.fc3]
    pruner = {"csr": MagnitudePruner(0.9), "nm2:4": NMPruner(2, 4), "bsr16x16": BlockPruner(0.75, (16, 16))}[kind]
    pruner.prepare(m, layers)
    pruner.step()
    return pruner.finalize()


@pytest.mark.parametrize("fmt", ["csr", "nm2:4", "bsr16x16"])
def test_interpret_matches_eager(fmt):
    model = _model(fmt)
    x = torch.randn(8, 64)
    cm = sparsec.sparse_compile(model, (x,), target="interpret", force_format=fmt, min_weight_numel=0)
    assert {r.format for r in cm.report().layers} == {fmt}
    assert_close(cm(x), model(x))
    assert_close(cm(x[:3]), model(x[:3]))


def test_interpret_stages_and_errors():
    model = _model("csr")
    cm = sparsec.sparse_compile(model, (torch.randn(4, 64),), target="interpret", force_format="csr",
                                min_weight_numel=0)
    assert "tl." in cm.ir("triton")
    assert ".target sm_90" in cm.ir("ptx")
    assert cm.stages()[-3:] == ["triton", "ttgir", "ptx"] and "mlir" not in cm.stages()
    assert "produced by target 'cpu'" in cm.ir("mlir")  # another target's stage says so, it does not raise
    cpu = sparsec.sparse_compile(model, (torch.randn(4, 64),), target="cpu")
    assert "produced by target 'gpu' or 'interpret'" in cpu.ir("ptx")
    with pytest.raises(ValueError, match="known stages: fx, calibrate, fold_constants, cleanup"):
        cm.ir("sass")


def test_user_formats_without_gpu_kernels_stay_dense():
    model = _model("csr")
    cm = sparsec.sparse_compile(model, (torch.randn(4, 64),), target="interpret", force_format="coo",
                                min_weight_numel=0)
    layer = cm.report().layers[0]
    assert layer.format == "dense" and "Triton" in layer.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on machines without a CUDA GPU")
def test_gpu_target_without_gpu_is_a_clear_error():
    with pytest.raises(sparsec.UnsupportedError, match="CUDA GPU"):
        sparsec.sparse_compile(_model("csr"), (torch.randn(4, 64),), target="gpu")


def test_autotune_on_interpret_times_the_triton_kernels(tmp_path, monkeypatch):
    """autotune on target="interpret" times TritonLinear (the kernels that target runs), never the CPU's
    SparseLinear, and caches its decisions under the interpreter's machine key, not the CPU's."""
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    timed = []
    real_forward = TritonLinear.forward

    def spy(self, x, residual=None):
        timed.append((type(self).__name__, self.layer_name))
        return real_forward(self, x, residual)

    monkeypatch.setattr(TritonLinear, "forward", spy)
    monkeypatch.setattr(SparseLinear, "forward", lambda *a, **k: pytest.fail("autotune timed a CPU SparseLinear"))
    model, x = _model("csr"), torch.randn(8, 64)
    with knobs.scope(autotune_rounds=1):
        cm = sparsec.sparse_compile(model, (x,), target="interpret", autotune=True, formats=("csr",),
                                    min_weight_numel=0)
    layers = layers_of(cm.graph_module)
    assert {name for _, name in timed} == {layer.name for layer in layers}  # every layer group was timed
    assert {cls for cls, _ in timed} == {"TritonLinear"}
    for layer in layers:
        assert set(layer.measured) == {"dense", "csr"} and layer.reason.startswith("autotuned"), layer.reason
        ours = tmp_path / f"autotune-{autotune._group_key(layer, 1, get_target('interpret'))}.json"
        cpu = tmp_path / f"autotune-{autotune._group_key(layer, 1, get_target('cpu'))}.json"
        assert ours.exists() and not cpu.exists()
    assert get_target("interpret").machine_key(1) != get_target("cpu").machine_key(1)
    timed.clear()
    assert_close(cm(x), model(x))


def test_auto_target_is_resolved_everywhere():
    """target="auto" resolves once: the options, the model and the passes' Target all name the result."""
    cm = sparsec.sparse_compile(_model("csr"), (torch.randn(4, 64),), calibrate=False, autotune=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert cm.options.target == cm.target == cm._primary.ctx.target.name == expected
