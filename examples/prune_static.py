"""Static sparse training: a fixed random mask from step 0 (pruned weights, gradients, optimizer state = 0)."""

import torch
from prune_common import accuracy, digits, mlp, train

import sparsec.prune as prune

x, y, xt, yt = digits()
model = mlp()
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
sparsifier = prune.StaticSparsifier(0.9, distribution="erk", seed=0)  # or masks={name: bool tensor}
sparsifier.prepare(model, optimizer=opt)  # the optimizer's state is zeroed where weights are pruned
train(model, x, y, epochs=10, sparsifier=sparsifier, optimizer=opt)
grad = prune.original(model[0]).grad
print(f"static 90%: {accuracy(model, xt, yt):.1f}%; pruned grads all zero: "
      f"{bool((grad[~prune.get_mask(model[0]).mask] == 0).all())}")
sparsifier.finalize()
