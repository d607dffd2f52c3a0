"""Data, model and training loop shared by the digits experiment (scikit-learn's bundled digits, no download)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import sparsec.prune as prune

SPLIT_SEED = 0  # one fixed train/val/test split for every run; run seeds vary init and batch order
BATCH = 64
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_data() -> Data:
    """60/20/20 stratified split of the 1797 digits, standardised with training statistics only."""
    x, y = load_digits(return_X_y=True)
    x_tmp, x_test, y_tmp, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=SPLIT_SEED)
    x_train, x_val, y_train, y_val = train_test_split(x_tmp, y_tmp, test_size=0.25, stratify=y_tmp,
                                                      random_state=SPLIT_SEED)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor((a - mean) / std, dtype=torch.float32)

    def lab(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.long)

    return Data(t(x_train), lab(y_train), t(x_val), lab(y_val), t(x_test), lab(y_test))


def make_mlp(seed: int) -> nn.Sequential:
    """64-256-256-10 ReLU MLP with PyTorch's default init drawn from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def steps_per_epoch(data: Data) -> int:
    return math.ceil(len(data.y_train) / BATCH)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    acc = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return 100.0 * acc


def train(model: nn.Module, data: Data, *, lr: float, total_steps: int, seed: int, start_step: int = 0,
          setup: Callable[[torch.optim.Optimizer], object] | None = None,
          on_step: Callable[[int], None] | None = None, compiled: bool = False) -> None:
    """SGD + momentum with a cosine learning rate over ``total_steps``, run from ``start_step``.

    ``setup(optimizer)`` is called before the first step (to prepare a sparsifier with the optimizer) and
    may return an object whose ``step()`` is called after every ``optimizer.step()``, as in torch.ao.
    ``start_step > 0`` resumes the schedule mid-way, which is what rewinding to iteration k needs.

    ``compiled``: train through sparsec's compiled sparse kernels (``sparsec.prune.CompiledTraining``): the
    sparsifier (StaticSparsifier, RigL or SET) keeps its masks on ``model``; the compiled layers store
    exactly the masks' positions, mask updates re-pack the changed layers, and RigL's dense gradients are
    computed on the steps before its updates only.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    sparsifier = setup(opt) if setup is not None else None
    forward = model
    if compiled:
        if not isinstance(sparsifier, prune.BaseSparsifier):
            raise NotImplementedError("compiled training runs a sparsec.prune sparsifier's masks; got none")
        sparsifier = prune.CompiledTraining(sparsifier, (data.x_train[:BATCH],))
        forward = sparsifier
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    step = start_step
    model.train()
    while step < total_steps:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, BATCH):
            if step >= total_steps:
                break
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / total_steps))
            idx = order[i:i + BATCH]
            loss = nn.functional.cross_entropy(forward(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sparsifier is not None and hasattr(sparsifier, "step"):
                sparsifier.step()
            step += 1
            if on_step is not None:
                on_step(step)


def fresh_copy(state: dict[str, torch.Tensor], seed: int) -> nn.Sequential:
    """A new plain MLP holding ``state`` (a finalized/dense state dict)."""
    model = make_mlp(seed)
    model.load_state_dict(state)
    return model


def finalize_and_measure(model: nn.Module) -> float:
    """Bake the masks, check that nothing of the pruning machinery is left, return the global sparsity."""
    prune.finalize(model)
    for m in model.modules():
        if hasattr(m, "parametrizations"):
            raise AssertionError(f"finalize left a parametrization on {m}")
    return 100.0 * prune.sparsity_report(model)["__global__"]
