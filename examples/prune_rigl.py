"""Dynamic sparse training: RigL (gradient growth) and SET (random growth), same budget as static."""

import torch
from prune_common import accuracy, digits, mlp, train

import sparsec.prune as prune

x, y, xt, yt = digits()
epochs = 10
steps = epochs * (-(-len(y) // 64))
for cls in (prune.RigL, prune.SET):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sparsifier = cls(0.9, end_step=int(0.75 * steps), update_interval=25, alpha=0.3, distribution="erk")
    sparsifier.prepare(model, optimizer=opt)  # grown weights start at 0 with zero momentum
    train(model, x, y, epochs=epochs, sparsifier=sparsifier, optimizer=opt)
    moved = sum(h[2] for h in sparsifier.history)
    sparsifier.finalize()
    print(f"{cls.__name__} 90%: {accuracy(model, xt, yt):.1f}%, {len(sparsifier.history)} updates, {moved} regrown")
