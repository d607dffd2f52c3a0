"""Shared bits of the prune_*.py examples: scikit-learn's bundled digits and a tiny training loop."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

# The models are tiny: one thread is faster than two fighting over a shared CPU.
torch.set_num_threads(1)


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): 1797 8x8 digits scaled to [0, 1], last 360 held out."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    return x[:-360], y[:-360], x[-360:], y[-360:]


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, sparsifier=None,
          optimizer: torch.optim.Optimizer | None = None, lr: float = 0.05) -> torch.optim.Optimizer:
    """Minibatch SGD; ``sparsifier.step()`` after every ``optimizer.step()``, the torch.ao.pruning way."""
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sparsifier is not None:
                sparsifier.step()
    return opt


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (model(x).argmax(1) == y).float().mean().item()
