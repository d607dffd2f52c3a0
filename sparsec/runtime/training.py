"""What CompiledModel needs for training: which modules make train() differ from eval() (so it keeps a
variant per mode), backward guard, O(nnz) value refresh."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from sparsec.errors import UnsupportedError

_TRAIN_MODULES = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)


@contextlib.contextmanager
def dense_weight_grads() -> Iterator[dict]:
    """Collect the *dense* gradient of every compiled sparse weight during the backward passes inside.

    Yields a dict ``{weight parameter: dense dL/dW}`` filled by backward passes (of forwards run inside
    the block, or run inside it themselves): the gradient at every position, pruned ones included, as
    RigL's growth step needs. ``weight.grad`` stays the gradient at the stored positions (zeros
    elsewhere), so the optimizer step keeps the pattern. Steps outside the block pay nothing extra; inside,
    dW is one dense matmul per layer instead of the SDDMM kernel. Layers that stayed dense are not in the
    dict: their ``.grad`` is dense already.

        with sparsec.dense_weight_grads() as dense:
            loss_fn(cm(x)).backward()
        score = dense[model.fc.weight].abs()
    """
    from sparsec.targets.cpu.sparse_grad import DENSE_GRADS

    grads: dict = {}
    token = DENSE_GRADS.set(grads)
    try:
        yield grads
    finally:
        DENSE_GRADS.reset(token)


def train_mode_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The submodules whose result differs between train() and eval() (dropout p > 0, BatchNorm): their
    training flags (with the root's) choose the compiled variant a call runs."""
    if not isinstance(model, torch.nn.Module):
        return []  # capture raises the error that names the problem
    return [m for m in model.modules() if isinstance(m, _TRAIN_MODULES) and getattr(m, "p", 1) != 0]


def differs_in_train_mode(model: torch.nn.Module, args: tuple, kwargs: dict) -> bool:
    """True when ``model`` gives another result on the example inputs in train() mode than in eval() mode.

    Catches what ``train_mode_modules`` cannot see: ``F.dropout(x, p, self.training)``, a branch on
    ``self.training``, a custom normalization. Runs the model twice under ``torch.no_grad()`` with the same
    seed (the caller's RNG state, modes and buffer values are restored); a forward that raises counts as
    no difference (capture reports the problem)."""
    from torch.utils import _pytree as pytree

    if not isinstance(model, torch.nn.Module):
        return False
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    outs = []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for train in (False, True):
                torch.manual_seed(0)
                model.train(train)
                outs.append(pytree.tree_leaves(model(*args, **kwargs)))
    except Exception:  # noqa: BLE001 - capture raises the error that names the problem
        return False
    finally:
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for b, value in buffers:
                if not torch.equal(b, value):
                    with torch.inference_mode(b.is_inference()):
                        b.copy_(value)
    return len(outs[0]) != len(outs[1]) or not all(_same(a, b) for a, b in zip(*outs, strict=True))


def _same(a, b) -> bool:
    """Equal outputs; leaves pytree does not flatten (a dataclass, a custom object holding tensors) are
    compared field by field, and an object whose ``==`` cannot give a bool counts as the same (capture then
    says what it cannot return)."""
    import dataclasses

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - e.g. an object comparing tensors inside: no evidence of a difference
        return True


class _RaiseOnBackward(torch.autograd.Function):
    """Identity forward; backward raises: the graph has constants that are not the model's parameters."""

    @staticmethod
    def forward(ctx, out, anchor):
        ctx.why = anchor
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        raise UnsupportedError(
            "backward through this compiled model is not supported: some compiled layers compute with "
            "derived weights (folded BatchNorm, shrunk channels, transposed or conv/batched weights, int8 "
            "layers of quantize='int8') that "
            "have no parameter to give a gradient to. Train the eager model, or compile with options that "
            "keep plain Linear layers; run inference under torch.no_grad()"
        )


def guard_outputs(outs, anchor: torch.Tensor):
    """Make every float output require grad through a node that raises a clear error on backward."""
    from torch.utils import _pytree as pytree

    def wrap(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return _RaiseOnBackward.apply(t, anchor)
        return t

    return pytree.tree_map(wrap, outs)


def trainable_graph(gm: torch.fx.GraphModule, model: torch.nn.Module) -> bool:
    """True when every gradient the graph's computation needs reaches the model's own tensors."""
    from sparsec.targets.cpu.sparse_linear import SparseLinear

    own = {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            obj = gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor) and obj.is_floating_point() and id(obj) not in own:
                return False
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if node.target.startswith("sparsec_") and not (type(mod) is SparseLinear and mod.train_refs):
                return False
    return True


def sparse_modules(gm: torch.fx.GraphModule) -> list:
    """The SparseLinear modules that compute with the model's parameters."""
    return [m for m in gm.modules() if getattr(m, "train_refs", None)]


def apply_patterns(gm: torch.fx.GraphModule, patterns: dict) -> None:
    """Re-pack every sparse layer of ``gm`` whose weight has an explicit pattern (``{id(weight): (weight,
    bool mask)}``, CompiledModel.set_patterns) that differs from what it stores."""
    for m in sparse_modules(gm):
        entry = patterns.get(id(m.train_refs[0]))
        if entry is None:
            continue
        weight, mask = entry
        if m.pattern is None or not torch.equal(m.pattern, mask):
            m.repack(mask.detach().to(torch.bool), weight, m.train_refs[1])


def refresh_variants(variants: list, watch) -> list | None:
    """After in-place updates (optimizer.step, BatchNorm running statistics), refresh packed values in
    O(nnz) and return the variants still valid; None: something was replaced or moved (recompile all).

    Judged per variant: a changed tensor is fine for a variant that reads it directly (a get_attr: the
    train-mode variant's running statistics) or packs it as a SparseLinear parameter (re-gathered here).
    Any other use of it (a folded BatchNorm, a dense layer's weight, which may have become sparse) makes
    that variant stale: the eval-mode variant whose BatchNorm was folded is dropped when training updates
    the running statistics, and compiled again, from the new statistics, on the next eval() call. A layer
    whose weight became nonzero outside its stored positions (a mask change) drops its variants too."""
    from sparsec.compiler.pipeline import layers_of
    from sparsec.passes.matmul_like import get_constant
    from sparsec.targets.cpu.sparse_grad import refresh_values

    changed = watch.changed_tensors()
    if changed is None:
        return None
    kept, todo = [], {}
    for v in variants:
        # a dense layer's weight that changed may have become sparse: that needs format selection again. Not
        # in a train-mode variant: it reads the weight directly, and re-selecting would recompile every step
        dense = set() if v.mode is not None else {
            id(get_constant(v.module, layer.m.weight)) for layer in layers_of(v.module) if layer.format == "dense"}
        direct = {id(t) for t in _graph_tensors(v.module)} - dense
        by_param: dict = {}
        for m in sparse_modules(v.module):
            for t in m.train_refs:
                if t is not None:
                    by_param.setdefault(id(t), []).append(m)
        if all(id(t) in direct or id(t) in by_param for t in changed):
            mods = {id(m): m for t in changed for m in by_param.get(id(t), [])}
            kept.append((v, mods))
            todo.update(mods)
    # a layer without slot maps yet builds them from its packed pattern (sparse_grad.state, O(nnz));
    # a False leaves that layer's values partly refreshed: every variant holding it is dropped (re-packed)
    failed = {key for key, m in todo.items() if not refresh_values(m)}
    return [v for v, mods in kept if not failed.intersection(mods)]


def _graph_tensors(gm: torch.fx.GraphModule) -> list:
    out = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            obj = gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor):
                out.append(obj)
    return out
