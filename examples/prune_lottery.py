"""Lottery ticket: iterative magnitude pruning with rewinding to iteration k, and the random re-init control."""

from prune_common import accuracy, digits, mlp, train

import sparsec.prune as prune

x, y, xt, yt = digits()
k = 20  # rewind iteration

model = mlp(seed=0)
ticket = prune.LotteryTicket(prune_fraction=0.2, scope="global")
ticket.prepare(model)
train(model, x, y, epochs=1)  # stand-in for "train k steps"; a real loop calls save at step k
ticket.save_rewind_point(step=k)
train(model, x, y, epochs=5)
for _ in range(5):  # each round: prune 20 % of what is left, rewind survivors to iteration k, retrain
    sparsity = ticket.step()
    train(model, x, y, epochs=5)  # a fresh optimizer every round
    print(f"sparsity {sparsity:.3f}: {accuracy(model, xt, yt):.1f}%")

ticket.random_reinit(seed=1)  # control: same mask, fresh random weights
train(model, x, y, epochs=5)
print(f"random re-init, same mask: {accuracy(model, xt, yt):.1f}%")
ticket.finalize()
