"""Training mode is honoured: a compiled model in train() runs dropout from torch's RNG and BatchNorm with
batch statistics (running statistics updated in the user's buffers), as eager does; eval() runs the
eval-mode variant again, re-derived from the updated running statistics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparsec
from sparsec.compiler.context import CompileContext
from sparsec.compiler.options import CompileOptions
from sparsec.errors import UnsupportedError
from sparsec.passes import fold_bn

OPTS = dict(target="cpu", calibrate=False, force_format="csr", min_weight_numel=0)


def _sparsify(*layers: nn.Module, keep: float = 0.2) -> None:
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(torch.rand_like(layer.weight) < keep)


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.Dropout(0.3), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 8))
    _sparsify(model[0], model[4])
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float(torch.linalg.norm(a - b) / (torch.linalg.norm(b) + 1e-12))


def _masked_grads(model: nn.Module, sparse: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Eager's gradients restricted to the stored positions of the sparse weights (static sparse training)."""
    out = {}
    for name, p in model.named_parameters():
        out[name] = p.grad * (p != 0) if name in sparse else p.grad.clone()
    return out


def _sgd_matches_eager(model: nn.Module, x: torch.Tensor, sparse: tuple[str, ...], steps: int = 4, **opts):
    """Train ``model`` compiled and a copy eagerly with SGD for ``steps`` seeded steps; check every step's
    output and gradients (rel 1e-4), and the buffers after. Returns the compiled model."""
    ref = copy.deepcopy(model)
    cm = sparsec.sparse_compile(model, (x,), **{**OPTS, **opts})
    opt_c = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_e = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    trained = None
    for step in range(steps):
        xs = x.clone().requires_grad_()
        xr = x.clone().requires_grad_()
        torch.manual_seed(100 + step)
        y_c = cm(xs)
        torch.manual_seed(100 + step)
        y_e = ref(xr)
        assert _rel(y_c, y_e) <= 1e-4, step
        y_c.pow(2).mean().backward()
        y_e.pow(2).mean().backward()
        assert _rel(xs.grad, xr.grad) <= 1e-4, step
        want = _masked_grads(ref, sparse)
        for name, p in model.named_parameters():
            # atol: a conv bias before a batch-statistics BatchNorm has a gradient of exactly 0 (rounding left)
            err = float(torch.linalg.norm(p.grad - want[name]))
            assert err <= 1e-4 * float(torch.linalg.norm(want[name])) + 1e-6, (step, name)
            ref.get_parameter(name).grad.copy_(want[name])  # eager trains the same static-sparse model
        opt_c.step()
        opt_e.step()
        opt_c.zero_grad()
        opt_e.zero_grad()
        train_variants = [v for v in cm._variants if v.mode is not None]
        assert len(train_variants) == 1
        trained = trained or train_variants[0]
        assert train_variants[0] is trained, "a train step recompiled the train-mode variant"
    for (name, b), (_, b_e) in zip(model.named_buffers(), ref.named_buffers(), strict=True):
        torch.testing.assert_close(b, b_e, rtol=1e-5, atol=1e-6, msg=name)
    return cm, ref


