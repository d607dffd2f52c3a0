"""Train a sparsifier-prepared model through sparsec's compiled sparse kernels (static masks, RigL, SET).

The sparsifier keeps its masks (torch parametrizations) on the user's model, where eager code, the
optimizer and ``finalize`` see them. The compiled model runs a *plain view* of that model: the same
module objects' structure, whose masked weights are the parametrizations' ``original`` Parameters (the
ones the optimizer updates). The sparsifiers keep those originals zero outside the masks, so the plain
view computes what the masked model does; its compiled layers store exactly the masks' positions
(``CompiledModel.set_patterns``), zeros included, so a weight RigL/SET grows at zero gets its gradient.

    sp = prune.RigL(0.9, end_step=1000, update_interval=100)
    sp.prepare(model, optimizer=opt)
    trainer = prune.CompiledTraining(sp, (x,))
    for x, y in data:
        loss = loss_fn(trainer(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        trainer.step()                    # instead of sp.step()

Only the forward before a RigL update asks for dense weight gradients (``sparsec.dense_weight_grads``:
one dense matmul per layer instead of the SDDMM kernel); they are handed to the sparsifier as its mask
hooks would. After a mask update only the changed layers are re-packed, not the whole model recompiled.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .base import BaseSparsifier
from .masks import get_mask, original


def plain_view(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` sharing every parameter and buffer, with each masked weight replaced
    by the parametrization's ``original`` Parameter (and the module's own class restored)."""
    masked = parametrize.is_parametrized(model)
    # ParametrizedLinear -> Linear; object.__new__ because copying a parametrized module is refused
    new = object.__new__(type(model).__bases__[0] if masked else type(model))
    new.__dict__.update(model.__dict__)
    new._parameters = dict(model._parameters)
    new._buffers = dict(model._buffers)
    new._modules = {}
    if masked:
        for name, plist in model.parametrizations.items():
            new._parameters[name] = plist.original
    for name, child in model._modules.items():
        if name == "parametrizations" and masked:
            continue
        new._modules[name] = plain_view(child)
    return new


class CompiledTraining:
    """Calls go to the compiled plain view of ``sparsifier.model``; :meth:`step` replaces ``sparsifier.step()``.

    ``compile_options`` go to ``sparsec.sparse_compile`` (default: CSR for every target layer, which
    training needs; ``target='cpu'``, no calibration). ``self.compiled`` is the CompiledModel."""

    def __init__(self, sparsifier: BaseSparsifier, example_inputs: tuple, **compile_options) -> None:
        from sparsec.compiler.api import sparse_compile

        from .rigl import RigL
        from .static import StaticSparsifier

        if not isinstance(sparsifier, (StaticSparsifier, RigL)):
            raise NotImplementedError(
                f"compiled training covers StaticSparsifier, RigL and SET; {type(sparsifier).__name__} is not "
                "one of them (movement pruning needs dense gradients every step, gradual pruners are untested)")
        sparsifier._require_prepared()
        self.sparsifier = sparsifier
        self.weights = {name: original(module) for name, module in sparsifier.targets.items()}
        for name, module in sparsifier.targets.items():
            if not isinstance(module, nn.Linear):
                raise NotImplementedError(f"{name}: compiled training covers Linear layers; "
                                          f"{type(module).__name__} is not one")
            with torch.no_grad():
                if bool((self.weights[name] * ~get_mask(module).mask).any()):
                    raise ValueError(f"{name}: its weight is nonzero outside its mask (the sparsifier zeroes "
                                     "pruned weights: prepare() it first)")
        options = {"target": "cpu", "force_format": "csr", "calibrate": False, "min_weight_numel": 0}
        options.update(compile_options)
        self.plain = plain_view(sparsifier.model)
        self.compiled = sparse_compile(self.plain, tuple(example_inputs), **options)
        self._dense: dict | None = None
        self._sync()

    def _sync(self) -> None:
        self.compiled.set_patterns({self.weights[n]: get_mask(m).mask for n, m in self.sparsifier.targets.items()})

    def _wants_dense_grads(self) -> bool:
        """Whether the next sparsifier step updates masks by gradient (RigL's growth), so this forward's
        backward must give the dense weight gradients."""
        sp = self.sparsifier
        return bool(getattr(sp, "needs_gradient", False)) and hasattr(sp, "is_update_step") and \
            sp.is_update_step(sp.step_count + 1)

    def __call__(self, *args, **kwargs):
        if self._wants_dense_grads():
            from sparsec.runtime.training import dense_weight_grads

            with dense_weight_grads() as dense:
                out = self.compiled(*args, **kwargs)
            self._dense = dense
            return out
        return self.compiled(*args, **kwargs)

    def step(self) -> None:
        """The sparsifier's step (after ``optimizer.step()``); then re-pack the layers whose mask changed."""
        sp = self.sparsifier
        if self._dense is not None:
            for name, weight in self.weights.items():
                if weight in self._dense:
                    sp.dense_grads[name] = self._dense[weight]
            self._dense = None
        sp.step()
        self._sync()
