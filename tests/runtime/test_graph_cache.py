"""The captured-graph cache: a second compile of the same model, weights, inputs and options is a load."""

from __future__ import annotations

import copy

import pytest
import torch

import sparsec
from sparsec import knobs
from sparsec.codegen.mlir import jit
from sparsec.compiler import graph_cache
from tests.models import zoo

OPTS = dict(target="cpu", min_weight_numel=1024, force_format="csr")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "cache"))
    with knobs.scope(graph_cache=True):
        yield tmp_path / "cache" / "graphs"
    jit.clear_cache()  # the kernels loaded from this test's cache directory, which is about to go


def _stats():
    return dict(graph_cache.STATS)


def _delta(before):
    return {k: graph_cache.STATS[k] - before[k] for k in ("hits", "misses", "stored")}


def _out(y):
    return y.last_hidden_state if hasattr(y, "last_hidden_state") else y


def test_second_compile_is_a_hit_and_equal(cache):
    model, inputs = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16)
    before = _stats()
    cm = sparsec.sparse_compile(model, inputs, **OPTS)
    assert _delta(before) == {"hits": 0, "misses": 1, "stored": 1}
    assert len(list(cache.iterdir())) == 1
    twin = copy.deepcopy(model)  # another module object with the same code, structure and weights
    before = _stats()
    hit = sparsec.sparse_compile(twin, inputs, **OPTS)
    assert _delta(before) == {"hits": 1, "misses": 0, "stored": 0}
    assert str(hit.report()) == str(cm.report())
    with torch.no_grad():
        torch.testing.assert_close(_out(hit(*inputs)), _out(cm(*inputs)), rtol=0, atol=0)
        torch.testing.assert_close(_out(hit(*inputs)), _out(twin(*inputs)), rtol=1e-4, atol=1e-4)
    # the hit is bound to twin: the weight watch sees twin's changes
    with torch.no_grad():
        twin.encoder.layer[0].output.dense.weight.mul_(0.5)
        torch.testing.assert_close(_out(hit(*inputs)), _out(twin(*inputs)), rtol=1e-4, atol=1e-4)


