"""Movement pruning (Sanh et al. 2020) while fine-tuning a trained model, on the cubic schedule."""

from prune_common import accuracy, digits, mlp, train

import sparsec.prune as prune

x, y, xt, yt = digits()
model = mlp()
train(model, x, y, epochs=10)  # "pre-training"
steps = 8 * (-(-len(y) // 64))
pruner = prune.GradualPruner(prune.MovementPruner(0.9, scope="global"), start_step=0,
                             end_step=int(0.75 * steps), frequency=10)
pruner.prepare(model)  # scores S -= W * dL/dW' accumulate on every backward pass, no loop changes
train(model, x, y, epochs=8, sparsifier=pruner, lr=0.05)
scores = pruner.pruner.importance["0"]
pruner.finalize()
print(f"90% movement: {accuracy(model, xt, yt):.1f}%; score range {scores.min():.2e}..{scores.max():.2e}")
