"""Dense: no sparse kernel; the layer runs in torch. The selector's baseline and fallback."""

from __future__ import annotations

import torch

from sparsec.formats import cost as costmodel
from sparsec.formats.base import PackedWeight, SparseFormat
from sparsec.formats.facts import WeightFacts


class Dense(SparseFormat):
    """Runs ``F.linear`` as torch does; always accepts."""

    name = "dense"
    priority = 0

    def stored_values(self, facts: WeightFacts) -> int:
        """Every entry."""
        return facts.numel

    def index_bytes(self, facts: WeightFacts) -> int:
        """No indices."""
        return 0

    def cost(self, facts: WeightFacts, n: int, machine: costmodel.Machine = costmodel.DEFAULT_MACHINE) -> float:
        """torch's dense linear (see sparsec.formats.cost.dense_time)."""
        return costmodel.dense_time(facts.shape[0], facts.shape[1], n, machine)

    def pack(self, weight: torch.Tensor) -> PackedWeight:
        """Dense weights stay torch tensors; the packed form holds a float32 numpy copy."""
        w = weight.detach().to("cpu", torch.float32).contiguous().numpy()
        return PackedWeight(self.label, tuple(w.shape), tuple(w.shape), {"values": w})

    def unpack(self, packed: PackedWeight) -> torch.Tensor:
        """The stored matrix."""
        return torch.from_numpy(packed.buffers["values"].copy())
