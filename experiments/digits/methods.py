"""One function per pruning method, each returning (val acc, test acc, measured sparsity) per run."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from common import Data, accuracy, finalize_and_measure, fresh_copy, make_mlp, train

import sparsec.prune as prune


@dataclass
class Run:
    val: float
    test: float
    sparsity: float  # measured on the finalized weights (or the effective ones while IMP goes on), in %
    steps: int


def evaluate(model, data: Data, sparsity: float, steps: int) -> Run:
    return Run(accuracy(model, data.x_val, data.y_val), accuracy(model, data.x_test, data.y_test), sparsity,
               steps)


def dense(data: Data, seed: int, lr: float, steps: int) -> tuple[Run, dict[str, torch.Tensor]]:
    model = make_mlp(seed)
    train(model, data, lr=lr, total_steps=steps, seed=seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return evaluate(model, data, finalize_and_measure(model), steps), state


def one_shot(data: Data, dense_state, seed: int, pruner: prune.BaseSparsifier, lr: float,
             steps: int) -> tuple[Run, Run]:
    """Prune the trained dense model once; return (before fine-tuning, after ``steps`` of fine-tuning)."""
    model = fresh_copy(dense_state, seed)
    pruner.prepare(model)
    pruner.step()
    before = evaluate(model, data, 100.0 * prune.sparsity_report(model)["__global__"], 0)
    # The pruner needs no per-step work: its masks stay fixed while the kept weights are fine-tuned.
    train(model, data, lr=lr, total_steps=steps, seed=seed + 100)
    return before, evaluate(model, data, finalize_and_measure(model), steps)


def gradual(data: Data, dense_state, seed: int, pruner: prune.BaseSparsifier, lr: float, steps: int,
            ramp_fraction: float = 0.75, frequency: int = 10) -> Run:
    """Fine-tune the dense model while ``pruner``'s sparsity follows the cubic ramp (Zhu & Gupta)."""
    model = fresh_copy(dense_state, seed)
    gp = prune.GradualPruner(pruner, start_step=0, end_step=int(ramp_fraction * steps), frequency=frequency)

    def setup(opt):
        gp.prepare(model, optimizer=opt)
        return gp

    train(model, data, lr=lr, total_steps=steps, seed=seed + 100, setup=setup)
    return evaluate(model, data, finalize_and_measure(model), steps)


def sparse_from_scratch(data: Data, seed: int, sparsifier: prune.BaseSparsifier, lr: float, steps: int,
                        init_seed: int | None = None, compiled: bool = False) -> Run:
    """Static / RigL / SET: train from a random init with the sparsifier active from step 0.

    ``compiled``: through sparsec's compiled sparse kernels (see common.train)."""
    model = make_mlp(seed if init_seed is None else init_seed)

    def setup(opt):
        sparsifier.prepare(model, optimizer=opt)
        return sparsifier

    train(model, data, lr=lr, total_steps=steps, seed=seed, setup=setup, compiled=compiled)
    return evaluate(model, data, finalize_and_measure(model), steps)


def imp_schedule(targets: list[float], per_round: float = 0.2) -> list[float]:
    """Sparsity after each IMP round: prune ``per_round`` of the remaining weights, landing on each target."""
    out, density = [], 1.0
    for target in sorted(targets):
        while True:
            density *= 1.0 - per_round
            if 1.0 - density >= target - 1e-9:
                density = 1.0 - target
                out.append(target)
                break
            out.append(1.0 - density)
    return out


def lottery(data: Data, seed: int, lr: float, steps: int, rewind_step: int,
            targets: list[float]) -> dict[float, tuple[Run, dict[str, torch.Tensor]]]:
    """IMP with rewinding to ``rewind_step``; returns the trained run and the mask at each target sparsity."""
    model = make_mlp(seed)
    ticket = prune.LotteryTicket(prune_fraction=0.2, scope="global")
    ticket.prepare(model)

    def save(step: int) -> None:
        if step == rewind_step:
            ticket.save_rewind_point(step)

    train(model, data, lr=lr, total_steps=steps, seed=seed, on_step=save)
    results = {}
    total = steps
    for r, sparsity in enumerate(imp_schedule(targets)):
        ticket.step(sparsity)  # prune the trained weights, rewind the survivors to iteration k
        # A fresh optimizer and the learning-rate schedule resumed at iteration k, as in Frankle et al.
        train(model, data, lr=lr, total_steps=steps, seed=seed + 1000 * (r + 1), start_step=rewind_step)
        total += steps - rewind_step
        if sparsity in targets:
            measured = 100.0 * prune.sparsity_report(model)["__global__"]
            results[sparsity] = (evaluate(model, data, measured, total), ticket.masks())
    prune.finalize(model)
    return results
