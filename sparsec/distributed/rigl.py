"""Identical RigL decisions on every rank: average the dense gradients RigL grows by before it updates.

RigL (sparsec.prune.RigL) grows the inactive weights of largest dense gradient. Under DDP each rank
captures its *local* dense gradient (the capture runs inside the mask, before DDP's all-reduce), so ranks
would grow different weights and their masks, weights and optimizer state would drift apart. Averaging
the captured gradients first gives every rank the same input, hence the same mask update, and it is
RigL's own criterion on the global batch. SET grows at random from a seeded generator, so equal seeds
already give equal masks; this call is a no-op for it.
"""

from __future__ import annotations

import torch.distributed as dist

from sparsec.errors import InputError


def average_growth_gradients(sparsifier, process_group: dist.ProcessGroup | None = None) -> int:
    """All-reduce (mean) the dense gradients ``sparsifier`` captured for its next mask update.

    Call it after ``optimizer.step()`` and before ``sparsifier.step()`` on every rank, every step (it
    sends nothing on steps without an update). Returns the payload bytes this rank sent.
    """
    grads = getattr(sparsifier, "dense_grads", None)
    if not isinstance(grads, dict):
        raise InputError(f"average_growth_gradients needs a sparsec.prune.RigL/SET sparsifier, got "
                         f"{type(sparsifier).__name__}")
    world = dist.get_world_size(process_group)
    sent = 0
    for name in sorted(grads):  # the same order on every rank
        g = grads[name]
        dist.all_reduce(g, group=process_group)
        g.div_(world)
        sent += g.numel() * g.element_size()
    return sent
