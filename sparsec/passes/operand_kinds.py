"""The operand kinds: how a constant weight meets its activation, one table entry per kind.

A matmul-like match (sparsec/passes/matmul_like.py) has a ``kind``; everything that depends on it is
read from this table instead of being spread over the passes:

- ``matrix``: the constant as the 2-d W [out, in] the kernel multiplies with (analyze measures it);
- ``feature_dim``: which output dimension holds the features, so N is the product of the others (the
  columns of X^T the kernel sees; analyze and rows read it);
- ``prices``: per target name, how the cost model prices the layer's dense option and its sparse
  candidates where that differs from a GEMM of the same FLOPs (select applies it before choosing).

Kinds (the matchers' docstring says which aten ops each comes from):

- ``linear``: ``x @ W^T``; W as stored, or its transpose for ``[in, out]`` weights.
- ``left``: a constant left operand ``A @ H``; A is W, H is already the kernel's X^T.
- ``conv2d``: a constant filter [Cout, Cin, kh, kw] as W [Cout, Cin*kh*kw] (im2col + the same kernel).
  On the CPU a dense convolution stays torch's conv2d, which oneDNN runs as a direct convolution at
  about twice a GEMM's FLOP rate (1.4x-2.3x, median 2.1x, over six 3x3 layers, docs/models.md), so its
  dense price is the GEMM's divided by knob ``dense_conv_speedup``; the sparse candidates are priced
  knob ``conv_sparse_slowdown`` times their GEMM prediction (on the CNN of tests/models the CSR kernels
  reached about half the per-thread rate calibrated on Linear shapes: im2col's patch gather is 10-25% of
  it, short rows of 9*C_in the rest). Without these, 80-90%-sparse convolutions went to im2col + SpMM
  that measured 1.2x-2.5x slower than torch.
- ``diag``: sparse row scaling ``s[:, None] * H``; W is ``diag(s)``. Eager computes it elementwise
  (read H, write the result), so dense is priced as that stream, not as a matmul.

The GPU targets keep every kind but ``linear`` dense (GpuTarget.rejects_layer), so only the CPU has
prices of its own here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sparsec import knobs
from sparsec.formats.cost import Machine


@dataclass(frozen=True)
class Pricing:
    """How one target prices a kind: its dense option, and a factor on every sparse candidate's GEMM price."""

    #: (rows of W, N, the GEMM-shaped dense price, machine) -> the dense option's predicted seconds
    dense: Callable[[int, int, float, Machine], float] = lambda rows, n, gemm, machine: gemm
    #: () -> the factor on each sparse candidate's GEMM-shaped prediction (a knob may set it)
    sparse_factor: Callable[[], float] = lambda: 1.0
    #: what the dense option is, for reasons ("dense", "dense conv2d")
    dense_name: str = "dense"


@dataclass(frozen=True)
class OperandKind:
    """One kind of matmul-like operand: how to read its weight, its rows, and how to price it per target."""

    name: str
    #: (the stored constant, whether it is stored transposed) -> W [out, in]
    matrix: Callable[[torch.Tensor, bool], torch.Tensor]
    #: rank of the node's output -> the index of its feature dimension
    feature_dim: Callable[[int], int]
    #: target name -> its Pricing where it differs from a GEMM of the same FLOPs
    prices: dict[str, Pricing] = field(default_factory=dict)

    def pricing(self, target: str) -> Pricing:
        """How ``target`` prices this kind (a GEMM's price unless the table says otherwise)."""
        return self.prices.get(target, _GEMM)

    def rows(self, shape) -> int:
        """N for an output of ``shape``: the product of its sizes without the feature dimension."""
        if len(shape) == 0:
            return 1
        feature = self.feature_dim(len(shape))
        rows = 1
        for d, s in enumerate(shape):
            if d != feature:
                rows *= int(s)
        return rows


_GEMM = Pricing()


def _diag_dense(rows: int, n: int, gemm: float, machine: Machine) -> float:
    """Eager's elementwise ``s[:, None] * H``: read H and write the result (4-byte values), one torch op."""
    return 8.0 * rows * n / machine.bandwidth + machine.torch_overhead


KINDS: dict[str, OperandKind] = {k.name: k for k in (
    OperandKind("linear", lambda w, transposed: w.t() if transposed else w, lambda rank: rank - 1),
    OperandKind("left", lambda w, transposed: w.t() if transposed else w, lambda rank: max(rank - 2, 0)),
    OperandKind("conv2d", lambda w, transposed: w.reshape(w.shape[0], -1), lambda rank: 1 if rank == 4 else 0,
                prices={"cpu": Pricing(lambda rows, n, gemm, machine: gemm / knobs.get("dense_conv_speedup"),
                                       lambda: knobs.get("conv_sparse_slowdown"), "dense conv2d")}),
    OperandKind("diag", lambda w, transposed: torch.diag(w.reshape(-1)), lambda rank: max(rank - 2, 0),
                prices={"cpu": Pricing(_diag_dense)}),
)}


def kind(name: str) -> OperandKind:
    """The table entry of kind ``name``; NotImplementedError for a kind the table lacks."""
    try:
        return KINDS[name]
    except KeyError:
        raise NotImplementedError(f"operand kind {name!r} has no entry in sparsec/passes/operand_kinds.py "
                                  f"(known: {', '.join(KINDS)})") from None