def test_dropout_uses_torch_rng_like_eager():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Dropout(0.5), nn.ReLU(), nn.Linear(64, 16))
    _sparsify(model[0], model[3])
    x = torch.randn(8, 32)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert model.training and [r.format for r in cm.report().layers] == ["csr", "csr"]
    with torch.no_grad():
        torch.manual_seed(7)
        y1 = cm(x)
        torch.manual_seed(7)
        want = model(x)
        torch.manual_seed(8)
        y2 = cm(x)
    torch.testing.assert_close(y1, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(y1, y2), "another seed must draw another mask"
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(cm(x), model(x), rtol=1e-4, atol=1e-5)  # eval: no dropout


def test_linear_dropout_batchnorm1d_sgd_steps_match_eager():
    model, x = _mlp(), torch.randn(16, 32)
    cm, ref = _sgd_matches_eager(model, x, ("0.weight", "4.weight"))
    assert int(model[2].num_batches_tracked) == 4
    assert not torch.equal(model[2].running_mean, torch.zeros(64))  # updated in the user's buffers
    model.eval()
    ref.eval()
    with torch.no_grad():
        assert _rel(cm(x), ref(x)) <= 1e-4


def test_eval_after_train_refolds_the_updated_running_statistics():
    model, x = _mlp(1), torch.randn(16, 32)
    model.eval()
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    eval_variant = cm._primary
    assert eval_variant.mode is None and "folded into" in cm.ir("fold_bn")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cm.train()
    for _ in range(3):
        cm(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    # the folded eval variant was compiled from the old statistics: dropped, not refreshed
    assert eval_variant not in cm._variants
    cm.eval()
    assert not model.training
    with torch.no_grad():
        assert _rel(cm(x), model(x)) <= 1e-4
    assert cm._primary.mode is None and cm._primary is not eval_variant
    assert "folded into" in cm.ir("fold_bn")


def test_cnn_batchnorm2d_train_mode():
    """BatchNorm2d after a conv: with the conv sparse, train-mode forward matches eager (batch statistics,
    running statistics updated) and backward raises the clear error (compiled convs take no gradient);
    with the conv dense and the Linear sparse, SGD steps match eager."""
    def cnn():
        torch.manual_seed(3)
        m = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
        _sparsify(m[0], m[4])
        return m

    x = torch.randn(4, 4, 8, 8)
    model = cnn()
    ref = copy.deepcopy(model)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert [r.format for r in cm.report().layers] == ["csr", "csr"]
    y = cm(x)
    assert _rel(y, ref(x)) <= 1e-4
    torch.testing.assert_close(model[1].running_var, ref[1].running_var)
    with pytest.raises(UnsupportedError, match="backward"):
        y.sum().backward()
    # a conv kept dense (min_weight_numel above its 288 weights) trains with the sparse Linear
    _sgd_matches_eager(cnn(), x, ("4.weight",), steps=3, min_weight_numel=1000)


def test_frozen_batchnorm_inside_a_training_model():
    """model.train() with one BatchNorm put back in eval(): that one uses its running statistics (eager's
    per-module flags), and capturing leaves every module's flag as the user set it."""
    model, x = _mlp(2), torch.randn(16, 32)
    model[2].eval()
    cm, _ = _sgd_matches_eager(model, x, ("0.weight", "4.weight"), steps=2)
    assert model.training and not model[2].training
    assert int(model[2].num_batches_tracked) == 0


class _FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 32)
        _sparsify(self.fc)

    def forward(self, x):
        return nn.functional.dropout(self.fc(x), 0.5, self.training)


class _Counter(_FunctionalDropout):
    """Updates a buffer in train mode (like BatchNorm's running statistics) and adds it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        if self.training:
            self.seen += 1
        return self.fc(x) + self.seen


@pytest.mark.parametrize("cls", [_FunctionalDropout, _Counter])
def test_train_dependent_root_gets_a_train_mode_variant(cls):
    torch.manual_seed(0)
    model, x = cls(), torch.randn(4, 32)
    ref = copy.deepcopy(model)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    for seed in (1, 2):
        with torch.no_grad():
            torch.manual_seed(seed)
            y = cm(x)
            torch.manual_seed(seed)
            torch.testing.assert_close(y, ref(x), rtol=1e-4, atol=1e-5)
    if cls is _Counter:
        assert int(model.seen) == 2  # two calls, none from compiling
    model.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(cm(x), ref(x), rtol=1e-4, atol=1e-5)


def test_save_in_train_mode_saves_the_eval_variant(tmp_path):
    model, x = _mlp(4), torch.randn(16, 32)
    ref = copy.deepcopy(model)
    cm = sparsec.sparse_compile(model, (x,), **OPTS)
    assert cm._primary.mode is not None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cm(x).pow(2).mean().backward()
    opt.step()  # the train-mode variant is stale until the next call refreshes it
    cm.save(tmp_path / "a")
    saved = copy.deepcopy(model.state_dict())
    assert cm._primary.mode is None  # an eval-mode compile was made for the artifact
    # the save's compile did not hide the step from the train-mode variant
    with torch.no_grad():
        ref.load_state_dict(model.state_dict())
        torch.manual_seed(3)
        y = cm(x)
        torch.manual_seed(3)
        assert _rel(y, ref(x)) <= 1e-4
    loaded = sparsec.load(tmp_path / "a")
    ref.eval()
    ref.load_state_dict(saved)
    with torch.no_grad():
        assert _rel(loaded(x), ref(x)) <= 1e-4  # the weights after the step, folded


def test_fold_bn_folds_nothing_in_a_train_mode_capture():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8)).eval()
    gm = torch.export.export(model, (torch.randn(4, 8),)).module()
    ctx = CompileContext(options=CompileOptions(), root=model, training=True)
    before = [n.target for n in gm.graph.nodes]
    fold_bn.run(gm, ctx)
    assert [n.target for n in gm.graph.nodes] == before
    assert "train-mode" in ctx.summaries["fold_bn"]


def test_cumulative_batchnorm_in_train_mode_is_refused_with_the_reason():
    model = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64, momentum=None))
    x = torch.randn(8, 32)
    with pytest.raises(sparsec.CaptureError, match="momentum=None"):
        sparsec.sparse_compile(model, (x,), **OPTS)
    model.eval()
    cm = sparsec.sparse_compile(model, (x,), **OPTS)  # eval mode folds it as before
    with torch.no_grad():
        assert _rel(cm(x), model(x)) <= 1e-4


def test_artifact_loaded_onto_a_training_model(tmp_path):
    """A saved (eval-mode) compile loaded bound to a model in train(): the train-mode variant is captured
    from the model, and after training the eval-mode one is compiled from the updated statistics, not
    restored from the artifact's folded old ones."""
    model, x = _mlp(5), torch.randn(16, 32)
    model.eval()
    sparsec.sparse_compile(model, (x,), **OPTS).save(tmp_path / "a")
    bound, ref = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    cm = sparsec.load(tmp_path / "a", model=bound)
    torch.manual_seed(1)
    y = cm(x)
    torch.manual_seed(1)
    assert _rel(y, ref(x)) <= 1e-4
    cm.eval()
    ref.eval()
    with torch.no_grad():
        assert _rel(cm(x), ref(x)) <= 1e-4


def test_graph_cache_keeps_eval_compiles_only(tmp_path, monkeypatch):
    """A train-mode compile is neither looked up nor stored (its graph updates the model's buffers in
    place); the eval-mode compile of the same model still is, under a key that differs by the modules'
    training flags (graph_cache hashes each module's ``training``)."""
    from sparsec import knobs
    from sparsec.codegen.mlir import jit
    from sparsec.compiler import graph_cache

    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path / "cache"))
    x = torch.randn(16, 32)
    with knobs.scope(graph_cache=True):
        try:
            before = dict(graph_cache.STATS)
            sparsec.sparse_compile(_mlp(6), (x,), **OPTS)
            assert {k: graph_cache.STATS[k] - before[k] for k in ("hits", "misses", "stored")} == \
                {"hits": 0, "misses": 0, "stored": 0}
            for want in ({"hits": 0, "misses": 1, "stored": 1}, {"hits": 1, "misses": 0, "stored": 0}):
                before = dict(graph_cache.STATS)
                model = _mlp(6).eval()
                cm = sparsec.sparse_compile(model, (x,), **OPTS)
                assert {k: graph_cache.STATS[k] - before[k] for k in ("hits", "misses", "stored")} == want
                with torch.no_grad():
                    assert _rel(cm(x), model(x)) <= 1e-4
            model = _mlp(6).eval()
            k_eval = graph_cache.key(cm, model, (x,), {}, True)
            assert graph_cache.key(cm, model.train(), (x,), {}, True) != k_eval
        finally:
            jit.clear_cache()


