"""RigL / SET / static masks through the compiled kernels (sparsec.prune.CompiledTraining) match eager masked
training: the same masks after every update, the same weights, and no recompile."""

import copy

import pytest
import torch
from torch import nn

import sparsec.prune as prune


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 10))


def _run(make, compiled: bool, steps: int, seed=0):
    model = _mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    sp = make()
    sp.prepare(model, optimizer=opt)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(24, 32, generator=gen) for _ in range(steps)]
    ys = [torch.randint(0, 10, (24,), generator=gen) for _ in range(steps)]
    trainer = prune.CompiledTraining(sp, (xs[0],)) if compiled else None
    forward = trainer if compiled else model
    masks = []
    for x, y in zip(xs, ys, strict=True):
        loss = nn.functional.cross_entropy(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        (trainer or sp).step()
        masks.append(sp.masks())
    return model, sp, masks, trainer


@pytest.mark.parametrize("make", [
    lambda: prune.RigL(0.8, end_step=40, update_interval=5, alpha=0.3, seed=0),
    lambda: prune.SET(0.8, end_step=40, update_interval=5, alpha=0.3, seed=0),
    lambda: prune.StaticSparsifier(0.8, distribution="erk", seed=0),
], ids=["rigl", "set", "static"])
def test_compiled_matches_eager_masked(make):
    steps = 21  # four update intervals
    eager, sp_e, masks_e, _ = _run(make, False, steps)
    comp, sp_c, masks_c, trainer = _run(make, True, steps)
    for t, (a, b) in enumerate(zip(masks_e, masks_c, strict=True)):
        for name in a:
            assert torch.equal(a[name], b[name]), f"step {t + 1}: mask of {name} differs"
    if isinstance(sp_e, prune.RigL):
        assert [h[2] for h in sp_e.history] == [h[2] for h in sp_c.history] and sum(h[2] for h in sp_c.history) > 0
    for (n, p), q in zip(eager.named_parameters(), comp.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=n)
    cm = trainer.compiled
    assert len(cm._variants) == 1  # mask updates re-packed layers in place, no recompile
    x = torch.randn(5, 32)
    with torch.no_grad():
        torch.testing.assert_close(cm(x), eager(x), rtol=1e-4, atol=1e-5)
    # every compiled layer stores exactly its mask (grown weights at zero included)
    for m in (m for m in cm.graph_module.modules() if getattr(m, "train_refs", None)):
        name = next(k for k, w in trainer.weights.items() if w is m.train_refs[0])
        assert m.stored == int(sp_c.masks()[name].sum())


def test_grown_weights_at_zero_get_gradients():
    """A re-packed layer stores a zero weight inside its pattern: its .grad there is eager's, not 0."""
    model = _mlp()
    sp = prune.StaticSparsifier(0.8, seed=0)
    sp.prepare(model)
    lin = model[0]
    mask = prune.get_mask(lin).mask
    w = prune.original(lin)
    with torch.no_grad():
        w.view(-1)[torch.nonzero(mask.view(-1))[:5].view(-1)] = 0.0  # active but exactly zero
    trainer = prune.CompiledTraining(sp, (torch.randn(8, 32),))
    eager = copy.deepcopy(model)
    x = torch.randn(8, 32)
    trainer(x).sum().backward()
    eager(x).sum().backward()
    torch.testing.assert_close(w.grad, prune.original(eager[0]).grad, rtol=1e-4, atol=1e-6)
