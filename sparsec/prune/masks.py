"""Mask storage: a torch parametrization that multiplies a parameter by a boolean mask.

Why a parametrization rather than forward pre-hooks (see docs/prune.md for the long version):

* ``module.weight`` *is* the masked tensor everywhere (forward, ``state_dict`` consumers that read the
  attribute, ``torch.export``), so no code path can see the unmasked weight by accident.
* autograd gives ``dL/d original = dL/d weight * mask`` for free, so pruned weights receive exactly zero
  gradient without a gradient hook that an optimizer could race with.
* the dense original survives in ``module.parametrizations.weight.original`` (the *same* Parameter object
  the optimizer already holds), which movement pruning and RigL need.
* ``remove_parametrizations(..., leave_parametrized=True)`` bakes the zeros into a plain ``nn.Parameter``
  (that is what :func:`sparsec.prune.finalize` does), restoring the module's original class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

#: Called with ``(original_weight, dL/d masked_weight)`` after each backward pass through a mask.
GradCallback = Callable[[torch.Tensor, torch.Tensor], None]


class Mask(nn.Module):
    """Parametrization ``W -> W * mask`` with a boolean ``mask`` buffer (True = kept).

    ``grad_callback``, when set, receives the *dense* gradient with respect to the masked tensor (the
    straight-through gradient that movement pruning and RigL's growth criterion need); the gradient that
    reaches the original parameter is still masked.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())
        self.grad_callback: GradCallback | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * self.mask
        callback = self.grad_callback
        if callback is not None and out.requires_grad:
            weight = x.detach()

            def _hook(grad: torch.Tensor) -> None:
                callback(weight, grad)

            out.register_hook(_hook)
        return out

    def extra_repr(self) -> str:
        kept = int(self.mask.sum())
        return f"shape={tuple(self.mask.shape)}, kept={kept}/{self.mask.numel()}"


def _check_tensor(module: nn.Module, name: str) -> None:
    if parametrize.is_parametrized(module, name):
        return
    tensor = getattr(module, name, None)
    if not isinstance(tensor, nn.Parameter):
        raise ValueError(f"{type(module).__name__} has no parameter named {name!r} to mask")


def get_mask(module: nn.Module, name: str = "weight") -> Mask | None:
    """Return the :class:`Mask` on ``module.<name>``, or None when the tensor is not masked."""
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:
        if isinstance(p, Mask):
            return p
    return None


def attach_mask(module: nn.Module, name: str = "weight", mask: torch.Tensor | None = None) -> Mask:
    """Put a :class:`Mask` on ``module.<name>`` (all-ones unless ``mask`` is given) and return it.

    Idempotent: an existing mask is reused (and overwritten with ``mask`` when one is given). A tensor
    that carries some other parametrization is refused, because the order of the two would be ambiguous.
    """
    _check_tensor(module, name)
    existing = get_mask(module, name)
    if existing is not None:
        if mask is not None:
            set_mask(module, name, mask)
        return existing
    if parametrize.is_parametrized(module, name):
        raise ValueError(
            f"{type(module).__name__}.{name} already has a parametrization that is not a sparsec Mask; "
            "remove it before pruning"
        )
    tensor = getattr(module, name)
    if mask is None:
        mask = torch.ones_like(tensor, dtype=torch.bool)
    elif mask.shape != tensor.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != {name} shape {tuple(tensor.shape)}")
    param = Mask(mask.to(tensor.device))
    # unsafe=True skips the consistency forward pass: the shape was checked above and x * mask keeps dtype.
    parametrize.register_parametrization(module, name, param, unsafe=True)
    return param


def set_mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Overwrite the mask of ``module.<name>`` in place (shape must match)."""
    current = get_mask(module, name)
    if current is None:
        raise ValueError(f"{type(module).__name__}.{name} is not masked; call attach_mask first")
    if mask.shape != current.mask.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != {name} shape {tuple(current.mask.shape)}")
    current.mask.copy_(mask.to(torch.bool))


def original(module: nn.Module, name: str = "weight") -> nn.Parameter:
    """The dense, unmasked Parameter behind a masked tensor (the object the optimizer updates)."""
    if get_mask(module, name) is None:
        raise ValueError(f"{type(module).__name__}.{name} is not masked")
    return module.parametrizations[name].original


def effective(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The tensor the forward pass uses (masked if a mask is attached), detached."""
    with torch.no_grad():
        return getattr(module, name).detach()


def zero_pruned_(module: nn.Module, name: str = "weight") -> None:
    """Write zeros into the original at masked positions, so pruned weights are gone, not just hidden."""
    m = get_mask(module, name)
    if m is None:
        return
    with torch.no_grad():
        original(module, name).mul_(m.mask)


def zero_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, keep: torch.Tensor) -> None:
    """Zero every per-element optimizer state of ``param`` (momentum, Adam moments, ...) where ``keep`` is False.

    Without this, a pruned weight's momentum would keep moving the (hidden) original, and a weight that
    RigL regrows would start with a stale velocity instead of from rest.
    """
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    with torch.no_grad():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                value.mul_(keep.to(value.dtype))


def iter_masks(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, Mask]]:
    """Yield ``(module_name, module, tensor_name, mask)`` for every masked tensor in ``model``."""
    for mod_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name in list(module.parametrizations.keys()):
            m = get_mask(module, tensor_name)
            if m is not None:
                yield mod_name, module, tensor_name, m


def sparsity_report(model: nn.Module, module_types: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d,
                                                                       nn.Conv3d)) -> dict[str, float]:
    """Fraction of exact zeros in the (effective) weight of each module of ``module_types``.

    Works before and after :func:`finalize`, since it reads the tensor the forward pass uses. The key
    ``"__global__"`` holds the zero fraction over all of them together.
    """
    report: dict[str, float] = {}
    zeros = total = 0
    for name, module in model.named_modules():
        if isinstance(module, module_types):
            w = effective(module, "weight")
            z = int((w == 0).sum())
            report[name] = z / w.numel()
            zeros += z
            total += w.numel()
    report["__global__"] = zeros / total if total else 0.0
    return report
