"""Common prepare / step / finalize life cycle (the torch.ao.pruning shape) and score-based top-k masks."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .finalize import finalize as _finalize
from .masks import attach_mask, get_mask, original, set_mask, zero_optimizer_state, zero_pruned_
from .schedule import check_sparsity

#: Module types whose ``weight`` the unstructured / N:M / block pruners know how to mask.
SUPPORTED_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SCOPES = ("layer", "global")


def select_modules(model: nn.Module, modules: Iterable[str | nn.Module] | None = None,
                   types: tuple[type, ...] = SUPPORTED_TYPES) -> dict[str, nn.Module]:
    """Resolve ``modules`` (names or module objects; default: every supported layer) to ``{name: module}``.

    An explicitly requested module of an unsupported type is an error that names the type, rather than
    being skipped silently.
    """
    by_name = dict(model.named_modules())
    if modules is None:
        chosen = {n: m for n, m in by_name.items() if isinstance(m, types)}
        if not chosen:
            raise ValueError(f"{type(model).__name__} has no prunable layers of types "
                             f"{[t.__name__ for t in types]}")
        return chosen
    by_id = {id(m): n for n, m in by_name.items()}
    chosen = {}
    for item in modules:
        if isinstance(item, str):
            if item not in by_name:
                raise ValueError(f"no submodule named {item!r} in {type(model).__name__}")
            name, module = item, by_name[item]
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise ValueError(f"{type(item).__name__} is not a submodule of {type(model).__name__}")
            name, module = by_id[id(item)], item
        else:
            raise TypeError(f"modules must be names or nn.Module objects, got {type(item).__name__}")
        if not isinstance(module, types):
            raise TypeError(f"unsupported module type {type(module).__name__} for {name!r}; supported: "
                            f"{[t.__name__ for t in types]}")
        chosen[name] = module
    if not chosen:
        raise ValueError("modules is empty: nothing to prune")
    return chosen


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    return scope


def lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask that drops exactly the ``k`` lowest scores (ties broken by position, deterministically)."""
    flat = scores.reshape(-1)
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        keep[torch.argsort(flat, stable=True)[:k]] = False
    return keep.view(scores.shape)


def topk_masks(scores: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Keep-masks pruning ``round(sparsity * n)`` lowest scores per tensor (layer) or over all tensors (global)."""
    if scope == "layer":
        return {n: lowest_k_mask(s, int(round(sparsity * s.numel()))) for n, s in scores.items()}
    flat = torch.cat([s.reshape(-1).float() for s in scores.values()])
    keep = lowest_k_mask(flat, int(round(sparsity * flat.numel())))
    out, offset = {}, 0
    for n, s in scores.items():
        out[n] = keep[offset:offset + s.numel()].view(s.shape)
        offset += s.numel()
    return out


class BaseSparsifier:
    """prepare(model) -> step() (once, or every training step) -> finalize().

    Subclasses implement :meth:`update_masks` for a given sparsity level. ``self.targets`` maps module
    names to the modules whose ``weight`` is masked.
    """

    #: Whether pruned weights are also zeroed in the dense original (False where they may come back).
    zero_pruned: bool = True

    def __init__(self, sparsity: float) -> None:
        self.sparsity = check_sparsity(sparsity)
        self.model: nn.Module | None = None
        self.targets: dict[str, nn.Module] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.step_count = 0

    def prepare(self, model: nn.Module, modules: Iterable[str | nn.Module] | None = None, *,
                optimizer: torch.optim.Optimizer | None = None) -> nn.Module:
        """Attach all-ones masks to the target layers (default: every Linear/Conv). Returns ``model``.

        Pass the ``optimizer`` so that its per-weight state is zeroed wherever weights get pruned.
        """
        self.model = model
        self.targets = select_modules(model, modules)
        self.optimizer = optimizer
        for module in self.targets.values():
            attach_mask(module, "weight")
        return model

    def _require_prepared(self) -> None:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.prepare(model) must be called first")

    def step(self) -> None:
        """Compute the masks for ``self.sparsity`` (one-shot). Gradual use wraps this in GradualPruner."""
        self._require_prepared()
        self.step_count += 1
        self.update_masks(self.sparsity)

    def update_masks(self, sparsity: float) -> None:
        raise NotImplementedError

    def apply_masks(self, masks: dict[str, torch.Tensor], tensor_name: str = "weight",
                    modules: dict[str, nn.Module] | None = None) -> None:
        """Install new keep-masks and keep the original weights and the optimizer state consistent."""
        modules = self.targets if modules is None else modules
        for name, keep in masks.items():
            module = modules[name]
            set_mask(module, tensor_name, keep)
            if self.zero_pruned:
                zero_pruned_(module, tensor_name)
                zero_optimizer_state(self.optimizer, original(module, tensor_name), keep)

    def masks(self) -> dict[str, torch.Tensor]:
        """Current keep-masks of the target weights, by module name (copies)."""
        self._require_prepared()
        return {n: get_mask(m, "weight").mask.clone() for n, m in self.targets.items()}

    def finalize(self) -> nn.Module:
        """Bake the masks into plain weights (no parametrizations left) and return the model."""
        self._require_prepared()
        return _finalize(self.model)

    #: torch.ao.pruning name for the same operation.
    squash_mask = finalize


class ScoreSparsifier(BaseSparsifier):
    """Unstructured pruning of the lowest-scoring weights, per layer or globally."""

    def __init__(self, sparsity: float, *, scope: str = "layer") -> None:
        super().__init__(sparsity)
        self.scope = check_scope(scope)

    def scores(self, name: str, module: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def update_masks(self, sparsity: float) -> None:
        self._require_prepared()
        check_sparsity(sparsity)
        scores = {n: self.scores(n, m) for n, m in self.targets.items()}
        self.apply_masks(topk_masks(scores, sparsity, self.scope))
