"""Bake masks into plain weights, so the compiler sees ordinary nn.Parameters that contain zeros."""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from .masks import Mask


def finalize(model: nn.Module) -> nn.Module:
    """Remove every sparsec :class:`Mask` parametrization, leaving ``weight = original * mask`` in place.

    The result holds plain ``nn.Parameter`` objects (the same objects the optimizer held), modules get
    their original class back, and nothing of the pruning machinery is left for ``sparse_compile`` or
    ``torch.export`` to trip over. A tensor that also carries a foreign parametrization is refused rather
    than having that parametrization removed silently. Returns ``model`` (modified in place).
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations.keys()):
            plist = module.parametrizations[name]
            ours = [isinstance(p, Mask) for p in plist]
            if not any(ours):
                continue
            if not all(ours):
                raise ValueError(f"{type(module).__name__}.{name} mixes a sparsec Mask with other "
                                 "parametrizations; remove those first")
            for p in plist:
                p.grad_callback = None
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model
