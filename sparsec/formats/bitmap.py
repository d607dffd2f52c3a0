"""Compact 16-bit formats for memory-bound (small-N) layers: a bitmap plus packed values, and 2:4 with a nibble.

Bytes per weight at density d (bf16/fp16 values):

======================  ==========================  =========  =========  =========
format                  bytes per weight            d = 0.3    d = 0.5    d = 0.7
======================  ==========================  =========  =========  =========
dense                   2                           2          2          2
csr (16-bit indices)    4 d                         1.2        2.0        2.8
bitmap                  1/8 + 2 d                   0.73       1.13       1.53
2:4, nibble per group   (4 + 1/2) / 4 = 1.125       -          1.13       -
======================  ==========================  =========  =========  =========

(plus 4 bytes per row of value offsets for the bitmap.) The bitmap needs no index per nonzero, so it
beats dense for any density below ~0.94 on bytes, and CSR above d = 1/16. A 2:4 weight stores exactly two
values per group of four (explicit zeros where a group holds fewer) and the group's 4-bit mask, so the
values sit at fixed offsets; 2-bit indices would take the same 4 bits per group.

Both formats hold bf16/fp16 weights of Linear layers on x86 CPUs and bring their own runtime module
(``own_kernels = "bitmap"``: the CPU target runs them as sparsec.targets.cpu.compact_linear.CompactLinear,
kernels in sparsec/codegen/mlir/emit_bitmap.py); the selector prices them with their calibrated streaming rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparsec.errors import FormatError
from sparsec.formats import cost as costmodel
from sparsec.formats.base import PackedWeight, SparseFormat, aligned_copy
from sparsec.formats.facts import WeightFacts

#: weights per mask byte; the kernel's step
STEP = 8
#: bytes the kernel may read past the last packed value (a 16-byte load at the last offset)
VALUE_PAD = 16
_DTYPES = {torch.bfloat16: "bf16", torch.float16: "f16"}
#: what pack stores (float32 too: the format holds any float weight exactly; only 16-bit ones have kernels)
_STORED = {**_DTYPES, torch.float32: "f32"}
_TORCH = {v: k for k, v in _STORED.items()}
_BITS = {2: torch.int16, 4: torch.int32}


@dataclass
class Packed16(PackedWeight):
    """A bitmap / compact 2:4 weight: ``mask`` (one bit per weight, little-endian within each byte, rows
    of ``cols / 8`` bytes), ``values`` (the stored values' 16-bit patterns in row order, then ``VALUE_PAD``
    zero bytes), ``vstart`` (bitmap only: each row's first value, int32) and the value ``dtype``
    (``bf16``, ``f16``; ``f32`` for weights packed in float32, which no kernel runs)."""

    dtype: str = "bf16"

    @property
    def stored(self) -> int:
        """Stored values (nonzeros, and a 2:4 group's explicit zeros), padding excluded."""
        vals = self.buffers["values"]
        return int(vals.size - VALUE_PAD // vals.itemsize)


def value_dtype(dtype: torch.dtype) -> str:
    """The kernel spelling of a 16-bit dtype; FormatError for anything else."""
    if dtype not in _DTYPES:
        raise FormatError(f"the bitmap formats store bfloat16/float16 values, not {dtype}")
    return _DTYPES[dtype]


class Bitmap(SparseFormat):
    """One bit per weight (set: stored) plus the packed nonzero values of each row; for 30-70% density."""

    name = "bitmap"
    priority = 12
    #: the logical structure (a compressed row); the buffers are the bitmap's, not MLIR's
    level_map = "(i, j) -> (i : dense, j : compressed)"
    #: the calibrated Machine rates: packed bytes per second at N = 1 and N = 8
    rate_fields = ("bitmap_bw", "bitmap_bw8")
    fixed = False

    #: its kernel family: the CPU target's CompactLinear (sparsec/targets/cpu/target.py)
    own_kernels = "bitmap"

    def accepts_layer(self, dtype: torch.dtype, kind: str, target: str) -> str | None:
        """Only bf16/fp16 Linear layers on an x86 CPU with SSSE3/F16C/AVX2."""
        from sparsec.codegen.mlir.emit_bitmap import available

        if target != "cpu":
            return f"{self.label} has CPU kernels only"
        if kind != "linear":
            return f"{self.label} runs Linear-shaped weights only (this is {kind})"
        if dtype not in _DTYPES:
            return f"{self.label} stores bfloat16/float16 weights (this layer is {dtype})"
        if not available():
            return f"{self.label} kernels need x86-64 with SSSE3, AVX2, FMA, F16C and POPCNT"
        return None

    def padded_cols(self, cols: int) -> int:
        """Columns rounded up to a whole mask byte."""
        return -(-cols // STEP) * STEP

    def stored_values(self, facts: WeightFacts) -> int:
        """The nonzeros."""
        return facts.nnz

    def index_bytes(self, facts: WeightFacts) -> int:
        """The bitmap (a bit per weight) and each row's value offset."""
        rows, cols = facts.shape
        return rows * self.padded_cols(cols) // 8 + 4 * rows

    def sparse_bytes(self, facts: WeightFacts) -> int:
        """2 bytes per stored value, plus the bitmap and offsets."""
        return 2 * self.stored_values(facts) + self.index_bytes(facts)

    def cost(self, facts: WeightFacts, n: int, machine: costmodel.Machine = costmodel.DEFAULT_MACHINE) -> float:
        """Streaming the packed bytes at the calibrated rate, interpolated between N = 1 and N = 8 (the
        kernel runs N > 8 in chunks of 8, each streaming the weight again)."""
        bw1, bw8 = (getattr(machine, f) for f in self.rate_fields)
        per_byte = 0.0
        left = n
        while left > 0:
            k = min(left, 8)
            per_byte += 1 / bw1 + (1 / bw8 - 1 / bw1) * (k - 1) / 7
            left -= k
        out_f, in_f = facts.shape
        activation_bytes = 2.0 * n * (out_f + 3 * in_f)  # read x, widen it to f32, write y
        return (self.sparse_bytes(facts) * per_byte + activation_bytes / machine.bandwidth
                + machine.call_overhead * machine.threads)

    # --- storage ----------------------------------------------------------------------------------
    def _mask(self, nz: np.ndarray) -> np.ndarray:
        rows, cols = nz.shape
        return np.packbits(nz.reshape(rows, cols // STEP, STEP), axis=2, bitorder="little").reshape(rows, -1)

    def _stored_positions(self, w: torch.Tensor) -> np.ndarray:
        """Which positions the format stores (the nonzeros)."""
        return (w != 0).numpy()

    def pack(self, weight: torch.Tensor) -> Packed16:
        """Store a 2-d [out, in] weight in its dtype (bf16/fp16 for the kernels; float32 is held exactly too,
        other dtypes as float32), columns zero-padded to a multiple of 8."""
        if weight.dim() != 2:
            raise FormatError(f"format {self.label!r} packs 2-d weights, got shape {tuple(weight.shape)}")
        if weight.dtype not in _STORED:
            weight = weight.float()
        dt = _STORED[weight.dtype]
        rows, cols = weight.shape
        w = weight.detach().to("cpu")
        cp = self.padded_cols(cols)
        if cp != cols:
            w = torch.nn.functional.pad(w, (0, cp - cols))
        keep = self._stored_positions(w)
        bits = w.contiguous().view(_BITS[w.element_size()]).numpy()
        pad = VALUE_PAD // w.element_size()
        vals = np.zeros(int(keep.sum()) + pad, dtype=bits.dtype)
        vals[: vals.size - pad] = bits[keep]
        bufs = {"mask": self._mask(keep).reshape(-1), "values": vals}
        if not self.fixed:
            vstart = np.zeros(rows, dtype=np.int32)
            np.cumsum(keep.sum(axis=1)[:-1], out=vstart[1:])
            bufs["vstart"] = vstart
        return Packed16(self.label, (rows, cols), (rows, cp), {k: aligned_copy(v) for k, v in bufs.items()}, dt)

    def unpack(self, packed: PackedWeight) -> torch.Tensor:
        """The dense float32 [out, in] weight the buffers stand for (the tests' oracle)."""
        rows, cp = packed.padded_shape
        bits = np.unpackbits(packed.buffers["mask"].reshape(rows, cp // STEP), axis=1, bitorder="little")
        keep = bits.reshape(rows, cp).astype(bool)
        vals = torch.from_numpy(packed.buffers["values"][: packed.stored].copy())
        vals = vals.view(_TORCH[getattr(packed, "dtype", "bf16")]).float()
        dense = torch.zeros(rows, cp)
        dense[torch.from_numpy(keep)] = vals
        return dense[: packed.shape[0], : packed.shape[1]].contiguous()


    def slot_coords(self, packed: PackedWeight) -> tuple[np.ndarray, np.ndarray]:
        """Not implemented: these layers run their own module (no training through them), which never asks."""
        raise NotImplementedError(f"format {self.label}: no slot map (layers in it take no gradients)")


class NM24Compact(Bitmap):
    """2:4 along the input with a 4-bit mask per group of four and exactly two 16-bit values per group."""

    name = "nm2:4c"
    priority = 31
    level_map = "(i, j) -> (i : dense, j floordiv 4 : dense, j mod 4 : structured[2, 4])"
    rate_fields = ("nm24c_bw", "nm24c_bw8")
    fixed = True
    #: the N:M pattern, as NM formats spell it
    n, m = 2, 4

    def accepts(self, facts: WeightFacts) -> str | None:
        """Only weights with at most two nonzeros in every group of four inputs."""
        if not facts.nm.get("2:4", False):
            return "not 2:4 in every group of 4 inputs"
        return None

    def stored_values(self, facts: WeightFacts) -> int:
        """Two of every four entries, padding included."""
        return facts.shape[0] * self.padded_cols(facts.shape[1]) // 2

    def index_bytes(self, facts: WeightFacts) -> int:
        """A nibble per group of four."""
        rows, cols = facts.shape
        return rows * self.padded_cols(cols) // 8

    def _stored_positions(self, w: torch.Tensor) -> np.ndarray:
        """The nonzeros, plus the first zero positions of each group that holds fewer than two."""
        rows, cols = w.shape
        nz = (w != 0).numpy().reshape(rows, cols // 4, 4)
        if (nz.sum(axis=2) > 2).any():
            raise FormatError(f"format {self.label!r}: a group of 4 inputs holds more than 2 nonzeros")
        keep = nz.copy()
        need = 2 - nz.sum(axis=2, dtype=np.int8)  # explicit zeros each group stores, in its first free slots
        for k in range(4):
            add = ~keep[..., k] & (need > 0)
            keep[..., k] |= add
            need -= add
        return keep.reshape(rows, cols)
