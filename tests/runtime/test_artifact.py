"""Saved compiled models: save/load, pickle, torch.save, deepcopy, state_dict, kernels that do not fit."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sparsec
from sparsec.codegen.mlir import jit
from sparsec.errors import InputError, UnsupportedError
from tests.models import zoo


def _out(y):
    return y.last_hidden_state if hasattr(y, "last_hidden_state") else y


@pytest.fixture(scope="module")
def bert():
    model, inputs = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16)
    return model, inputs, sparsec.sparse_compile(model, inputs, target="cpu", min_weight_numel=1024, force_format="csr")


@pytest.mark.parametrize("name", ["bert", "gpt2", "cnn"])
def test_loaded_equals_original(name, tmp_path, bert):
    if name == "bert":
        model, inputs, cm = bert
    else:
        model, inputs = zoo.gpt2(embd=64, layers=1, heads=2, seq=16) if name == "gpt2" else zoo.cnn(width=16)
        cm = sparsec.sparse_compile(model, inputs, target="cpu", min_weight_numel=1024, force_format="csr")
    cm.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["kernels"], "a sparse model saves its kernels' object code"
    loaded = sparsec.load(tmp_path / "m")
    assert [x.format for x in loaded.report().layers] == [x.format for x in cm.report().layers]
    assert any(x.format != "dense" for x in loaded.report().layers)
    with torch.no_grad():
        torch.testing.assert_close(_out(loaded(*inputs)), _out(cm(*inputs)), rtol=0, atol=0)
        torch.testing.assert_close(_out(loaded(*inputs)), _out(model(*inputs)), rtol=1e-4, atol=1e-4)


def test_pickle_torch_save_deepcopy(bert):
    model, inputs, cm = bert
    # no_grad: with grad on, a bound model's gelu layers run gelu in torch (sparse_grad.train_forward) while
    # a frozen copy's fused kernel runs it: ~1 ulp apart
    with torch.no_grad():
        _pickle_torch_save_deepcopy(model, inputs, cm)


def _pickle_torch_save_deepcopy(model, inputs, cm):
    ref = _out(cm(*inputs))
    buf = io.BytesIO()
    torch.save(cm, buf)
    buf.seek(0)
    copies = [pickle.loads(pickle.dumps(cm)), torch.load(buf, weights_only=False), copy.deepcopy(cm)]
    for c in copies:
        assert isinstance(c, sparsec.CompiledModel)
        torch.testing.assert_close(_out(c(*inputs)), ref, rtol=0, atol=0)
    deep = copies[2]
    assert deep._model[0] is not model  # bound to its own copy of the source model
    with torch.no_grad():
        next(deep._model[0].encoder.parameters()).mul_(0.0)
    torch.testing.assert_close(_out(cm(*inputs)), ref, rtol=0, atol=0)  # the original is untouched


def test_state_dict_holds_the_source_weights(bert):
    model, inputs, cm = bert
    sd = cm.state_dict()
    assert set(sd) == set(model.state_dict()) and sd
    other, _ = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16, seed=3)
    fresh = sparsec.sparse_compile(copy.deepcopy(model), inputs, target="cpu", min_weight_numel=1024, force_format="csr")
    fresh.load_state_dict(other.state_dict())
    torch.testing.assert_close(_out(fresh(*inputs)), _out(other(*inputs)), rtol=1e-4, atol=1e-4)


def test_frozen_and_bound(tmp_path, bert):
    model, inputs, cm = bert
    cm.save(tmp_path / "m")
    frozen = sparsec.load(tmp_path / "m")
    assert set(frozen.state_dict()) == set(model.state_dict())
    with pytest.raises(UnsupportedError, match="model="):
        frozen.load_state_dict(model.state_dict())
    ids, mask = zoo.bert_inputs(3, 12)  # another shape still compiles from the saved program
    torch.testing.assert_close(_out(frozen(ids, mask)), _out(model(ids, mask)), rtol=1e-4, atol=1e-4)
    own = copy.deepcopy(model)
    bound = sparsec.load(tmp_path / "m", model=own)
    with torch.no_grad():
        own.encoder.layer[0].output.dense.weight.mul_(0.5)
    torch.testing.assert_close(_out(bound(*inputs)), _out(own(*inputs)), rtol=1e-4, atol=1e-4)
    with pytest.warns(UserWarning, match="differ from the saved"):
        again = sparsec.load(tmp_path / "m", model=own)
    torch.testing.assert_close(_out(again(*inputs)), _out(own(*inputs)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("key", ["cpu", "cpu_features", "codegen", "torch_mlir"])
def test_kernels_that_do_not_fit_are_recompiled(key, tmp_path, monkeypatch, bert):
    model, inputs, cm = bert
    cm.save(tmp_path / "m")
    path = tmp_path / "m" / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["environment"][key]  # the kernels are keyed by it
    manifest["environment"][key] = "something else"
    path.write_text(json.dumps(manifest))
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "cache"))
    jit.clear_cache()
    before = jit.STATS["compiled"]
    with pytest.warns(UserWarning, match="do not fit this machine"):
        loaded = sparsec.load(tmp_path / "m")
    assert jit.STATS["compiled"] > before
    torch.testing.assert_close(_out(loaded(*inputs)), _out(cm(*inputs)), rtol=1e-5, atol=1e-5)


def test_corrupted_kernel_and_bad_paths(tmp_path, monkeypatch, bert):
    model, inputs, cm = bert
    cm.save(tmp_path / "m")
    lib = next((tmp_path / "m" / "kernels").glob("*.so"))
    lib.write_bytes(b"garbage")
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "cache"))
    jit.clear_cache()
    with pytest.warns(UserWarning, match="corrupted"):
        loaded = sparsec.load(tmp_path / "m")
    torch.testing.assert_close(_out(loaded(*inputs)), _out(cm(*inputs)), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="not a sparsec artifact"):
        sparsec.load(tmp_path / "nothing")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="refusing"):
        cm.save(tmp_path / "user")


def test_load_in_a_new_process(tmp_path, bert):
    """A fresh interpreter has not imported transformers: the manifest names the output types' module."""
    model, inputs, cm = bert
    cm.save(tmp_path / "m")
    with torch.no_grad():  # the fused kernels a frozen load runs (with grad on, gelu runs in torch: ~1 ulp)
        ref = _out(cm(*inputs))
    torch.save({"inputs": inputs, "ref": ref}, tmp_path / "io.pt")
    code = (
        "import torch, sparsec, sys; d = torch.load(sys.argv[1] + '/io.pt'); cm = sparsec.load(sys.argv[1] + '/m');"
        "torch.testing.assert_close(cm(*d['inputs']).last_hidden_state, d['ref'], rtol=0, atol=0); print('ok')"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_load_runs_the_saved_lowered_graph(tmp_path, bert):
    """No torch.export deserialization and no passes on load: the program stays unread; report and stages kept."""
    model, inputs, cm = bert
    cm.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"compiled.pkl", "tensors.bin", "program.pt2"}
    loaded = sparsec.load(tmp_path / "m")
    assert loaded._primary.captured._program is None and loaded._model[0]._g is None
    assert str(loaded.report()) == str(cm.report())
    assert loaded.ir("mlir") == cm.ir("mlir") and loaded.ir("lowered") == cm.ir("lowered")
    ids, mask = zoo.bert_inputs(2, 9)  # another sequence length: the dynamic graph and its guards, restored
    with torch.no_grad():
        torch.testing.assert_close(_out(loaded(ids, mask)), _out(model(ids, mask)), rtol=1e-4, atol=1e-4)
    assert loaded._primary.captured._program is None
    loaded.save(tmp_path / "again")  # re-saving copies the program file without deserializing it
    again = sparsec.load(tmp_path / "again")
    with torch.no_grad():
        torch.testing.assert_close(_out(again(*inputs)), _out(cm(*inputs)), rtol=0, atol=0)


