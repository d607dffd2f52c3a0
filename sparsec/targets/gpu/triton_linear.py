"""TritonLinear: the GPU (and Triton-interpreter) counterpart of SparseLinear.

It packs the weight with the same format object as the CPU path (one packer, sparsec.formats.levels),
converts the level buffers into the layout contract of sparsec.codegen.triton (docs/triton.md) on the
model's device and dtype, and calls the format family's kernel with the epilogue fused.
"""

from __future__ import annotations

import numpy as np
import torch

from sparsec.errors import InputError, UnsupportedError
from sparsec.formats.base import SparseFormat
from sparsec.runtime.module import SparseModule


def triton_kernel(fmt: SparseFormat) -> tuple[str, tuple[int, int]] | None:
    """The Triton kernel family that runs ``fmt`` and its parameters, read off the format's level map
    (its capability, not its name), or None when no Triton kernel stores weights that way (COO, CSC, ...):

    - ``(i : dense, j : compressed)`` -> ``("csr", ())``;
    - ``(i floordiv bh : dense, j floordiv bw : compressed, i mod bh : dense, j mod bw : dense)`` ->
      ``("bsr", (bh, bw))``;
    - ``(i : dense, j floordiv m : dense, j mod m : structured[n, m])`` -> ``("nm", (n, m))``.
    """
    if fmt.level_map is None or fmt.own_kernels is not None:
        return None  # dense; or a format packing buffers of its own (bitmap), not the level map's
    sig = tuple((lv.dim, lv.op, lv.k if lv.op else 0, lv.kind, lv.props) for lv in fmt.lmap.levels)
    if sig == ((0, None, 0, "dense", ""), (1, None, 0, "compressed", "")):
        return "csr", ()
    bh, bw = fmt.lmap.block
    if sig == ((0, "floordiv", bh, "dense", ""), (1, "floordiv", bw, "compressed", ""),
               (0, "mod", bh, "dense", ""), (1, "mod", bw, "dense", "")):
        return "bsr", (bh, bw)
    last = fmt.lmap.levels[-1]
    if len(sig) == 3 and last.kind == "structured" and sig == (
            (0, None, 0, "dense", ""), (1, "floordiv", last.m, "dense", ""), (1, "mod", last.m, "structured", "")):
        return "nm", (last.n, last.m)
    return None


class TritonLinear(SparseModule):
    """``act(x @ W^T + bias) + residual`` with W in CSR, BSR or N:M, run by a Triton kernel."""

    def __init__(
        self,
        name: str,
        fmt: SparseFormat,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        activation: str | None,
        has_residual: bool,
        interpret: bool,
    ) -> None:
        super().__init__()
        kernel = triton_kernel(fmt)
        if kernel is None:
            raise UnsupportedError(f"{name}: format {fmt.label!r} has no Triton kernel (GPU formats: csr, bsr, nm)")
        self.layer_name, self.fmt = name, fmt
        #: the kernel family and its parameters: () for csr, the block (bh, bw) for bsr, (n, m) for nm
        self.family, self.params = kernel
        self.out_features, self.in_features = weight.shape
        self.activation, self.has_residual, self.interpret = activation, has_residual, interpret
        self.device, self.dtype = weight.device, weight.dtype
        packed = fmt.pack(weight.detach())
        self.stored, self.nbytes = packed.stored, packed.nbytes
        self._buffers_for(packed.buffers)
        self.bias = None if bias is None else bias.detach().to(self.dtype)

    def _t(self, a: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=self.device, dtype=dtype or self.dtype)

    def _buffers_for(self, bufs: dict[str, np.ndarray]) -> None:
        """Level buffers -> the kernel's layout contract (trimming the packer's extra empty blocks)."""
        out_f, in_f = self.out_features, self.in_features
        if self.family == "csr":
            self.indptr = self._t(bufs["pos1"], torch.int32)
            self.indices = self._t(bufs["crd1"], torch.int32)
            self.values = self._t(bufs["values"])
        elif self.family == "bsr":
            bh, bw = self.params
            block_rows = -(-out_f // bh)
            self.indptr = self._t(bufs["pos1"][: block_rows + 1], torch.int32)
            nblocks = int(bufs["pos1"][block_rows])
            self.indices = self._t(bufs["crd1"][:nblocks], torch.int32)
            self.values = self._t(bufs["values"].reshape(-1, bh, bw)[:nblocks])
        else:
            n, m = self.params
            kept = -(-in_f // m) * n
            crd = [k for k in bufs if k.startswith("crd")][0]
            self.indices = self._t(bufs[crd].reshape(out_f, -1)[:, :kept], torch.uint8)
            self.values = self._t(bufs["values"].reshape(out_f, -1)[:, :kept])

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Run the fused layer on ``x`` [..., in]."""
        from sparsec.codegen import triton as tk

        if x.shape[-1] != self.in_features:
            raise InputError(f"{self.layer_name}: input shape {tuple(x.shape)}, expected [..., {self.in_features}]")
        if x.device != self.device:
            raise InputError(f"{self.layer_name}: input on {x.device}, the layer's weights are on {self.device}")
        x = x.contiguous()
        residual = residual.contiguous() if residual is not None else None
        common = dict(bias=self.bias, activation=self.activation, residual=residual, interpret=self.interpret)
        if self.family == "csr":
            return tk.csr_linear(x, self.indptr, self.indices, self.values, self.out_features, **common)
        if self.family == "bsr":
            return tk.bsr_linear(x, self.indptr, self.indices, self.values, self.params,
                                 self.out_features, **common)
        return tk.nm_linear(x, self.values, self.indices, *self.params, self.in_features, **common)

    def variant(self) -> dict:
        """This layer's kernel variant (the ``compile_for_target`` keywords besides family and dtype)."""
        variant = {"activation": self.activation, "bias": self.bias is not None, "residual": self.has_residual}
        if self.family == "bsr":
            variant["block"] = self.params
        if self.family == "nm":
            variant["pattern"] = self.params
        return variant

    def extra_repr(self) -> str:
        return (f"{self.layer_name}: {self.in_features}->{self.out_features} format={self.fmt.label} "
                f"kernel=triton/{self.family} interpret={self.interpret}")
