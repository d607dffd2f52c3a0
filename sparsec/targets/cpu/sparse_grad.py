"""Training through a compiled sparse linear: the ``sparsec::sparse_linear`` custom op and its backward.

Forward runs the layer's MLIR kernels (SparseLinear). Backward, for ``y = act(x W^T + b) + r``:

- ``dz = dy * act'(z)``: relu and tanh read the derivative off the output; gelu and silu recompute
  ``z`` with a twin module that has the same packed weight and no epilogue.
- ``dx = dz W``: the same forward kernel family run on a CSR copy of ``W^T`` (built on first backward).
- ``dW = (dz^T x)`` sampled at W's stored positions (SDDMM) as a chunked torch gather kernel (not MLIR);
  the gradient is dense-shaped with zeros at unstored positions (static sparse training).
- ``db = sum(dz)``, ``dr = dy``.

Packed values follow the parameter in O(nnz) (``refresh_values``): each packed value slot knows the flat
index of the weight entry it holds (``stored_index``), so a refresh is one gather per slab.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from sparsec import knobs
from sparsec.errors import UnsupportedError
from sparsec.formats import registry

_MODULES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_ACT = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu, "tanh": torch.tanh}
_SPLIT = 4096  # index = (hi - 1) * _SPLIT + (lo - 1); both halves stay exact in float32


def stored_index(fmt, w: torch.Tensor) -> np.ndarray:
    """For ``fmt.pack(w)``'s value slots, the flat index into ``w`` each one holds (-1: padding)."""
    packed = fmt.pack(w)
    vals = packed.buffers["values"]
    ones = dict(packed.buffers)
    ones["values"] = np.ones_like(vals)
    mask = fmt.unpack(type(packed)(packed.format, packed.shape, packed.padded_shape, ones)) != 0
    idx = torch.arange(w.numel(), dtype=torch.float64).reshape(w.shape)
    hi = fmt.pack(((idx // _SPLIT) + 1) * mask)
    lo = fmt.pack(((idx % _SPLIT) + 1) * mask)
    for name, buf in packed.buffers.items():  # the same structure, or the slot map would be wrong
        if name != "values" and not (np.array_equal(buf, hi.buffers[name]) and np.array_equal(buf, lo.buffers[name])):
            raise UnsupportedError(f"format {fmt.label}: packing is not determined by the pattern; no training")
    h = hi.buffers["values"].astype(np.int64)
    out = (h - 1) * _SPLIT + lo.buffers["values"].astype(np.int64) - 1
    out[h == 0] = -1
    return out


class Trainable:
    """The training state of one SparseLinear: its parameters, slot maps, stored positions, twins."""

    def __init__(self, module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.refs = (weight, bias)
        self.maps = []  # per slab: (valid slots, flat indices into the full weight)
        flat = []
        w = weight.detach().float()
        for _, _, (r0, r1) in module.slabs:
            idx = stored_index(module.fmt, w[r0:r1])
            valid = idx >= 0
            g = torch.from_numpy(idx[valid] + r0 * module.in_features)
            self.maps.append((torch.from_numpy(np.nonzero(valid)[0]), g))
            flat.append(g)
        self.flat = torch.cat(flat)  # every stored position of W, as flat indices
        self.rows = self.flat // module.in_features
        self.cols = self.flat % module.in_features
        self.transposed = None  # (SparseLinear of W^T in CSR, its slot maps in W's flat indices)
        self.twin = None


def _values(packed) -> torch.Tensor:
    return torch.from_numpy(packed.buffers["values"])


def refresh_values(module) -> None:
    """Copy the parameter's current values into the packed buffers (O(nnz)); bias too."""
    st: Trainable = module.trainable
    weight, bias = st.refs
    w = weight.detach().reshape(-1).float()
    for (packed, b, (r0, r1)), (slots, g) in zip(module.slabs, st.maps, strict=True):
        _values(packed)[slots] = w[g]
        if b is not None and bias is not None:
            b[: r1 - r0] = bias.detach().float()[r0:r1]
    module.sync_values()
    for other in (st.twin,):
        if other is not None:
            _copy_slabs(module, other)
    if st.transposed is not None:
        tmod, tmaps = st.transposed
        for (packed, _, _), (slots, g) in zip(tmod.slabs, tmaps, strict=True):
            _values(packed)[slots] = w[g]


def _copy_slabs(src, dst) -> None:
    for (p, b, _), (q, c, _) in zip(src.slabs, dst.slabs, strict=True):
        _values(q).copy_(_values(p))
        if b is not None and c is not None:
            c.copy_(b)
    dst.sync_values()


def _transposed(module):
    """CSR of W^T (built once): the module that computes ``dz @ W`` with the forward kernels."""
    st: Trainable = module.trainable
    if st.transposed is None:
        from sparsec.targets.cpu.sparse_linear import SparseLinear

        weight = st.refs[0].detach().float()
        wt = weight.t().contiguous()
        tmod = SparseLinear(module.layer_name + ".T", registry.get_format("csr"), wt, None, None, False,
                            threads=len(module.slabs))
        out_f, in_f = module.out_features, module.in_features
        tmaps = []
        for _, _, (r0, r1) in tmod.slabs:
            idx = stored_index(tmod.fmt, wt[r0:r1])
            valid = idx >= 0
            k = torch.from_numpy(idx[valid] + r0 * out_f)  # flat index into W^T [in, out]
            tmaps.append((torch.from_numpy(np.nonzero(valid)[0]), (k % out_f) * in_f + k // out_f))
        st.transposed = (tmod, tmaps)
    return st.transposed[0]


def _twin(module):
    """The same packed weight and bias without activation or residual: recomputes z for gelu/silu."""
    st: Trainable = module.trainable
    if st.twin is None:
        from sparsec.targets.cpu.sparse_linear import SparseLinear

        weight, bias = st.refs
        st.twin = SparseLinear(module.layer_name + ".z", module.fmt, weight.detach(),
                               None if bias is None else bias.detach(), None, False, threads=len(module.slabs))
        _copy_slabs(module, st.twin)
    return st.twin


@torch.library.custom_op("sparsec::sparse_linear", mutates_args=())
def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  residual: torch.Tensor | None, handle: int) -> torch.Tensor:
    """``act(x W^T + b) + residual`` by the compiled kernels of the SparseLinear registered as ``handle``."""
    return _MODULES[handle].run(x.contiguous(), residual).clone()


@sparse_linear.register_fake
def _(x, weight, bias, residual, handle):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup(ctx, inputs, output) -> None:
    x, weight, bias, residual, handle = inputs
    ctx.handle = handle
    ctx.has_bias, ctx.has_residual = bias is not None, residual is not None
    ctx.save_for_backward(x, output, residual if residual is not None else None)


def _backward(ctx, grad):
    module = _MODULES[ctx.handle]
    st: Trainable = module.trainable
    x, y, residual = ctx.saved_tensors
    out_f, in_f = module.out_features, module.in_features
    g = grad.reshape(-1, out_f).float()
    x2 = x.reshape(-1, in_f)
    act = module.activation
    if act is not None:
        a = y.reshape(-1, out_f)
        if residual is not None:
            a = a - residual.reshape(-1, out_f)
        if act == "relu":
            g = g * (a > 0)
        elif act == "tanh":
            g = g * (1 - a * a)
        else:
            z = _twin(module).run(x2.contiguous(), None).detach().requires_grad_()
            with torch.enable_grad():
                (g,) = torch.autograd.grad(_ACT[act](z), z, g)
    g = g.contiguous()
    need = ctx.needs_input_grad
    dx = _transposed(module).run(g, None).reshape(x.shape) if need[0] else None
    dw = None
    if need[1]:
        gt, xt = g.t().contiguous(), x2.t().contiguous()
        vals = torch.empty(st.flat.numel())
        chunk = knobs.get("sddmm_grad_chunk")  # bounds the gather's temporary to ~chunk * N floats
        for s in range(0, st.flat.numel(), chunk):
            r, c = st.rows[s : s + chunk], st.cols[s : s + chunk]
            vals[s : s + chunk] = (gt[r] * xt[c]).sum(1)
        dw = torch.zeros(out_f * in_f).index_put_((st.flat,), vals).reshape(out_f, in_f)
    db = g.sum(0) if ctx.has_bias and need[2] else None
    dr = grad if ctx.has_residual and need[3] else None
    return dx, dw, db, dr, None


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
