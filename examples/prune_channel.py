"""Channel pruning with coupled layers, then physically shrinking the model."""

import torch
from prune_common import accuracy, digits, train
from torch import nn

import sparsec.prune as prune


class ResMLP(nn.Module):
    """fc2's output is added to fc1's: the dependency graph prunes their neurons together."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.head = nn.Linear(64, 256), nn.Linear(256, 256), nn.Linear(256, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.head(torch.relu(h + self.fc2(h)))


x, y, xt, yt = digits()
model = ResMLP()
train(model, x, y, epochs=10)
for group in prune.channel_groups(model, x[:2]):
    print("group", group.producers, "prunable" if group.prunable else f"fixed: {group.fixed}")

pruner = prune.ChannelPruner(0.5, norm="l1")
pruner.prepare(model, example_inputs=x[:2])
pruner.step()
train(model, x, y, epochs=3, lr=0.01)
masked = model(xt)
pruner.compress()  # finalize + slice: fc1/fc2 keep 128 neurons, fc2/head inputs shrink to match
print(model)
print(f"{accuracy(model, xt, yt):.1f}%, same outputs as masked: {torch.allclose(model(xt), masked, atol=1e-5)}")
