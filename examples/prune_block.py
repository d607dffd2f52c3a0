"""Block pruning: drop whole 4x4 (or any shape) blocks by their RMS norm."""

from prune_common import accuracy, digits, mlp, train

import sparsec.prune as prune

x, y, xt, yt = digits()
model = mlp()
train(model, x, y, epochs=10)
pruner = prune.BlockPruner(0.75, block_shape=(4, 4), norm="l2", scope="layer")  # (1, 8), (8, 1), (3, 5)...
pruner.prepare(model)
pruner.step()
train(model, x, y, epochs=3, lr=0.01)
pruner.finalize()
print(f"75% of 4x4 blocks pruned: {accuracy(model, xt, yt):.1f}%")
print((model[2].weight[:8, :16] != 0).int())  # zeros come in 4x4 tiles
