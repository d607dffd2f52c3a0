"""The format interface: one object per storage scheme, asked by the selector in priority order.

A format says whether it can hold a weight (``accepts``), what that costs (``cost``), how it stores it
(``pack`` / ``unpack``) and how the CPU code generator sees it (``level_map``, an MLIR sparse_tensor
level map). Packing and unpacking follow from the level map, so a format written by a user needs only a
name and a level map (see examples/custom_format.py); everything else has a working default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from sparsec.errors import FormatError
from sparsec.formats import cost as costmodel
from sparsec.formats.facts import WeightFacts
from sparsec.formats.levels import LevelMap, pack_levels, parse_level_map, slot_coords, unpack_levels


def aligned_copy(a: np.ndarray, align: int = 64) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts on an ``align``-byte boundary (AVX-512 loads)."""
    a = np.ascontiguousarray(a)
    raw = np.empty(a.nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    out = raw[off : off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@dataclass
class PackedWeight:
    """A weight in a sparse format: its buffers (in level-map order), and the shapes around them."""

    format: str
    shape: tuple[int, int]  # the logical [out, in]
    padded_shape: tuple[int, int]  # what the kernel sees (multiples of the format's block)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def stored(self) -> int:
        """Number of stored values (nonzeros plus explicit zeros the format keeps)."""
        return int(self.buffers["values"].size)

    @property
    def nbytes(self) -> int:
        """Bytes of every buffer: values, indices and metadata."""
        return int(sum(b.nbytes for b in self.buffers.values()))


class SparseFormat:
    """Base of every format. Subclasses set ``name`` and ``level_map`` and may refine the rest."""

    name: str = ""
    #: lower is asked first; ties keep registration order
    priority: int = 100
    #: MLIR sparse_tensor level map, e.g. "(i, j) -> (i : dense, j : compressed)"; None for dense
    level_map: str | None = None
    #: the kernel family's rate in the cost model (a Machine attribute name)
    rate_name: str = "sparse_flops"
    #: the kernel family of a format that brings its own kernels and buffers (``"bitmap"``: the CPU target
    #: runs it as CompactLinear, sparsec/targets/cpu/target.py); None: kernels from the level map
    own_kernels: str | None = None
    #: whether gradients flow through the format's layers (False: the selector keeps it off weights that
    #: require grad)
    trains: bool = True

    @property
    def label(self) -> str:
        """Name plus parameters, e.g. ``bsr16x16``; unique within the registry."""
        return self.name

    @cached_property
    def lmap(self) -> LevelMap:
        """The parsed level map."""
        if self.level_map is None:
            raise FormatError(f"format {self.label!r} has no level map")
        return parse_level_map(self.level_map)

    # --- what the selector asks -------------------------------------------------------------------
    def accepts(self, facts: WeightFacts) -> str | None:
        """None when this format can hold the weight, else the reason it cannot."""
        return None

    def accepts_layer(self, dtype: torch.dtype, kind: str, target: str) -> str | None:
        """None when this format's kernels run a layer of this dtype, match kind (``linear``, ``left``,
        ``conv2d``, ``diag``) and target (``cpu``, ``gpu``, ``interpret``), else the reason they do not."""
        return None

    def stored_values(self, facts: WeightFacts) -> int:
        """How many values the format stores for this weight (nnz for CSR; whole blocks for BSR)."""
        return facts.nnz

    def index_bytes(self, facts: WeightFacts) -> int:
        """Bytes of indices and metadata (4-byte coordinates and positions by default)."""
        return 4 * self.stored_values(facts) + 4 * (facts.shape[0] + 1)

    def sparse_bytes(self, facts: WeightFacts) -> int:
        """Bytes the packed weight occupies: values + indices + metadata."""
        return 4 * self.stored_values(facts) + self.index_bytes(facts)

    def cost(self, facts: WeightFacts, n: int, machine: costmodel.Machine = costmodel.DEFAULT_MACHINE) -> float:
        """Predicted seconds for ``Y = X W^T`` with ``n`` rows of X (see sparsec.formats.cost)."""
        out_f, in_f = facts.shape
        rate = getattr(machine, self.rate_name)
        if n == 1 and self.rate_name == "sparse_flops":  # N = 1 runs the gather (dot) form
            rate = machine.sparse_dot_flops
        return costmodel.sparse_time(
            self.stored_values(facts), self.index_bytes(facts), out_f, in_f, n, rate, machine
        )

    # --- storage ------------------------------------------------------------------------------------
    def pack(self, weight: torch.Tensor) -> PackedWeight:
        """Store a 2-d [out, in] weight; zero-pads to the level map's block first."""
        if weight.dim() != 2:
            raise FormatError(f"format {self.label!r} packs 2-d weights, got shape {tuple(weight.shape)}")
        w = weight.detach().to("cpu", torch.float32).numpy()
        padded = self.lmap.padded_shape(w.shape)
        if padded != w.shape:
            w = np.pad(w, ((0, padded[0] - w.shape[0]), (0, padded[1] - w.shape[1])))
        bufs = pack_levels(w, self.lmap)
        return PackedWeight(
            self.label, tuple(weight.shape), padded, {k: aligned_copy(v) for k, v in bufs.items()}
        )

    def unpack(self, packed: PackedWeight) -> torch.Tensor:
        """The dense [out, in] weight the packed buffers stand for (the tests' oracle)."""
        dense = unpack_levels(packed.buffers, self.lmap, packed.padded_shape)
        return torch.from_numpy(dense[: packed.shape[0], : packed.shape[1]].copy())

    def slot_coords(self, packed: PackedWeight) -> tuple[np.ndarray, np.ndarray]:
        """The (row, column) of every value slot of ``packed``, in storage order, read off its buffers (no
        packing, O(stored values)); a padding slot's position lies outside ``packed.shape``. Training's slot
        maps (sparsec/targets/cpu/sparse_grad.py) gather the parameter from these positions."""
        return slot_coords(packed.buffers, self.lmap, packed.padded_shape)

    def __repr__(self) -> str:
        return f"<format {self.label} priority={self.priority} map={self.level_map!r}>"
