"""Mask-aware, lossless gradient packing for DDP: all-reduce only the positions a shared mask keeps.

Every rank holds the same mask, so the packed vectors line up position by position and an all-reduce of
the packed values is exactly the all-reduce of the dense bucket restricted to the kept positions; the
other positions are zero on every rank (a parametrized mask zeroes their gradient through autograd).
"""

# no `from __future__ import annotations`: DDP checks the hook's annotations at runtime

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize

from sparsec.errors import InputError
from sparsec.prune.masks import Mask


class _Frozen:
    """A mask fixed at construction (the exact zeros of a plain weight), shaped like sparsec's Mask."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask


def _param_masks(model: nn.Module, freeze_zeros: bool) -> dict[int, Mask | _Frozen]:
    """id(parameter) -> its mask holder; ``holder.mask`` is read at every step, so a sparsec.prune mask
    that is updated in place or replaced (RigL, SET, gradual pruning) is followed."""
    out: dict[int, Mask | _Frozen] = {}
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for plist in module.parametrizations.values():
                masks = [p for p in plist if isinstance(p, Mask)]
                if masks:
                    out[id(plist.original)] = masks[0]
    if freeze_zeros:
        for p in model.parameters():
            if id(p) not in out and p.dim() >= 2:
                keep = p.detach() != 0
                if not bool(keep.all()):
                    out[id(p)] = _Frozen(keep.clone())
    return out


class MaskedState:
    """State of :func:`masked_hook`: the masks of ``model``'s parameters and the bytes this rank sent.

    Masks come from ``sparsec.prune`` parametrizations (followed when they change in place, e.g. RigL or
    SET updates) and, with ``freeze_zeros=True``, from the exact zeros of plain weights at construction
    (frozen: the gradient at those positions is dropped, so such weights stay sparse under SGD without
    weight decay). Parameters without a mask (biases, dense layers) are sent densely.
    ``model`` is the module before or after wrapping in DDP.
    """

    def __init__(self, model: nn.Module, process_group: dist.ProcessGroup | None = None,
                 freeze_zeros: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"MaskedState needs an nn.Module, got {type(model).__name__}")
        model = getattr(model, "module", model) if isinstance(model, nn.parallel.DistributedDataParallel) else model
        self.model = model
        self.process_group = process_group
        self.freeze_zeros = freeze_zeros
        self._masks = _param_masks(model, freeze_zeros)
        # bucket index -> (key, positions, the masks the key names: held so that their ids stay unique)
        self._cache: dict[int, tuple[tuple, torch.Tensor | None, list]] = {}
        self.bytes_sent = 0
        self.dense_bytes = 0  # what the default hook would have sent, for comparison

    def sync_masks(self, src: int = 0) -> None:
        """Broadcast every mask from rank ``src`` so all ranks pack the same positions.

        Call it after a mask update (RigL/SET) unless every rank updates from a shared seed.
        """
        group = self.process_group
        for holder in self._masks.values():
            mask = holder.mask
            buf = mask.to(torch.uint8)
            dist.broadcast(buf, src=src, group=group)
            mask.copy_(buf.to(torch.bool))

    @property
    def density(self) -> float:
        """Fraction of the model's parameter entries this hook sends (kept mask entries + unmasked)."""
        sent = total = 0
        for p in self.model.parameters():
            holder = self._masks.get(id(p))
            sent += p.numel() if holder is None else int(holder.mask.sum())
            total += p.numel()
        return sent / total if total else 1.0

    def _indices(self, bucket: dist.GradBucket) -> torch.Tensor | None:
        """Flat positions of the bucket's buffer to send; None when every position is kept."""
        params = bucket.parameters()
        masks = [self._masks[id(p)].mask if id(p) in self._masks else None for p in params]
        # a mask's identity and in-place version: any update (copy_, fill_, reassignment) changes the key
        key = tuple((id(p), -1, -1) if m is None else (id(p), id(m), m._version) for p, m in zip(params, masks, strict=True))
        hit = self._cache.get(bucket.index())
        if hit is not None and hit[0] == key:
            return hit[1]
        if all(m is None for m in masks):
            idx = None
        else:
            parts, offset = [], 0
            for p, mask in zip(params, masks, strict=True):
                n = p.numel()
                if mask is not None:
                    if mask.shape != p.shape:
                        raise InputError(f"mask of shape {tuple(mask.shape)} for a parameter of shape "
                                         f"{tuple(p.shape)}")
                    parts.append(mask.reshape(-1).nonzero().squeeze(1) + offset)
                else:
                    parts.append(torch.arange(offset, offset + n))
                offset += n
            idx = torch.cat(parts).to(bucket.buffer().device)
        self._cache[bucket.index()] = (key, idx, masks)
        return idx


def masked_hook(state: MaskedState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: average the bucket's gradient over ranks, sending only the masked positions."""
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    buffer = bucket.buffer()
    idx = state._indices(bucket)
    state.dense_bytes += buffer.numel() * buffer.element_size()
    if idx is None:
        packed = buffer.div_(world)
    else:
        packed = buffer[idx].div_(world)
    state.bytes_sent += packed.numel() * packed.element_size()
    work = dist.all_reduce(packed, group=group, async_op=True)

    def unpack(fut: torch.futures.Future) -> torch.Tensor:
        value = fut.value()[0]
        if idx is None:
            return value
        buffer.zero_()
        buffer[idx] = value
        return buffer

    return work.get_future().then(unpack)
