"""A warm compile (captured-graph cache hit) and a loaded model do their work before the first call returns
to the user: that call JIT-compiles no kernel, loads none from the disk cache, packs, calibrates and captures
nothing, with grad enabled too (the training slot maps once re-packed every weight three times there), and
computes what the original compile computes."""

from __future__ import annotations

import collections
import copy

import pytest
import torch

import sparsec
from sparsec import knobs
from sparsec.codegen.mlir import jit
from sparsec.compiler import compiled_model, graph_cache
from sparsec.formats.base import SparseFormat
from sparsec.targets.cpu import calibrate
from tests.models import zoo

OPTS = dict(target="cpu", min_weight_numel=1024, force_format="csr")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "cache"))
    jit.clear_cache()  # kernels compiled by earlier tests: this test's first compile writes its own to disk
    with knobs.scope(graph_cache=True):
        yield tmp_path
    jit.clear_cache()  # the kernels loaded from this test's cache directory, which is about to go


def _spy(monkeypatch) -> collections.Counter:
    """Count calls of the JIT's MLIR pipeline, packing, calibration and capture from now on."""
    calls: collections.Counter = collections.Counter()

    def wrap(obj, name):
        orig = getattr(obj, name)

        def spy(*args, **kwargs):
            calls[name] += 1
            return orig(*args, **kwargs)

        monkeypatch.setattr(obj, name, spy)

    wrap(jit, "run_pipeline")  # every JIT compile lowers its MLIR through it
    wrap(SparseFormat, "pack")
    wrap(calibrate, "machine")
    wrap(compiled_model, "capture")
    return calls


def _first_calls(cm, inputs, monkeypatch):
    """The outputs of a first call with grad enabled and one without, asserting that neither did any work."""
    calls = _spy(monkeypatch)
    before = dict(jit.STATS)
    with_grad = cm(*inputs).last_hidden_state
    with torch.no_grad():
        no_grad = cm(*inputs).last_hidden_state
    assert not calls, f"the first call did compile-time work: {dict(calls)}"
    assert jit.STATS["compiled"] == before["compiled"] and jit.STATS["disk_hits"] == before["disk_hits"]
    monkeypatch.undo()
    return with_grad, no_grad


def test_warm_compile_first_call_does_no_work(cache, monkeypatch):
    model, inputs = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16)
    cm = sparsec.sparse_compile(model, inputs, **OPTS)
    with torch.no_grad():
        ref = cm(*inputs).last_hidden_state
    jit.clear_cache()  # as in a new process: the kernels come from the disk cache
    twin = copy.deepcopy(model)
    hits, disk = graph_cache.STATS["hits"], jit.STATS["disk_hits"]
    warm = sparsec.sparse_compile(twin, inputs, **OPTS)
    assert graph_cache.STATS["hits"] == hits + 1
    assert jit.STATS["disk_hits"] > disk, "the warm compile loads its kernels itself"
    with_grad, no_grad = _first_calls(warm, inputs, monkeypatch)
    torch.testing.assert_close(no_grad, ref, rtol=0, atol=0)
    # with grad on, gelu runs in torch after the linear part's kernel (sparse_grad.train_forward): ~1 ulp apart
    torch.testing.assert_close(with_grad.detach(), ref, rtol=1e-5, atol=1e-6)
    with_grad.sum().backward()  # the slot maps, built on first use, give the user's module its gradients
    assert twin.encoder.layer[0].output.dense.weight.grad is not None


@pytest.mark.parametrize("bound", [False, True])
def test_loaded_first_call_does_no_work(bound, cache, monkeypatch):
    model, inputs = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16)
    cm = sparsec.sparse_compile(model, inputs, **OPTS)
    with torch.no_grad():
        ref = cm(*inputs).last_hidden_state
    cm.save(cache / "m")
    jit.clear_cache()
    own = copy.deepcopy(model) if bound else None
    disk = jit.STATS["disk_hits"]
    loaded = sparsec.load(cache / "m", model=own)
    assert jit.STATS["disk_hits"] > disk, "loading loads the kernels"
    with_grad, no_grad = _first_calls(loaded, inputs, monkeypatch)
    torch.testing.assert_close(no_grad, ref, rtol=0, atol=0)
    torch.testing.assert_close(with_grad.detach(), ref, rtol=1e-5, atol=1e-6)
    assert with_grad.requires_grad == bound  # a frozen model's weights take no gradient


def test_train_unfolded_names_agree():
    """``SparseLinear.prepare`` compiles the linear part's kernels for exactly the activations the training
    forward leaves to torch."""
    from sparsec.targets.cpu import sparse_grad
    from sparsec.targets.cpu.sparse_linear import TRAIN_UNFOLDED

    assert set(sparse_grad.UNFOLDED) == TRAIN_UNFOLDED


def test_grad_enabled_inference_builds_no_training_state(cache):
    """A grad-enabled forward needs only the custom op's handle: slot maps are built when a backward or a
    refresh reads them (only gelu/silu layers, whose linear-part twin shares them, build theirs in forward),
    and the gradients then equal eager's."""
    from sparsec.runtime import training

    model, inputs = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16)
    eager = copy.deepcopy(model)
    cm = sparsec.sparse_compile(model, inputs, **OPTS)
    out = cm(*inputs).last_hidden_state
    mods = training.sparse_modules(cm._primary.module)
    assert mods and all(m.trainable is None for m in mods if m.activation not in ("gelu", "silu"))
    out.sum().backward()  # builds the state the backward reads (CSR's dense-output SDDMM needs none for dW)
    eager(*inputs).last_hidden_state.sum().backward()
    for (name, p), q in zip(model.named_parameters(), eager.parameters(), strict=True):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
