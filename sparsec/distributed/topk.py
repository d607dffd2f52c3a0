"""DGC-style top-k gradient sparsification with error feedback, as a DDP comm hook.

Each rank adds its residual (what it has not sent yet) to the bucket's gradient, sends the k entries of
largest magnitude as (value, index) pairs through ``all_gather`` (indices differ per rank, so all-reduce
does not apply), keeps the rest as the new residual, and every rank sums the gathered pairs.
"""

# no `from __future__ import annotations`: DDP checks the hook's annotations at runtime

import math

import torch
import torch.distributed as dist

from sparsec.errors import InputError, UnsupportedError

_INDEX_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}


def _all_gather(out: torch.Tensor, inp: torch.Tensor, group) -> dist.Work:
    # all_gather_into_tensor was renamed all_gather_single (the old name warns in recent torch); looked
    # up at each call so that a wrapper around torch.distributed's function (a byte counter) sees it
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return gather(out, inp, group=group, async_op=True)


class TopKState:
    """State of :func:`topk_hook`: the ratio schedule, the per-bucket residuals and the bytes sent.

    ``ratio`` is the fraction of each bucket sent once warm. During the first ``warmup_steps`` steps
    the ratio falls geometrically from ``warmup_ratio`` to ``ratio`` (DGC's warm-up, which keeps early,
    fast-changing gradients from piling up in the residual). A step ends at the last bucket.
    """

    def __init__(self, ratio: float = 0.01, warmup_steps: int = 0, warmup_ratio: float = 0.25,
                 process_group: dist.ProcessGroup | None = None) -> None:
        if not 0 < ratio <= 1 or not 0 < warmup_ratio <= 1:
            raise InputError(f"ratio and warmup_ratio must lie in (0, 1], got {ratio}, {warmup_ratio}")
        if warmup_steps < 0:
            raise InputError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.ratio = ratio
        self.warmup_steps = warmup_steps
        self.warmup_ratio = warmup_ratio
        self.process_group = process_group
        self.step = 0
        self.residuals: dict[int, torch.Tensor] = {}
        self.bytes_sent = 0
        self.dense_bytes = 0

    def current_ratio(self) -> float:
        """The fraction sent at the current step (after warm-up: ``ratio``)."""
        if self.step >= self.warmup_steps:
            return self.ratio
        t = self.step / self.warmup_steps
        return self.warmup_ratio * (self.ratio / self.warmup_ratio) ** t


def topk_hook(state: TopKState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: average the bucket's top-k entries (plus residual) over ranks; the rest waits."""
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    buffer = bucket.buffer()
    if buffer.dtype not in _INDEX_VIEW:
        raise UnsupportedError(f"topk_hook supports float32/float64 gradients, got {buffer.dtype}")
    n = buffer.numel()
    residual = state.residuals.get(bucket.index())
    # DDP rebuilds its buckets after the first step: a bucket of another size starts a fresh residual.
    grad = buffer.clone() if residual is None or residual.shape != buffer.shape else buffer + residual
    k = min(n, max(1, math.ceil(state.current_ratio() * n)))  # identical on every rank
    idx = grad.abs().topk(k, sorted=False).indices
    values = grad[idx]
    grad[idx] = 0
    state.residuals[bucket.index()] = grad
    # One collective: the indices ride bit-cast in the values' dtype, after the values.
    itype = _INDEX_VIEW[buffer.dtype]
    payload = torch.cat([values, idx.to(itype).view(buffer.dtype)])
    gathered = torch.empty(world * payload.numel(), dtype=buffer.dtype, device=buffer.device)
    state.bytes_sent += payload.numel() * payload.element_size()
    state.dense_bytes += n * buffer.element_size()
    if bucket.is_last():
        state.step += 1
    work = _all_gather(gathered, payload, group)

    def unpack(fut: torch.futures.Future) -> torch.Tensor:
        pairs = gathered.view(world, 2, k)
        vals = pairs[:, 0].reshape(-1)
        where = pairs[:, 1].contiguous().view(itype).reshape(-1).long()
        buffer.zero_()
        buffer.index_add_(0, where, vals)
        return buffer.div_(world)

    return work.get_future().then(unpack)