@pytest.mark.parametrize("change", ["no lowered graph", "other python"])
def test_falls_back_to_lowering_the_program(change, tmp_path, bert, caplog):
    model, inputs, cm = bert
    cm.save(tmp_path / "m")
    path = tmp_path / "m" / "manifest.json"
    manifest = json.loads(path.read_text())
    if change == "no lowered graph":
        manifest["lowered"] = False
    else:
        manifest["environment"]["python"] = "cpython-2.7"
    path.write_text(json.dumps(manifest))
    with caplog.at_level("INFO", logger="sparsec"):
        loaded = sparsec.load(tmp_path / "m")
    assert "lowering the saved program again" in caplog.text
    assert [x.format for x in loaded.report().layers] == [x.format for x in cm.report().layers]
    with torch.no_grad():
        torch.testing.assert_close(_out(loaded(*inputs)), _out(cm(*inputs)), rtol=0, atol=0)


def test_bound_load_reads_the_users_tensors(tmp_path, bert):
    model, inputs, cm = bert
    cm.save(tmp_path / "m")
    own = copy.deepcopy(model)
    bound = sparsec.load(tmp_path / "m", model=own)
    params = {id(p) for p in own.parameters()}
    mods = [m for m in bound.graph_module.modules() if getattr(m, "train_refs", None)]
    assert mods and all(id(m.train_refs[0]) in params for m in mods)  # the sparse layers' gradients reach own
    frozen = sparsec.load(tmp_path / "m")
    assert not any(getattr(m, "train_refs", None) for m in frozen.graph_module.modules())


