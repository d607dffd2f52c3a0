"""Training through a compiled sparse linear: the ``sparsec::sparse_linear`` custom op and its backward.

Forward runs the layer's MLIR kernels (SparseLinear). Backward, for ``y = act(x W^T + b) + r``, is the
custom op ``sparsec::sparse_linear_backward`` (opaque to torch.compile / AOT autograd, like forward):

- CSR layers (targets/cpu/csr_backward.py): one MLIR SDDMM kernel per row slab writes dW at W's stored
  positions straight into the dense-shaped gradient (zeros elsewhere: static sparse training), folding
  ``dz = dy * act'`` for relu/tanh (read off the saved output) and ``db = sum(dz)``.
- Other formats: ``dz`` in torch, dW by a chunked torch gather over the stored positions.
- gelu/silu: a layer called with grad runs its linear part ``z`` through the op (a twin module: the
  same packed weight, no epilogue) and the activation in torch (``train_forward``), so autograd keeps
  ``z`` and backward recomputes nothing. A direct call of the op on a gelu/silu layer recomputes ``z``
  by the twin; aten's gelu/silu backward formulas give ``dz``.
- ``dx = dz W``: the forward kernels run on a CSR copy of ``W^T`` (built on first backward).
- ``dr = dy``.

On request (``sparsec.dense_weight_grads``, RigL's growth step) a backward also gives the *dense*
gradient of each sparse weight, ``dz^T x`` at every position, into a dict; ``.grad`` stays the masked
one. Only the steps that ask pay for the dense matmul.

Packed values follow the parameter in O(nnz) (``refresh_values``): every slab's packed values are views
of one buffer in ``flat`` order (``Trainable.stored``); for CSR one MLIR kernel per slab reads W once,
gathering the stored values and checking that nothing outside them is nonzero (emit_refresh.py); the
CSR copy of ``W^T`` is then one preallocated gather per slab from that buffer (a permutation of an
nnz-long array that stays in cache). Nothing is allocated, and no Python loop runs over rows.
"""

from __future__ import annotations

import contextvars
import functools
import weakref

import numpy as np
import torch

from sparsec import knobs
from sparsec.errors import UnsupportedError
from sparsec.formats import registry
from sparsec.targets.cpu import csr_backward

_MODULES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
#: while set (sparsec.runtime.training.dense_weight_grads): {weight parameter: its dense gradient}
DENSE_GRADS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("sparsec_dense_grads", default=None)


def stored_index(fmt, packed) -> np.ndarray:
    """For ``packed``'s value slots (``fmt.pack(w)``), the flat index into ``w`` each one holds (-1: padding).

    Read off the packed structure itself (``fmt.slot_coords``): O(stored values), no packing.
    (Re-packing three index-valued copies of the weight cost ~0.4 s per BERT-base linear, paid on the first
    call with grad enabled, including a warm compile's or a loaded model's.)"""
    i, j = fmt.slot_coords(packed)
    rows, cols = packed.shape
    return np.where((i < rows) & (j < cols), i * cols + j, -1)


