"""Gradual magnitude pruning on the cubic schedule of Zhu & Gupta (2017), during training."""

from prune_common import accuracy, digits, mlp, train

import sparsec.prune as prune

x, y, xt, yt = digits()
model = mlp()
steps_per_epoch = -(-len(y) // 64)
# Any pruner can be wrapped: MagnitudePruner, NMPruner, BlockPruner, ChannelPruner, MovementPruner.
pruner = prune.GradualPruner(prune.MagnitudePruner(0.95, scope="global"),
                             start_step=2 * steps_per_epoch, end_step=8 * steps_per_epoch, frequency=10)
pruner.prepare(model)
train(model, x, y, epochs=12, sparsifier=pruner)  # pruner.step() after every optimizer step
pruner.finalize()
print(f"95% gradual: {accuracy(model, xt, yt):.1f}%, sparsity {prune.sparsity_report(model)['__global__']:.3f}")
