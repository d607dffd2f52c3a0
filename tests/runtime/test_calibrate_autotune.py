"""Calibration (cached per machine) and autotuning (measured choice, cached, shown in the report)."""

from __future__ import annotations

import dataclasses
import json

import torch

import sparsec
from sparsec import knobs
from sparsec.compiler.options import CompileOptions
from sparsec.demo import prune_linears
from sparsec.formats.cost import Machine
from sparsec.models import MLP
from sparsec.targets.cpu import calibrate
from tests.conftest import assert_close


def test_calibration_measures_caches_and_survives_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibrate, "_MEMO", {})
    real = calibrate.measure
    # the real probes run; whether this busy test machine counts as disturbed is the next file's concern
    monkeypatch.setattr(calibrate, "measure", lambda threads: (real(threads)[0], []))
    m = calibrate.machine(2)
    for f in dataclasses.fields(Machine):
        assert getattr(m, f.name) > 0 or f.name == "thread_efficiency"
    files = list(tmp_path.glob("machine-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["machine"]["sparse_flops"] == m.sparse_flops
    # a second process (simulated: empty memo) reads the file instead of measuring (the cheap re-check
    # of the cache is tested in test_selection_guard; load from other tests must not trigger it here)
    with knobs.scope(calibrate_revalidate_faster=float("inf")):
        monkeypatch.setattr(calibrate, "_MEMO", {})
        monkeypatch.setattr(calibrate, "measure", lambda threads: (_ for _ in ()).throw(AssertionError("remeasured")))
        assert calibrate.machine(2) == m
        # a corrupt file is rebuilt
        files[0].write_text("{not json")
        monkeypatch.setattr(calibrate, "_MEMO", {})
        monkeypatch.setattr(calibrate, "measure", lambda threads: (dataclasses.replace(m, sparse_flops=1.0), []))
        assert calibrate.machine(2).sparse_flops == 1.0


def test_calibration_has_one_switch_whose_default_the_env_sets(monkeypatch):
    monkeypatch.setenv("SPARSEC_CALIBRATE", "0")
    assert CompileOptions().calibrate is False
    monkeypatch.setattr(calibrate, "measure", lambda threads: (_ for _ in ()).throw(AssertionError("measured")))
    cm = sparsec.sparse_compile(MLP(16, 32, 8).eval(), (torch.randn(2, 16),), target="cpu")
    assert cm._primary.ctx.machine.threads >= 1  # built-in rates, no measurement
    monkeypatch.delenv("SPARSEC_CALIBRATE")
    with knobs.scope(calibrate=False):
        assert CompileOptions().calibrate is False
    assert CompileOptions().calibrate is True


def test_autotune_measures_and_reports():
    torch.manual_seed(0)
    model = prune_linears(MLP(256, 512, 128).eval(), 0.95)
    x = torch.randn(32, 256)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", autotune=True, min_weight_numel=0)
    assert_close(cm(x), model(x))
    for r in cm.report().layers:
        assert r.measured_dense_us and r.measured_us, r
        assert r.reason.startswith("autotuned")
    assert "meas x" in str(cm.report())
