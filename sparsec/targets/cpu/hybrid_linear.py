"""HybridLinear: a layer in the hybrid format, run as two SparseLinear parts accumulating into one output.

The weight is split (sparsec/formats/hybrid.py) into W = W_blocks + W_rest. The block part runs the vector
BSR kernel, the remainder the CSR kernel, which takes the block part's output as its fused residual:

- no activation: ``Y1 = X W_blocks^T + b (+ R)``, then ``Y = X W_rest^T + Y1``: two kernel calls, no torch op;
- activation ``act``: the kernels' epilogue is ``act(z) + residual``, which cannot apply ``act`` to the sum
  of the two parts, so both parts run linear (``Y1 = X W_blocks^T + b``, ``Z = X W_rest^T + Y1``) and torch
  applies ``act`` (and adds R) after them: one elementwise pass more than a fused layer.

Bias and residual are applied exactly once. A part with no stored value is left out (the other one takes
the bias and residual). Training is not implemented: the selector does not choose the format for a weight
that requires grad (sparsec/passes/select.py), and a call whose input requires grad raises
NotImplementedError.
"""

from __future__ import annotations

import torch

from sparsec import knobs
from sparsec.errors import InputError
from sparsec.formats.base import SparseFormat
from sparsec.formats.hybrid import Hybrid, split
from sparsec.runtime.module import SparseModule
from sparsec.targets.cpu.sparse_linear import SparseLinear

#: the activations of the kernels' epilogue, as torch computes them (gelu: the erf form, as the kernels)
TORCH_ACTIVATIONS = {
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
}


class HybridLinear(SparseModule):
    """``act(x @ W^T + bias) + residual`` with W split into BSR blocks and a CSR remainder (float32, CPU)."""

    def __init__(
        self,
        name: str,
        fmt: SparseFormat,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        activation: str | None,
        has_residual: bool,
        threads: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(fmt, Hybrid):
            raise InputError(f"{name}: HybridLinear runs the hybrid format, not {fmt.label!r}")
        if weight.dim() != 2:
            raise InputError(f"{name}: weight must be 2-d [out, in], got shape {tuple(weight.shape)}")
        if weight.dtype != torch.float32:
            raise NotImplementedError(f"{name}: the hybrid format runs float32 weights only, got {weight.dtype}")
        if activation is not None and activation not in TORCH_ACTIVATIONS:
            raise NotImplementedError(f"{name}: activation {activation!r} is not one of {sorted(TORCH_ACTIVATIONS)}")
        self.layer_name, self.fmt = name, fmt
        self.out_features, self.in_features = weight.shape
        self.activation, self.has_residual = activation, has_residual
        self.dtype = torch.float32
        blk, rest = split(weight.detach().to("cpu", torch.float32), fmt.b, float(knobs.get("hybrid_block_fill")))
        # the first part takes the bias, and the residual when no activation comes after the sum
        first_residual = has_residual and activation is None
        parts = []
        if bool((blk != 0).any()) or not bool((rest != 0).any()):
            parts.append(SparseLinear(f"{name}.blocks", fmt.block_format, blk, bias, None, first_residual, threads))
        if bool((rest != 0).any()):
            first = not parts
            parts.append(SparseLinear(f"{name}.rest", fmt.rest_format, rest, bias if first else None, None,
                                      first_residual if first else True, threads))
        #: the block part (BSR) and/or the remainder (CSR), run in this order, each adding the previous output
        self.parts = torch.nn.ModuleList(parts)
        self.stored = sum(p.stored for p in parts)
        self.nbytes = sum(p.nbytes for p in parts)

    def kernels(self, n: int) -> list:
        """Both parts' kernels for ``n`` rows."""
        return [k for p in self.parts for k in p.kernels(n)]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The layer on ``x`` [..., in]; ``residual`` [..., out] when the group fused one."""
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, residual)):
            raise NotImplementedError(
                f"{self.layer_name}: gradients through the hybrid format are not implemented; run under "
                "torch.no_grad(), or compile without it (formats=... without 'hybrid')")
        if (residual is not None) != self.has_residual:
            raise InputError(f"{self.layer_name}: this layer was compiled {'with' if self.has_residual else 'without'} "
                             "a residual input")
        fused = residual if self.activation is None else None
        y = self.parts[0].run(x, fused)
        for part in self.parts[1:]:
            y = part.run(x, y)
        if self.activation is not None:
            y = TORCH_ACTIVATIONS[self.activation](y)
            if residual is not None:
                y = y + residual
        return y

    def extra_repr(self) -> str:
        return (f"{self.layer_name}: {self.in_features}->{self.out_features} format={self.fmt.label} "
                f"parts={[p.fmt.label for p in self.parts]} stored={self.stored} activation={self.activation} "
                f"residual={self.has_residual}")