def _rigl_run(compiled: bool, steps: int = 11):
    import sparsec.prune as prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Dropout(0.2), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = prune.RigL(0.8, end_step=40, update_interval=5, alpha=0.3, seed=0)
    sp.prepare(model, optimizer=opt)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(24, 32, generator=gen) for _ in range(steps)]
    ys = [torch.randint(0, 10, (24,), generator=gen) for _ in range(steps)]
    trainer = prune.CompiledTraining(sp, (xs[0],)) if compiled else None
    for t, (x, y) in enumerate(zip(xs, ys, strict=True)):
        torch.manual_seed(t)  # the same dropout masks in both runs
        loss = nn.functional.cross_entropy((trainer or model)(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        (trainer or sp).step()
    return model, sp, trainer


def test_rigl_through_compiled_kernels_with_dropout_and_batchnorm_in_train_mode():
    eager, sp_e, _ = _rigl_run(False)
    comp, sp_c, trainer = _rigl_run(True)
    assert sum(h[2] for h in sp_c.history) > 0  # masks did change
    for name, mask in sp_e.masks().items():
        assert torch.equal(mask, sp_c.masks()[name]), name
    for (n, p), q in zip(eager.state_dict().items(), comp.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=n)  # weights and running statistics
    assert [v.mode is not None for v in trainer.compiled._variants] == [True]
