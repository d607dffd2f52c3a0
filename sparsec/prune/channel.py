"""Structured channel / filter pruning with coupled layers pruned together, and physical shrinking."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .base import BaseSparsifier, lowest_k_mask
from .channel_graph import ChannelGroup, channel_groups
from .finalize import finalize
from .masks import attach_mask, effective, get_mask, set_mask, zero_optimizer_state, zero_pruned_
from .schedule import check_sparsity

NORMS = ("l1", "l2")


class ChannelPruner(BaseSparsifier):
    """Remove ``round(sparsity * C)`` output channels of every prunable channel group, by L1/L2 norm.

    The groups come from :func:`channel_groups` (a networkx graph over the traced model), so a residual
    ``a + b`` prunes the same channels in both producers, and BatchNorms follow their producer. While
    prepared, a pruned channel's weight row and bias (and its BatchNorm's weight and bias) are masked,
    so its activation is exactly zero and the masked model computes what the shrunk one will.
    :meth:`compress` then physically removes the channels, giving a smaller dense model.
    """

    def __init__(self, sparsity: float, *, norm: str = "l1") -> None:
        super().__init__(sparsity)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        self.groups: list[ChannelGroup] = []
        self.all_modules: dict[str, nn.Module] = {}

    def prepare(self, model: nn.Module, modules: Iterable[str | nn.Module] | None = None, *,
                example_inputs: tuple | torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
        """Trace ``model`` on ``example_inputs``; ``modules`` (producer names/objects) restricts the groups."""
        self.model, self.optimizer = model, optimizer
        self.all_modules = dict(model.named_modules())
        groups = channel_groups(model, example_inputs)
        for g in groups:
            for name in g.norms:
                if not getattr(self.all_modules[name], "affine", False):
                    g.fixed.append(f"{name} has no affine weight/bias to zero its output")
        if modules is not None:
            wanted = {m if isinstance(m, str) else _name_of(model, m) for m in modules}
            by_producer = {p: g for g in groups for p in g.producers}
            for name in wanted:
                if name not in by_producer:
                    mod = self.all_modules.get(name)
                    raise ValueError(f"{name!r} ({type(mod).__name__}) is not a Linear/Conv in the traced graph")
                if not by_producer[name].prunable:
                    raise ValueError(f"channels of {name!r} cannot be pruned: {by_producer[name].fixed}")
            groups = [g for g in groups if set(g.producers) & wanted]
        self.groups = [g for g in groups if g.prunable]
        if not self.groups:
            raise ValueError(f"{type(model).__name__} has no prunable channel group (every group touches a "
                             "model input/output or an unsupported op)")
        self.targets = {p: self.all_modules[p] for g in self.groups for p in g.producers}
        for g in self.groups:
            for name in g.producers + g.norms:
                for tensor in ("weight", "bias"):
                    if getattr(self.all_modules[name], tensor, None) is not None:
                        attach_mask(self.all_modules[name], tensor)
        return model

    def channel_scores(self, group: ChannelGroup) -> torch.Tensor:
        """Per-channel norm over the rows of all producers of the group (effective weights)."""
        total = torch.zeros(group.channels)
        for name in group.producers:
            rows = effective(self.all_modules[name]).reshape(group.channels, -1).float()
            total += rows.abs().sum(1) if self.norm == "l1" else (rows ** 2).sum(1)
        return total if self.norm == "l1" else total.sqrt()

    def update_masks(self, sparsity: float) -> None:
        self._require_prepared()
        check_sparsity(sparsity)
        for g in self.groups:
            k = int(round(sparsity * g.channels))
            if k >= g.channels:
                raise ValueError(f"sparsity {sparsity} would remove all {g.channels} channels of {g.producers}")
            keep = lowest_k_mask(self.channel_scores(g), k)
            for name in g.producers + g.norms:
                self._mask_channels(self.all_modules[name], keep)

    def _mask_channels(self, module: nn.Module, keep: torch.Tensor) -> None:
        for tensor in ("weight", "bias"):
            if get_mask(module, tensor) is None:
                continue
            shape = get_mask(module, tensor).mask.shape
            full = keep.view(-1, *([1] * (len(shape) - 1))).expand(shape)
            set_mask(module, tensor, full)
            zero_pruned_(module, tensor)
            zero_optimizer_state(self.optimizer, module.parametrizations[tensor].original, full)

    def kept_channels(self) -> list[torch.Tensor]:
        """Indices of the channels each prunable group keeps (same order as ``self.groups``)."""
        self._require_prepared()
        out = []
        for g in self.groups:
            mask = get_mask(self.all_modules[g.producers[0]], "weight").mask
            out.append(torch.nonzero(mask.reshape(g.channels, -1).any(1)).flatten())
        return out

    @torch.no_grad()
    def compress(self) -> nn.Module:
        """Finalize, then physically drop pruned channels: a smaller model with plain dense parameters.

        Parameters are replaced by new (smaller) ``nn.Parameter`` objects: build the optimizer afterwards.
        """
        kept = self.kept_channels()
        finalize(self.model)
        for g, keep in zip(self.groups, kept, strict=True):
            for name in g.producers:
                _slice_out(self.all_modules[name], keep)
            for name in g.norms:
                _slice_norm(self.all_modules[name], keep)
            for name, repeat in g.consumers:
                _slice_in(self.all_modules[name], keep, repeat)
        return self.model


def _name_of(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise ValueError(f"{type(module).__name__} is not a submodule of {type(model).__name__}")


def _slice_out(module: nn.Module, keep: torch.Tensor) -> None:
    module.weight = nn.Parameter(module.weight[keep].clone())
    if module.bias is not None:
        module.bias = nn.Parameter(module.bias[keep].clone())
    if isinstance(module, nn.Linear):
        module.out_features = len(keep)
    else:
        module.out_channels = len(keep)


def _slice_norm(module: nn.Module, keep: torch.Tensor) -> None:
    module.weight = nn.Parameter(module.weight[keep].clone())
    module.bias = nn.Parameter(module.bias[keep].clone())
    if module.running_mean is not None:
        module.running_mean = module.running_mean[keep].clone()
        module.running_var = module.running_var[keep].clone()
    module.num_features = len(keep)


def _slice_in(module: nn.Module, keep: torch.Tensor, repeat: int) -> None:
    cols = (keep.view(-1, 1) * repeat + torch.arange(repeat).view(1, -1)).flatten()
    module.weight = nn.Parameter(module.weight[:, cols].clone())
    if isinstance(module, nn.Linear):
        module.in_features = len(cols)
    else:
        module.in_channels = len(cols)
