"""2:4 (and 1:4, 4:8) semi-structured pruning along the input dimension."""

from prune_common import accuracy, digits, mlp, train

import sparsec.prune as prune

x, y, xt, yt = digits()
for n, m in ((2, 4), (1, 4), (4, 8)):
    model = mlp()
    train(model, x, y, epochs=10)
    pruner = prune.NMPruner(n, m)
    pruner.prepare(model)  # raises if an input dimension is not a multiple of M
    pruner.step()
    train(model, x, y, epochs=2, lr=0.01)
    pruner.finalize()
    ok = all(prune.is_nm_sparse(layer.weight, n, m) for layer in model if hasattr(layer, "weight"))
    print(f"{n}:{m}: {accuracy(model, xt, yt):.1f}%, pattern holds: {ok}")
