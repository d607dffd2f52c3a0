"""Tiny models shared by the sparsec.prune tests."""

from __future__ import annotations

import torch
from torch import nn


def mlp(seed: int = 0, sizes: tuple[int, ...] = (16, 32, 24, 8)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvRes(nn.Module):
    """conv-bn-relu, a residual block whose two branches must share channels, then flatten -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.b2 = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(a + self.b2(self.c2(a)))
        y = torch.relu(self.c3(y))
        return self.fc(torch.flatten(y, 1))


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, sparsifier=None, steps: int = 5, seed: int = 0,
                in_features: int = 16, classes: int = 8) -> None:
    """A few steps of a regression-free classification loop calling ``sparsifier.step()`` like torch.ao."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, in_features, generator=gen)
        y = torch.randint(0, classes, (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sparsifier is not None:
            sparsifier.step()