def _bits(t):
    from sparsec.compiler.saved_weights import _bits as bits

    return bits(t)


def test_weights_are_stored_once(tmp_path, bert):
    """Format 3: program.pt2 carries no weights (tensors.bin does), the dense weights of layers that run packed
    are zero-compressed, a frozen load never rebuilds them, and state_dict() gives them back bit for bit."""
    from sparsec.compiler import graph_io

    model, inputs, cm = bert
    cm.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["program_stripped"]
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert (tmp_path / "m" / "program.pt2").stat().st_size < weight_bytes / 4
    saved, _ = graph_io.read_weights(tmp_path / "m")
    packed = saved.compressed()
    sparse = {x.name for x in cm.report().layers if x.format != "dense"}
    assert packed and all(any(n.startswith(s) for s in sparse) for n in packed)
    loaded = sparsec.load(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(_out(loaded(*inputs)), _out(cm(*inputs)), rtol=0, atol=0)
    assert not set(packed) & set(loaded._model[0]._saved._dense)  # never rebuilt by loading or calling
    sd, ref = loaded.state_dict(), model.state_dict()
    assert set(sd) == set(ref)
    for k in ref:  # bit for bit: the -0.0 a masked prune leaves come back as -0.0
        assert torch.equal(_bits(sd[k]), _bits(ref[k])), k
    assert any((_bits(ref[k]) == torch.iinfo(torch.int32).min).any() for k in packed if ref[k].dtype == torch.float32)
    ids, mask = zoo.bert_inputs(3, 12)  # another shape: the saved program, its weights put back
    torch.testing.assert_close(_out(loaded(ids, mask)), _out(model(ids, mask)), rtol=1e-4, atol=1e-4)
    loaded.save(tmp_path / "again")  # the stripped program is copied; its weights are in the new tensors.bin
    again = sparsec.load(tmp_path / "again")
    torch.testing.assert_close(_out(again(ids, mask)), _out(model(ids, mask)), rtol=1e-4, atol=1e-4)


def test_version_2_artifact_still_loads_and_unknown_versions_are_refused(tmp_path, monkeypatch, bert):
    """A format-2 artifact (every weight dense in tensors.bin and again in program.pt2) loads as before."""
    from sparsec.compiler import artifact, graph_io

    model, inputs, cm = bert
    monkeypatch.setattr(graph_io, "compress", lambda t: None)
    monkeypatch.setattr(artifact, "save_program", lambda program, dest, source: torch.export.save(program, dest) or [])
    cm.save(tmp_path / "m")
    monkeypatch.undo()
    path = tmp_path / "m" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 2
    del manifest["program_stripped"]
    path.write_text(json.dumps(manifest))
    loaded = sparsec.load(tmp_path / "m")
    ids, mask = zoo.bert_inputs(3, 12)
    with torch.no_grad():
        torch.testing.assert_close(_out(loaded(*inputs)), _out(cm(*inputs)), rtol=0, atol=0)
        torch.testing.assert_close(_out(loaded(ids, mask)), _out(model(ids, mask)), rtol=1e-4, atol=1e-4)
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(UnsupportedError, match="artifact format 99, this sparsec reads"):
        sparsec.load(tmp_path / "m")
