"""SparseConv2d: a 2-d convolution (groups 1) with a sparse filter, as im2col + the sparse matmul kernel.

The filter [Cout, Cin, kh, kw] is packed as W [Cout, Cin*kh*kw]. For a block of output positions the
input patches are gathered straight into the kernel's X^T layout [Cin*kh*kw, positions] (one strided
copy: ``Tensor.unfold`` views, permuted), the kernel computes W X^T with bias, activation and residual
fused, and the [Cout, positions] result is written into the NCHW output. Why im2col and not a
convolution kernel with a sparse filter: it reuses the one code generator and its formats, selection
and epilogue unchanged, and it measured faster (docs/models.md, examples/conv_lowering.py).

Positions are processed in blocks of at most knob ``conv_block`` (kernels are specialized to the block size,
whose compile time grows with it, and a [Cin*kh*kw, block] patch matrix that stays in cache ran up to 2x
faster than blocks of 1024-4096 on the project machine): whole images when an image's positions fit in
a block (several images per block), otherwise bands of output rows of one image. Any input layout
works (channels-last, non-contiguous): the patch gather reads through strides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsec import knobs
from sparsec.errors import InputError
from sparsec.targets.cpu.sparse_linear import SparseLinear


def output_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Output length of a convolution along one spatial dimension."""
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def blocks(batch: int, oh: int, ow: int, tile: int | None = None):
    """(b0, b1, r0, r1) blocks of output positions: images [b0, b1), output rows [r0, r1)."""
    tile = tile or knobs.get("conv_block")
    per_image = oh * ow
    if per_image <= tile:
        group = max(1, tile // max(per_image, 1))
        for b0 in range(0, batch, group):
            yield b0, min(batch, b0 + group), 0, oh
        return
    band = max(1, tile // max(ow, 1))
    for b in range(batch):
        for r0 in range(0, oh, band):
            yield b, b + 1, r0, min(oh, r0 + band)


class SparseConv2d(SparseLinear):
    """``act(conv2d(x, W) + bias) + residual`` with W sparse; x [B, Cin, H, W] or [Cin, H, W]."""

    def __init__(self, name: str, fmt, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None,
                 has_residual: bool, threads: int = 1, *, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 out_hw: tuple[int, int] | None = None) -> None:
        super().__init__(name, fmt, weight, bias, activation, has_residual, threads)
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        self.in_channels = self.in_features // (self.kernel_size[0] * self.kernel_size[1])
        self.out_hw = tuple(out_hw) if out_hw else None  # the example's output size (to precompile)

    def kernels(self, n: int):
        """The kernels of the blocks that cover ``n`` output positions of the example's image size."""
        if n <= knobs.get("conv_block") or not self.out_hw:
            return super().kernels(n)
        oh, ow = self.out_hw
        sizes = sorted({(b1 - b0) * (r1 - r0) * ow for b0, b1, r0, r1 in blocks(max(1, n // (oh * ow)), oh, ow)})
        return [k for s in sizes for k in SparseLinear.kernels(self, s)]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Convolve ``x``; ``residual`` has the output's shape."""
        unbatched = isinstance(x, torch.Tensor) and x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
            residual = residual.unsqueeze(0) if residual is not None else None
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{self.layer_name}: input {shape}, expected [B, {self.in_channels}, H, W]")
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise InputError(f"{self.layer_name}: input {x.dtype} on {x.device}, the CPU kernel takes float32 CPU")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        batch, _, height, width = x.shape
        oh, ow = output_size(height, kh, sh, ph, dh), output_size(width, kw, sw, pw, dw)
        if oh <= 0 or ow <= 0:
            raise InputError(f"{self.layer_name}: input {tuple(x.shape)} is smaller than the {kh}x{kw} kernel")
        xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        m = self.out_features
        out = torch.empty(batch, m, oh, ow)
        for b0, b1, r0, r1 in blocks(batch, oh, ow):
            cols = self._patches(xp, b0, b1, r0, r1, ow)
            n = cols.shape[1]
            r = None
            if residual is not None:
                r = residual[b0:b1, :, r0:r1, :].permute(1, 0, 2, 3).reshape(m, n).t()
            y = SparseLinear.forward(self, cols.t(), r)  # [n, M], a view of the kernel's [M, n] buffer
            out[b0:b1, :, r0:r1, :] = y.t().reshape(m, b1 - b0, r1 - r0, ow).permute(1, 0, 2, 3)
        return out.squeeze(0) if unbatched else out

    def _patches(self, xp: torch.Tensor, b0: int, b1: int, r0: int, r1: int, ow: int) -> torch.Tensor:
        """X^T [Cin*kh*kw, (b1-b0)*(r1-r0)*ow] of the output positions in the block (one copy)."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        kh_span, kw_span = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        rows = xp[b0:b1, :, r0 * sh : (r1 - 1) * sh + kh_span, :]
        p = rows.unfold(2, kh_span, sh).unfold(3, kw_span, sw)[:, :, :, :ow]  # [b, C, r, ow, kh', kw']
        if dh > 1 or dw > 1:
            p = p[..., ::dh, ::dw]
        return p.permute(1, 4, 5, 0, 2, 3).reshape(self.in_features, -1)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()} kernel={self.kernel_size} stride={self.stride} "
                f"padding={self.padding} dilation={self.dilation}")
