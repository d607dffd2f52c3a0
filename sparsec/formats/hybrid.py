"""Hybrid: the dense-ish b x b blocks of a weight as BSR, the scattered remainder as CSR.

A weight pruned in blocks keeps a few stray nonzeros (outliers, a block that was only partly pruned):
pure BSR then stores whole blocks for every stray value (BSR's ``accepts`` refuses past 2x padding) and
pure CSR loses the blocks' vector reuse. The hybrid format splits the weight once: every b x b block whose
fill is at least knob ``hybrid_block_fill`` goes to the block part (run by the hand-scheduled vector BSR
kernel, sparsec/codegen/mlir/emit_bsrvec.py), every other nonzero to the remainder (run by the CSR kernel,
which adds the block part's output as its fused residual). The CPU target runs it as
sparsec.targets.cpu.hybrid_linear.HybridLinear; no kernel of its own is written for it.

The selector prices it as the block part's BSR prediction plus the remainder's CSR prediction, so it is
chosen only where that sum beats dense, CSR and BSR (and the usual guards and close-call measurements
apply, sparsec/passes/select.py). It holds float32 Linear weights on the CPU only, and has no training
path (HybridLinear raises NotImplementedError when a gradient is required).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparsec import knobs
from sparsec.errors import FormatError
from sparsec.formats import cost as costmodel
from sparsec.formats.base import PackedWeight, SparseFormat
from sparsec.formats.bsr import BSR
from sparsec.formats.csr import CSR
from sparsec.formats.facts import HYBRID_BLOCKS, WeightFacts, block_counts


@dataclass
class PackedHybrid(PackedWeight):
    """A hybrid weight: ``block`` (the BSR part) and ``rest`` (the CSR part), both of the full logical shape.
    ``buffers`` holds both parts' buffers, prefixed ``block_`` and ``rest_``."""

    block: PackedWeight | None = None
    rest: PackedWeight | None = None
    fill: float = 0.5

    @property
    def stored(self) -> int:
        """Values of both parts (the block part's explicit zeros included)."""
        return self.block.stored + self.rest.stored


