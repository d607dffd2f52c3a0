"""One-shot magnitude pruning (layer-wise or global) of a trained MLP, a short fine-tune, then finalize."""

from prune_common import accuracy, digits, mlp, train

import sparsec.prune as prune

x, y, xt, yt = digits()
model = mlp()
train(model, x, y, epochs=10)
print(f"dense: {accuracy(model, xt, yt):.1f}%")

pruner = prune.MagnitudePruner(0.9, scope="global")  # or scope="layer": 90 % of every layer
pruner.prepare(model)  # every Linear/Conv; or prepare(model, ["0", "2"]) for some of them
pruner.step()  # one shot: masks computed once
print(f"90% one-shot: {accuracy(model, xt, yt):.1f}%")
train(model, x, y, epochs=3, lr=0.01)  # the masks stay fixed while the survivors are fine-tuned
model = pruner.finalize()  # plain nn.Linear with zeros in .weight, ready for sparse_compile
print(f"after fine-tune: {accuracy(model, xt, yt):.1f}%, sparsity {prune.sparsity_report(model)}")

# Hand the finalized model to the compiler: same predictions, sparse kernels where they pay.
import sparsec  # noqa: E402

cm = sparsec.sparse_compile(model.eval(), (xt,), target="cpu")
print(cm.report())
same = bool((cm(xt).argmax(1) == model(xt).argmax(1)).all())
print(f"compiled model agrees with eager on every test prediction: {same}")