def test_a_hit_pickles_and_deepcopies(cache):
    """An entry holds no captured program; pickling / deepcopying the hit captures it from the module."""
    import pickle

    model, inputs = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16)
    sparsec.sparse_compile(model, inputs, **OPTS)
    before = _stats()
    hit = sparsec.sparse_compile(copy.deepcopy(model), inputs, **OPTS)
    assert _delta(before)["hits"] == 1
    for twin in (pickle.loads(pickle.dumps(hit)), copy.deepcopy(hit)):
        with torch.no_grad():
            torch.testing.assert_close(_out(twin(*inputs)), _out(hit(*inputs)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", ["one weight", "input shape", "option", "knob", "attribute"])
def test_what_invalidates_an_entry(change, cache):
    model, inputs = zoo.cnn(width=16)
    sparsec.sparse_compile(model, inputs, **OPTS)
    other, opts = copy.deepcopy(model), dict(OPTS)
    new_inputs = inputs
    scope = {}
    if change == "one weight":
        with torch.no_grad():
            next(p for p in other.parameters() if p.dim() == 4).view(-1)[3] += 1.0
    elif change == "input shape":
        new_inputs = (torch.cat([inputs[0], inputs[0]]),)
    elif change == "option":
        opts["min_speedup"] = 1.2
    elif change == "knob":
        scope = {"conv_block": 256}
    else:
        next(m for m in other.modules() if isinstance(m, torch.nn.Conv2d)).padding_mode = "reflect"
    before = _stats()
    with knobs.scope(**scope):
        cm = sparsec.sparse_compile(other, new_inputs, **opts)
    assert _delta(before)["misses"] == 1 and _delta(before)["hits"] == 0
    with torch.no_grad():
        torch.testing.assert_close(cm(*new_inputs), other(*new_inputs), rtol=1e-4, atol=1e-4)


def test_knob_off_and_eviction(cache):
    model, inputs = zoo.gpt2(embd=64, layers=1, heads=2, seq=16)
    before = _stats()
    with knobs.scope(graph_cache=False):
        sparsec.sparse_compile(model, inputs, **OPTS)
    assert _delta(before) == {"hits": 0, "misses": 0, "stored": 0}
    with knobs.scope(graph_cache_mb=0):  # every entry is over the limit: evicted right after it is stored
        sparsec.sparse_compile(model, inputs, **OPTS)
    assert not [d for d in cache.iterdir() if not d.name.startswith(".")]


def test_corrupt_entry_is_dropped_and_recompiled(cache):
    model, inputs = zoo.gpt2(embd=64, layers=1, heads=2, seq=16)
    ref = sparsec.sparse_compile(model, inputs, **OPTS)
    entry = next(cache.iterdir())
    (entry / "compiled.pkl").write_bytes(b"garbage")
    before = _stats()
    cm = sparsec.sparse_compile(copy.deepcopy(model), inputs, **OPTS)
    assert _delta(before)["misses"] == 1
    with torch.no_grad():
        torch.testing.assert_close(_out(cm(*inputs)), _out(ref(*inputs)), rtol=0, atol=0)


def test_parameter_order_does_not_matter(cache):
    """A model pruned in this process (pruning re-adds ``weight`` after ``bias``) hits the entry of the same
    weights loaded from a state dict in another one."""
    model, inputs = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16)
    sparsec.sparse_compile(model, inputs, **OPTS)
    twin = copy.deepcopy(model)
    for mod in twin.modules():
        if isinstance(mod, torch.nn.Linear):
            weight = mod._parameters.pop("weight")
            mod._parameters["weight"] = weight  # now after bias
    assert list(dict(twin.encoder.layer[0].output.dense.named_parameters())) == ["bias", "weight"]
    before = _stats()
    hit = sparsec.sparse_compile(twin, inputs, **OPTS)
    assert _delta(before)["hits"] == 1
    with torch.no_grad():
        torch.testing.assert_close(_out(hit(*inputs)), _out(twin(*inputs)), rtol=1e-4, atol=1e-4)


def _key(model, inputs):
    from types import SimpleNamespace

    from sparsec.compiler.options import CompileOptions

    return graph_cache.key(SimpleNamespace(options=CompileOptions(target="cpu"), target="cpu"), model, inputs, {}, None)


@pytest.mark.parametrize("digest", ["xxh3_128", "crc32"])
@pytest.mark.parametrize("edit", ["one bit", "two signs", "negate", "transpose", "swap two", "tie"])
def test_the_key_sees_every_weight_edit(digest, edit, monkeypatch):
    """The weight digest is position-sensitive and covers every byte: edits a sum or xor of the words misses
    (two sign flips, a negated or transposed square matrix, two values swapped) change the key too."""
    import zlib

    if digest == "crc32":
        monkeypatch.setattr(graph_cache, "_digest_fn", lambda: ("crc32", zlib.crc32))
    else:
        pytest.importorskip("xxhash")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
    inputs = (torch.randn(2, 16),)
    with torch.no_grad():
        model[2].weight.copy_(model[0].weight)  # equal values: only tying them ("tie") changes the model
    before = _key(model, inputs)
    assert _key(copy.deepcopy(model), inputs) == before  # deterministic across module objects
    w = model[0].weight
    with torch.no_grad():
        if edit == "one bit":
            w.view(torch.int32).view(-1)[77] ^= 1
        elif edit == "two signs":
            w.view(-1)[3].neg_()
            w.view(-1)[200].neg_()
        elif edit == "negate":
            w.neg_()
        elif edit == "transpose":
            w.copy_(w.t().clone())
        elif edit == "swap two":
            a, b = w.view(-1)[5].item(), w.view(-1)[9].item()
            w.view(-1)[5], w.view(-1)[9] = b, a
        else:  # the same values, but the two Linears now share one weight
            model[2].weight = model[0].weight
    assert _key(model, inputs) != before