class Trainable:
    """The training state of one SparseLinear: its parameters, slot maps, stored positions, twins.

    ``stored`` holds W's values at the stored positions in ``flat`` order. When no slab has padding
    slots (CSR, and any format whose packing stores exactly the pattern), the slabs' packed value
    arrays *are* views of it (``SparseLinear.adopt_values``), so refreshing it refreshes the forward."""

    def __init__(self, module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.refs = (weight, bias)
        # per slab: (its packed values as a tensor, the valid slots or None for all, start, end in ``flat``)
        self.maps = []
        flat, start = [], 0
        for packed, _, (r0, _) in module.slabs:
            idx = stored_index(module.fmt, packed)
            valid = idx >= 0
            g = torch.from_numpy(idx[valid] + r0 * module.in_features)
            slots = None if bool(valid.all()) else torch.from_numpy(np.nonzero(valid)[0])
            self.maps.append((_values(packed), slots, start, start + g.numel()))
            flat.append(g)
            start += g.numel()
        self.flat = torch.cat(flat)  # every stored position of W, as flat indices
        self._in_features, self._out_features = module.in_features, module.out_features
        self.shared = all(slots is None for _, slots, _, _ in self.maps)
        values = np.empty(start, dtype=np.float32)
        self.stored = torch.from_numpy(values)
        torch.index_select(weight.detach().reshape(-1).float(), 0, self.flat, out=self.stored)
        if self.shared:  # one buffer in flat order; each slab's packed values a view of it
            arrays = [values[s0:s1] for _, _, s0, s1 in self.maps]
            for a, (v, _, _, _) in zip(arrays, self.maps, strict=True):
                a[:] = v.numpy()
            module.adopt_values(arrays)
            self.maps = [(torch.from_numpy(a), None, s0, s1) for a, (_, _, s0, s1) in zip(arrays, self.maps, strict=True)]
        #: the refresh runs the CSR refresh kernel (one read of W: gather and pattern check)
        self.kernel = self.shared and csr_backward.supports(module)
        self.transposed = None  # (SparseLinear of W^T in CSR, per slab (its values, index into ``stored``))
        self.twin = None

    @functools.cached_property
    def pattern(self) -> torch.Tensor:
        """What the slabs store (the explicit pattern of a re-packed layer, zeros included), as 1.0 [out, in]
        (the CSR copy of W^T's structure: built on the first backward, not on the first grad-enabled call,
        which paid ~4 ms per BERT-base linear for a dense zeros it did not read)."""
        pattern = torch.zeros(self._out_features * self._in_features)
        pattern[self.flat] = 1.0
        return pattern.view(self._out_features, self._in_features)

    @functools.cached_property
    def rows(self) -> torch.Tensor:
        """The row of every stored position in ``flat`` order (the torch dW gather of formats without an SDDMM
        kernel; computed on first use, not on the first grad-enabled call)."""
        return self.flat // self._in_features

    @functools.cached_property
    def cols(self) -> torch.Tensor:
        """The column of every stored position in ``flat`` order."""
        return self.flat % self._in_features


def state(module) -> Trainable:
    """``module``'s training state, built on first use (the first backward, refresh or twin: O(nnz), read off
    the packed buffers), not on the first grad-enabled forward, which needs only the op's handle."""
    if module.trainable is None:
        module.enable_training(*module.train_refs)
    return module.trainable


def _values(packed) -> torch.Tensor:
    return torch.from_numpy(packed.buffers["values"])


def refresh_values(module) -> bool:
    """Copy the parameter's current values into the packed buffers in O(nnz); bias too.

    Returns False, leaving the packed values partly updated (the caller re-packs), when the parameter
    has a nonzero outside the stored positions: the mask changed. Negative zeros outside count as zeros
    (pruning by multiplication leaves them); the parameter is never written.

    CSR: one kernel call per slab reads W once, gathering into the packed values (views of
    ``stored``) and counting nonzeros outside (codegen/mlir/emit_refresh.py). Other formats: one
    preallocated gather into ``stored``, a count of W's nonzeros, and a copy into the slabs. The
    transposed copy (dx's CSR of W^T) and the twin follow from ``stored`` by one preallocated
    gather per slab (an nnz-long source that stays in cache) — no allocation, no loop over rows."""
    st = state(module)
    weight, bias = st.refs
    w = weight.detach()
    if st.kernel and w.dtype == torch.float32 and w.is_contiguous():
        if csr_backward.refresh(module, w) != 0:
            return False
    else:
        torch.index_select(w.reshape(-1).float(), 0, st.flat, out=st.stored)
        if int(torch.count_nonzero(w)) != int(torch.count_nonzero(st.stored)):
            return False
        if not st.shared:
            for vals, slots, s0, s1 in st.maps:
                vals.index_copy_(0, slots, st.stored[s0:s1]) if slots is not None else vals.copy_(st.stored[s0:s1])
    if bias is not None:
        b32 = bias.detach().float()
        for _, b, (r0, r1) in module.slabs:
            if b is not None:
                b[: r1 - r0].copy_(b32[r0:r1])
    module.sync_values()
    if st.twin is not None:
        _copy_slabs(module, st.twin)
    if st.transposed is not None:
        tmod, tmaps = st.transposed
        for vals, index in tmaps:
            torch.index_select(st.stored, 0, index, out=vals)
        tmod.sync_values()
    return True


def _copy_slabs(src, dst) -> None:
    for (p, b, _), (q, c, _) in zip(src.slabs, dst.slabs, strict=True):
        if q.buffers["values"] is not p.buffers["values"]:
            _values(q).copy_(_values(p))
        if b is not None and c is not None:
            c.copy_(b)
    dst.sync_values()


def _transposed(module):
    """CSR of W^T (built once): the module that computes ``dz @ W`` with the forward kernels."""
    st = state(module)
    if st.transposed is None:
        wt = st.pattern.t().contiguous()  # the structure; values follow from ``stored`` below
        tmod = module.plain(module.layer_name + ".T", registry.get_format("csr"), wt, None)
        out_f, in_f = module.out_features, module.in_features
        # where in ``flat`` order each W^T slot's value sits (flat is not sorted for blocked formats)
        order = torch.argsort(st.flat)
        sorted_flat = st.flat[order]
        tmaps = []
        for packed, _, (r0, _) in tmod.slabs:
            idx = stored_index(tmod.fmt, packed)
            if not (idx >= 0).all():
                raise UnsupportedError(f"{module.layer_name}: the CSR copy of W^T has padding slots")
            k = torch.from_numpy(idx + r0 * out_f)  # flat index into W^T [in, out]
            w_flat = (k % out_f) * in_f + k // out_f
            tmaps.append((_values(packed), order[torch.searchsorted(sorted_flat, w_flat)]))
        for vals, index in tmaps:
            torch.index_select(st.stored, 0, index, out=vals)
        tmod.sync_values()
        st.transposed = (tmod, tmaps)
    return st.transposed[0]


def _twin(module):
    """The same packed weight and bias without activation or residual (the layer's linear part ``z``).

    It shares the module's training state (slot maps, stored values, the CSR copy of W^T) and, where the
    slabs hold exactly the pattern, its packed values: a refresh of the module refreshes it."""
    st = state(module)
    if st.twin is None:
        twin = module.linear_part(module.layer_name + ".z")  # its kernels: compiled with the layer's (prepare)
        if st.shared:  # the same pattern and slabs: read the module's values, no copy on refresh
            twin.adopt_values([p.buffers["values"] for p, _, _ in module.slabs])
        _copy_slabs(module, twin)
        twin.trainable, twin.train_refs = st, module.train_refs
        twin._handle = register(twin)
        st.twin = twin
    return st.twin


#: activations the training forward leaves to torch: the kernels run the linear part, whose result ``z``
#: autograd saves for the activation's backward (no recompute of ``z`` in backward)
UNFOLDED = {"gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}


def train_forward(module, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """The layer through the autograd-capable custom op (module._handle is set).

    relu/tanh stay fused (their derivative is read off the output in backward); gelu/silu run the linear
    part through the op and the activation (and the residual add) in torch, which costs the activation
    once in forward instead of a second sparse matmul in backward."""
    w, b = module.train_refs
    act = UNFOLDED.get(module.activation)
    if act is None:
        return torch.ops.sparsec.sparse_linear(x, w, b, residual, module._handle)
    y = act(torch.ops.sparsec.sparse_linear(x, w, b, None, _twin(module)._handle))
    return y if residual is None else y + residual


@torch.library.custom_op("sparsec::sparse_linear", mutates_args=())
def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  residual: torch.Tensor | None, handle: int) -> torch.Tensor:
    """``act(x W^T + b) + residual`` by the compiled kernels of the SparseLinear registered as ``handle``."""
    return _MODULES[handle].run(x, residual)


def _empty_like_kernel_output(x: torch.Tensor, features: int, natural: bool) -> torch.Tensor:
    """An empty [..., features] tensor laid out as the CPU kernels leave their result.

    Y^T = W X^T kernels leave [features, N] buffers, returned as a transposed view (SparseLinear.run);
    natural-layout kernels and N == 1 return [N, features] as it is. Fake kernels must match strides."""
    lead = x.shape[:-1]
    n = 1
    for s in lead:
        n *= s
    if n == 1 or natural:
        return x.new_empty((*lead, features))
    return x.new_empty((features, n)).t().reshape(*lead, features)


@sparse_linear.register_fake
def _(x, weight, bias, residual, handle):
    module = _MODULES.get(handle)
    return _empty_like_kernel_output(x, weight.shape[0], module is None or getattr(module, "natural", False))


def _setup(ctx, inputs, output) -> None:
    x, weight, bias, residual, handle = inputs
    ctx.handle = handle
    ctx.has_bias, ctx.has_residual = bias is not None, residual is not None
    ctx.save_for_backward(x, output, residual if residual is not None else None)
    ctx.dense_grads = DENSE_GRADS.get()  # asked for at forward time, or (below) at backward time


def _backward(ctx, grad):
    x, y, residual = ctx.saved_tensors
    need = ctx.needs_input_grad
    want_b = ctx.has_bias and need[2]
    collect = ctx.dense_grads if ctx.dense_grads is not None else DENSE_GRADS.get()
    dense_w = collect is not None and need[1]
    dx, dw, db = sparse_linear_backward(grad, x, y, residual, ctx.handle, need[0], need[1], want_b, dense_w)
    if dense_w:
        module = _MODULES[ctx.handle]
        weight = module.train_refs[0]
        collect[weight] = collect[weight] + dw if weight in collect else dw
        dw = _masked(module, dw)
    dr = grad if ctx.has_residual and need[3] else None
    return dx if need[0] else None, dw if need[1] else None, db if want_b else None, dr, None


@torch.library.custom_op("sparsec::sparse_linear_backward", mutates_args=())
def sparse_linear_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, residual: torch.Tensor | None,
                           handle: int, need_x: bool, need_w: bool, need_b: bool, dense_w: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dW, db) of ``sparsec::sparse_linear`` by the layer's kernels; an unrequested one is empty.

    dW is zero outside the stored positions, or with ``dense_w`` the dense gradient ``dz^T x``.
    A custom op of its own so that torch.compile and AOT autograd trace the backward as one opaque
    node, as they do the forward."""
    dx, dw, db = _backward_impl(_MODULES[handle], grad, x, y, residual, need_x, need_w, need_b, dense_w)
    return tuple(x.new_empty(0) if t is None else t for t in (dx, dw, db))


@sparse_linear_backward.register_fake
def _(grad, x, y, residual, handle, need_x, need_w, need_b, dense_w=False):
    module = _MODULES[handle]
    dx = _empty_like_kernel_output(x, module.in_features, False) if need_x else x.new_empty(0)
    dw = x.new_empty((module.out_features, module.in_features)) if need_w else x.new_empty(0)
    db = x.new_empty((module.out_features,)) if need_b else x.new_empty(0)
    return dx, dw, db


def _backward_impl(module, grad, x, y, residual, need_x: bool, want_w: bool, want_b: bool, dense_w: bool = False):
    out_f, in_f = module.out_features, module.in_features
    g = grad.reshape(-1, out_f).float()
    x2 = x.reshape(-1, in_f)
    act = module.activation
    a = None
    if act is not None:
        a = y.reshape(-1, out_f)
        if residual is not None:
            a = a - residual.reshape(-1, out_f)
    if csr_backward.supports(module) and want_w and not dense_w:
        deriv = act if act in csr_backward.FOLDED else None
        if act is not None and deriv is None:
            g, a = _act_grad(module, act, g, a, x2), None
        # the [features, N] layout of the forward: free when g and x are transposed views already
        dense = csr_backward.dense_ok(module)
        dw, dzt, db = csr_backward.sddmm(module, g.t().contiguous(), x2.t().contiguous(),
                                         a.t().contiguous() if deriv else None, deriv, want_b, dense)
        if not dense:
            dw = _dense_grad(module, dw)
        dz = dzt.t()
    else:
        dz = _act_grad(module, act, g, a, x2) if act is not None else g
        if want_w and dense_w:
            dw = dz.t() @ x2.float()  # every position: the growth score of pruned weights
        else:
            dw = _dense_grad(module, _torch_sddmm(module, dz, x2), packed=False) if want_w else None
        db = dz.sum(0) if want_b else None
    dx = _transposed(module).run(dz, None).reshape(x.shape) if need_x else None
    return dx, dw, db


def _masked(module, dw: torch.Tensor) -> torch.Tensor:
    """``dw`` with zeros outside the stored positions (static sparse training's ``.grad``)."""
    st = state(module)
    out = torch.zeros(dw.numel())
    out[st.flat] = dw.reshape(-1)[st.flat]
    return out.reshape(dw.shape)


def _act_grad(module, act: str, g: torch.Tensor, a: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``g * act'(z)``: relu and tanh from the output ``a``; gelu and silu recompute z (the twin)."""
    if act == "relu":
        return g * (a > 0)
    if act == "tanh":
        return g * (1 - a * a)
    z = _twin(module).run(x2, None)
    # aten's own backward formulas (autograd does not record inside a custom op)
    if act == "gelu":
        return torch.ops.aten.gelu_backward(g, z)
    return torch.ops.aten.silu_backward(g, z)


def _torch_sddmm(module, dz: torch.Tensor, x2: torch.Tensor) -> list[torch.Tensor]:
    """dW at the stored positions for formats without an SDDMM kernel: chunked torch gathers."""
    st = state(module)
    gt, xt = dz.t().contiguous(), x2.t().contiguous()
    vals = torch.empty(st.flat.numel())
    chunk = knobs.get("sddmm_grad_chunk")  # bounds the gather's temporary to ~chunk * N floats
    for s in range(0, st.flat.numel(), chunk):
        r, c = st.rows[s : s + chunk], st.cols[s : s + chunk]
        vals[s : s + chunk] = (gt[r] * xt[c]).sum(1)
    return [vals]


def _dense_grad(module, values: list[torch.Tensor], packed: bool = True) -> torch.Tensor:
    """The weight's dense-shaped gradient: ``values`` at the stored positions, zeros elsewhere.

    ``values``: one tensor per slab in packed slot order (``packed``), or one tensor in ``flat`` order."""
    st = state(module)
    if packed:  # drop padding slots (none for CSR: then the slot map is the identity)
        values = [v if slots is None else v[slots] for v, (_, slots, _, _) in zip(values, st.maps, strict=True)]
    vals = values[0] if len(values) == 1 else torch.cat(values)
    dw = torch.zeros(module.out_features * module.in_features)
    dw[st.flat] = vals
    return dw.reshape(module.out_features, module.in_features)


sparse_linear.register_autograd(_backward, setup_context=_setup)


def register(module) -> int:
    """A handle for ``module`` that the custom op resolves (modules are held weakly)."""
    handle = id(module)
    _MODULES[handle] = module
    return handle


def needs_grad(module, x: torch.Tensor, residual: torch.Tensor | None) -> bool:
    """True when autograd must see this call: grad mode on and an input or a parameter requires grad."""
    if not torch.is_grad_enabled():
        return False
    weight, bias = module.train_refs
    return any(t is not None and t.requires_grad for t in (x, residual, weight, bias))