def split(weight: torch.Tensor, b: int, fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] as (block part, remainder): the b x b blocks at least ``fill`` full, and the rest.
    The two sum to ``weight`` exactly (each entry lies in one part)."""
    w = weight.detach()
    nz = (w != 0).cpu().numpy()
    full = block_counts(nz, b) >= fill * b * b
    mask = np.repeat(np.repeat(full, b, axis=0), b, axis=1)[: w.shape[0], : w.shape[1]]
    m = torch.from_numpy(np.ascontiguousarray(mask)).to(w.device)
    return torch.where(m, w, torch.zeros((), dtype=w.dtype)), torch.where(m, torch.zeros((), dtype=w.dtype), w)


class Hybrid(SparseFormat):
    """Dense-ish b x b blocks as BSR plus the remaining nonzeros as CSR (float32 Linear layers, CPU)."""

    name = "hybrid"
    priority = 25
    own_kernels = "hybrid"
    #: no training path: the selector skips the format for a weight that requires grad
    trains = False

    def __init__(self, b: int = 16) -> None:
        if b not in HYBRID_BLOCKS:
            raise ValueError(f"hybrid blocks are one of {HYBRID_BLOCKS}, got {b}")
        self.b = b
        self.block_format = BSR(b)
        self.rest_format = CSR()
        #: the block part's map (the larger share of the work); the remainder is CSR's
        self.level_map = self.block_format.level_map

    @property
    def label(self) -> str:
        """e.g. ``hybrid16x16``."""
        return f"hybrid{self.b}x{self.b}"

    def accepts_layer(self, dtype: torch.dtype, kind: str, target: str) -> str | None:
        """float32 Linear layers on the CPU (the parts' natural-layout f32 kernels)."""
        if target != "cpu":
            return f"{self.label} runs on the CPU target only"
        if kind != "linear":
            return f"{self.label} runs Linear-shaped weights only (this is {kind})"
        if dtype != torch.float32:
            return f"{self.label} runs float32 layers only (this is {dtype})"
        return None

    def _split(self, facts: WeightFacts) -> tuple[int, int] | None:
        """(full blocks, nonzeros in them) at the current fill threshold; None if the facts lack it."""
        got = getattr(facts, "hybrid_blocks", {}).get(self.b)
        if got is None or got[0] != float(knobs.get("hybrid_block_fill")):
            return None
        return got[1], got[2]

    def accepts(self, facts: WeightFacts) -> str | None:
        """Only when full blocks hold a real share of the nonzeros and something is left for CSR."""
        got = self._split(facts)
        if got is None:
            return f"{self.label}: the weight's block fill was not measured at this hybrid_block_fill"
        blocks, inside = got
        if blocks == 0:
            return f"no {self.b}x{self.b} block is {knobs.get('hybrid_block_fill'):.2f} full"
        if inside < knobs.get("hybrid_min_block_share") * facts.nnz:
            return f"full {self.b}x{self.b} blocks hold only {inside / max(facts.nnz, 1):.0%} of the nonzeros"
        if inside == facts.nnz:
            return f"every nonzero lies in a full {self.b}x{self.b} block (plain bsr{self.b}x{self.b} holds it)"
        return None

    def stored_values(self, facts: WeightFacts) -> int:
        """Whole full blocks plus the remainder's nonzeros."""
        blocks, inside = self._split(facts) or (0, 0)
        return blocks * self.b * self.b + facts.nnz - inside

    def index_bytes(self, facts: WeightFacts) -> int:
        """A column per block and per remaining nonzero, positions of both parts."""
        blocks, inside = self._split(facts) or (0, 0)
        return 4 * (blocks + facts.nnz - inside) + 4 * (facts.shape[0] // self.b + facts.shape[0] + 2)

    def cost(self, facts: WeightFacts, n: int, machine: costmodel.Machine = costmodel.DEFAULT_MACHINE) -> float:
        """The block part's BSR prediction plus the remainder's CSR prediction (two kernel calls)."""
        blocks, inside = self._split(facts) or (0, 0)
        out_f, in_f = facts.shape
        stored = blocks * self.b * self.b
        rate = machine.block_flops if n != 1 else getattr(machine, f"block_dot_flops_{self.b}")
        block = costmodel.sparse_time(stored, 4 * blocks + 4 * (out_f // self.b + 1), out_f, in_f, n, rate, machine)
        # The CSR kernel's per-row work (accumulators, epilogue, the residual's read and the output's write)
        # is in its calibrated rate at BERT-like densities; a remainder of a few nonzeros per row still pays
        # it: 1-thread CPU time, 3072x768 at N = 64, a 1.35%-dense remainder ran at a third of the full 90%
        # layer's rate (0.44 vs 1.07 ms for 7x fewer nonzeros), i.e. ~35 nonzeros' work per row more.
        rest_nnz = facts.nnz - inside + int(knobs.get("hybrid_rest_row_cost") * out_f)
        rest_rate = machine.sparse_flops if n != 1 else machine.sparse_dot_flops
        rest = costmodel.sparse_time(rest_nnz, 4 * rest_nnz + 4 * (out_f + 1), out_f, in_f, n, rest_rate, machine)
        return block + rest

    def pack(self, weight: torch.Tensor) -> PackedHybrid:
        """Split (``split``) and pack each part in its own format."""
        if weight.dim() != 2:
            raise FormatError(f"format {self.label!r} packs 2-d weights, got shape {tuple(weight.shape)}")
        fill = float(knobs.get("hybrid_block_fill"))
        blk, rest = split(weight.detach().to("cpu", torch.float32), self.b, fill)
        pb, pr = self.block_format.pack(blk), self.rest_format.pack(rest)
        bufs = {**{f"block_{k}": v for k, v in pb.buffers.items()}, **{f"rest_{k}": v for k, v in pr.buffers.items()}}
        return PackedHybrid(self.label, tuple(weight.shape), tuple(weight.shape), bufs, pb, pr, fill)

    def unpack(self, packed: PackedWeight) -> torch.Tensor:
        """The sum of both parts' dense weights."""
        if not isinstance(packed, PackedHybrid):
            raise FormatError(f"{self.label}: not a hybrid packed weight ({type(packed).__name__})")
        return self.block_format.unpack(packed.block) + self.rest_format.unpack(packed.rest)

    def slot_coords(self, packed: PackedWeight) -> tuple[np.ndarray, np.ndarray]:
        """Training's slot maps: the hybrid format has no training path (HybridLinear), so no slot map."""
        raise NotImplementedError(f"{self.label}: no slot map (training through the hybrid format is not implemented)")


#: the registered hybrid: 16x16 blocks. Measured (benchmarks/bench_hybrid.py, 1-thread CPU time, N = 64), the
#: 8x8 block part ran at about 0.7x the 16x16 one on 768x3072 (bsr8x8 on 16x16-structured weights: 3.3-3.8x
#: dense vs 4.4-5.0x), so ``Hybrid(8)`` is left for callers who construct it.
DEFAULT_HYBRIDS = (Hybrid(16),)
