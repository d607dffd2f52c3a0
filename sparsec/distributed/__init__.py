"""sparsec.distributed: sparse gradient communication as torch.distributed DDP comm hooks.

``MaskedState`` + ``masked_hook``: lossless, sends only the positions a shared sparsity mask keeps.
``TopKState`` + ``topk_hook``: DGC-style top-k with error feedback, for dense layers.
``average_growth_gradients``: keeps RigL's mask updates identical across ranks. See docs/distributed.md.
"""

from sparsec.distributed.masked import MaskedState, masked_hook
from sparsec.distributed.rigl import average_growth_gradients
from sparsec.distributed.topk import TopKState, topk_hook

__all__ = ["MaskedState", "masked_hook", "TopKState", "topk_hook", "average_growth_gradients"]
