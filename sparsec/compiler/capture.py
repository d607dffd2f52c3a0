"""Capture: torch.export of the model in eval mode (or, for a train-mode variant, in the modes the user set),
parameters lifted, ATen graph.

Export is tried with every input dimension marked ``Dim.AUTO`` so that a different batch size or
sequence length reuses the graph; if export refuses dynamic shapes it is retried static (the runtime
then recompiles per shape). Export's own errors reach the user as CaptureError with its reason and a
remedy; nothing is swallowed.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field

import torch
from torch.utils import _pytree as pytree

from sparsec.errors import CaptureError
from sparsec.runtime import trace_gate

log = logging.getLogger("sparsec")


@dataclass
class Captured:
    """The exported program, its graph module and whether it captured dynamic dimensions."""

    program: torch.export.ExportedProgram
    module: torch.fx.GraphModule
    dynamic: bool
    notes: list[str] = field(default_factory=list)  # what capture changed that the report should say


def _auto_dims(args: tuple):
    """dynamic_shapes marking every dimension of every tensor input Dim.AUTO."""

    def spec(x):
        if isinstance(x, torch.Tensor):
            # export specializes sizes 0 and 1 anyway (and warns); leave those dimensions static
            return {d: torch.export.Dim.AUTO for d in range(x.dim()) if x.shape[d] > 1}
        return None

    return pytree.tree_map(spec, args)


def capture(model: torch.nn.Module, args: tuple, kwargs: dict | None = None, dynamic: bool = True,
            training: bool = False) -> Captured:
    """Export ``model`` in eval mode (every module's training flag is restored afterwards), or with
    ``training`` in the modes its modules are in now: export then records train-mode dropout
    (``aten.dropout(x, p, True)``, drawn from torch's RNG when the graph runs, as eager) and BatchNorm
    with batch statistics (``aten.batch_norm(..., training=True, ...)``, which updates the running
    statistics in place, and ``add_`` on ``num_batches_tracked``). Export traces with fake tensors: the
    model's buffers and the RNG are not touched here.

    Holds the trace gate: export patches ``nn.Module.__call__`` process-wide, so compiled models running in
    other threads wait for it (sparsec/runtime/trace_gate.py)."""
    with trace_gate.tracing():
        return _capture(model, args, kwargs, dynamic, training)


def _capture(model: torch.nn.Module, args: tuple, kwargs: dict | None, dynamic: bool, training: bool) -> Captured:
    if not isinstance(model, torch.nn.Module):
        raise CaptureError(f"sparse_compile needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(args, tuple):
        raise CaptureError(f"example inputs must be a tuple, got {type(args).__name__} (write (x,) for one input)")
    kwargs = kwargs or {}
    if training:
        _check_trainable_modes(model)
    # each module's own flag: model.train(was) would also flip a BatchNorm the user froze with .eval()
    modes = [(m, m.training) for m in model.modules()]
    if not training:
        model.eval()
    swapped = _swap_inference_tensors(model)
    args, kwargs = _normal_inputs(args), _normal_inputs(kwargs)
    try:
        if dynamic and not kwargs:  # keyword inputs are captured static: the runtime recompiles per shape
            try:
                ep = torch.export.export(model, args, dynamic_shapes=_auto_dims(args))
                return _inline_wrappers(Captured(ep, ep.module(), dynamic=True))
            except Exception as exc:  # fall back to a static capture; its error is the one users see
                log.info("sparsec: dynamic-shape export failed (%s); retrying with static shapes", exc)
        try:
            ep = torch.export.export(model, args, kwargs)
        except Exception as exc:
            raise CaptureError(_explain(exc, model, kwargs)) from exc
        return _inline_wrappers(Captured(ep, ep.module(), dynamic=False))
    finally:
        for store, name, t in swapped:
            store[name] = t
        for m, mode in modes:
            m.training = mode


def _check_trainable_modes(model: torch.nn.Module) -> None:
    """Refuse what a train-mode capture cannot record, with the reason (export's own error names a symbol)."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.momentum is None \
                and m.track_running_stats:
            raise CaptureError(
                f"BatchNorm {name or type(m).__name__} has momentum=None (a cumulative average, factor "
                "1/num_batches_tracked), which torch.export cannot capture in train mode: the factor is read "
                "from a tensor's value. Give it a momentum (e.g. 0.1), or compile and call it in eval()")


def _wrapper_regions(gm: torch.fx.GraphModule) -> tuple[list[tuple[str, torch.dtype]], int]:
    """(device, dtype) of every enabled ``torch.autocast`` region, and the count of all regions export kept
    as higher-order ops (autocast, enabled or not, and ``torch.no_grad()`` / ``enable_grad()`` /
    ``set_grad_enabled``)."""
    hops = [getattr(torch.ops.higher_order, name, None) for name in ("wrap_with_autocast", "wrap_with_set_grad_enabled")]
    calls = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in hops and n.target is not None]
    regions = [(str(n.args[0]), n.args[1]) for n in calls if n.target is hops[0] and n.args[2]]
    return regions, len(calls)


def _inline_wrappers(cap: Captured) -> Captured:
    """Inline the regions export wraps in higher-order ops: inside one a Linear is invisible to the passes
    and the report would be empty. ``torch.autocast`` regions become explicit casts (``_to_copy`` of the
    weights and activations, what autocast does in eager; fold_constants folds the casts of constant
    weights, and the layers compute in the autocast dtype, as in eager). Grad-mode regions
    (``with torch.no_grad():`` in forward, as Reformer's layers have) change nothing in an inference graph
    and are inlined as they are."""
    regions, wrapped = _wrapper_regions(cap.module)
    if not wrapped:
        return cap
    ep = cap.program.run_decompositions({})
    if not regions:
        return Captured(ep, ep.module(), cap.dynamic, cap.notes)
    kinds = sorted({f"{dev}/{str(dt).replace('torch.', '')}" for dev, dt in regions})
    note = (f"torch.autocast ({', '.join(kinds)}) inside forward: {len(regions)} region(s) inlined as explicit "
            "casts; the layers inside compute in the autocast dtype, as in eager (on the CPU target a layer "
            "that is not float32 stays dense: the CPU kernels are float32; convert the model with "
            "model.to(dtype) and drop the autocast, or keep it outside forward, to choose otherwise)")
    return Captured(ep, ep.module(), cap.dynamic, [*cap.notes, note])


def _swap_inference_tensors(model: torch.nn.Module) -> list:
    """Replace every parameter / buffer made under ``torch.inference_mode()`` by a normal copy, for export
    (which cannot trace inference tensors); returns (store, name, original) to put back afterwards. The
    exported graph keeps the copies; the model itself is left as the user built it."""
    swapped = []
    for mod in model.modules():
        for store in (mod._parameters, mod._buffers):
            for name, t in list(store.items()):
                if t is not None and t.is_inference():
                    copy = t.detach().clone()  # outside inference_mode a clone is a normal tensor
                    store[name] = torch.nn.Parameter(copy, t.requires_grad) if isinstance(t, torch.nn.Parameter) else copy
                    swapped.append((store, name, t))
    return swapped


def _normal_inputs(tree):
    """Example inputs with every inference tensor (made under ``torch.inference_mode()``) replaced by a
    normal copy: export traces with autograd on and cannot save inference tensors for backward."""
    def normal(x):
        return x.detach().clone() if isinstance(x, torch.Tensor) and x.is_inference() else x

    return pytree.tree_map(normal, tree)


#: export's message when a model returns an object pytree cannot flatten (an HF DynamicCache, ...)
_UNKNOWN_OUTPUT = re.compile(r"Found <class '([\w.]+)'> in output, which is not a known type")


def _is_cache_type(qualname: str) -> bool:
    """True when ``qualname`` names a transformers key/value cache class (DynamicCache, HybridCache, ...)."""
    module, _, name = qualname.rpartition(".")
    mod = sys.modules.get(module)  # the model already imported it; never import transformers here
    cls = getattr(mod, name, None) if mod is not None else None
    base = getattr(sys.modules.get("transformers.cache_utils"), "Cache", None)
    if isinstance(cls, type) and base is not None:
        return issubclass(cls, base)
    return name.endswith("Cache")


def _cache_enabled(model: torch.nn.Module, kwargs: dict) -> bool:
    """The call returns a key/value cache: an HF config with use_cache on, not switched off by a keyword."""
    if "use_cache" in kwargs:
        return bool(kwargs["use_cache"])
    return bool(getattr(getattr(model, "config", None), "use_cache", False))


_CACHE_HINT = (
    "the model returns a key/value cache ({what}), which torch.export cannot return from a graph. Compile "
    "without it: set model.config.use_cache = False (or pass use_cache=False in the example keyword inputs "
    "and every call), or compile a decoder with a static cache held as buffers: "
    "transformers.integrations.executorch.TorchExportableModuleWithStaticCache(model, batch_size, max_cache_len), "
    "called with input_ids= and cache_position= keywords"
)


def _explain(exc: Exception, model: torch.nn.Module | None = None, kwargs: dict | None = None) -> str:
    """Export's reason, first lines only, with what to do about the common causes."""
    text = str(exc).strip().splitlines()
    head = "\n  ".join(text[:12])
    kind = type(exc).__name__
    hint = (
        "torch.export could not trace the model. Common causes: Python control flow that depends on tensor "
        "values (use torch.cond or move it out of forward), calls into non-PyTorch code (numpy, .item(), "
        "printing tensors), or unsupported Python constructs. See "
        "https://pytorch.org/docs/stable/export.html#limitations-of-torch-export"
    )
    if "data-dependent" in str(exc) or "Could not guard on data-dependent" in str(exc):
        hint = (
            "the model branches or sizes a tensor on tensor values (data-dependent control flow). "
            "Rewrite the branch with torch.cond / torch.where, or keep that part outside the compiled model."
        )
    found = _UNKNOWN_OUTPUT.search(str(exc))
    if found and _is_cache_type(found.group(1)):
        hint = _CACHE_HINT.format(what=found.group(1).rpartition(".")[2])
    elif found:
        name = found.group(1).rpartition(".")[2]
        hint = (f"the model returns a {name}, which torch.export cannot flatten into tensors. Register it "
                f"before compiling: torch.export.register_dataclass({name}) for a dataclass, "
                "torch.utils._pytree.register_pytree_node for another class; or return a tuple / dict")
    elif model is not None and _cache_enabled(model, kwargs or {}):
        # the cache may break the trace before any output exists (its updates branch on the cache state)
        hint += "\nAlso: " + _CACHE_HINT.format(what="model.config.use_cache is True")
    return f"sparsec could not capture the model ({kind}): {head}\nWhat to do: {hint}"
