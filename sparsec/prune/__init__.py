"""sparsec.prune: sparsification toolkit (prepare -> step -> finalize), masks as torch parametrizations.

One-shot: MagnitudePruner, NMPruner, BlockPruner, ChannelPruner; from calibration data: WandaPruner /
wanda(), SparseGPTPruner / sparsegpt(). Gradual: GradualPruner(any of those, or
MovementPruner). Lottery tickets: LotteryTicket. Sparse training: StaticSparsifier, RigL, SET.
``finalize(model)`` bakes the masks into plain weights for ``sparse_compile``. See docs/prune.md.
"""

from .base import BaseSparsifier, ScoreSparsifier, select_modules
from .block import BlockPruner, block_mask, block_scores
from .channel import ChannelPruner
from .channel_graph import ChannelGroup, channel_groups
from .compiled import CompiledTraining, plain_view
from .distribution import layer_densities, random_mask
from .finalize import finalize
from .gradual import GradualPruner
from .lottery import LotteryTicket
from .magnitude import MagnitudePruner, magnitude_masks
from .masks import Mask, attach_mask, get_mask, iter_masks, original, sparsity_report, zero_optimizer_state
from .movement import MovementPruner
from .nm import NMPruner, is_nm_sparse, nm_mask
from .rigl import SET, RigL
from .schedule import CubicSchedule, cosine_update_fraction, cubic_sparsity
from .sparsegpt import SparseGPTPruner, sparsegpt, sparsegpt_layer
from .static import StaticSparsifier
from .wanda import WandaPruner, wanda, wanda_scores

__all__ = [
    "CompiledTraining",
    "plain_view",
    "BaseSparsifier", "BlockPruner", "ChannelGroup", "ChannelPruner", "CubicSchedule", "GradualPruner",
    "LotteryTicket", "MagnitudePruner", "Mask", "MovementPruner", "NMPruner", "RigL", "SET",
    "ScoreSparsifier", "StaticSparsifier", "attach_mask", "block_mask", "block_scores", "channel_groups",
    "cosine_update_fraction", "cubic_sparsity", "finalize", "get_mask", "is_nm_sparse", "iter_masks",
    "layer_densities", "magnitude_masks", "nm_mask", "original", "random_mask", "select_modules",
    "sparsity_report", "zero_optimizer_state", "SparseGPTPruner", "WandaPruner", "sparsegpt",
    "sparsegpt_layer", "wanda", "wanda_scores",
]
