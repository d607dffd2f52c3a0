"""One function per method; each returns a :class:`Run` (val/test perplexity, measured sparsity, steps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from common import (
    Evaluator,
    Setup,
    block_sparsity,
    calibration,
    finalize_checked,
    fresh_copy,
    make_lm,
    prunable_names,
    state_of,
    train,
)
from data import Corpus
from torch import nn

import sparsec.prune as prune

Speed = Callable[[nn.Module], dict]  # measures a finalized model (only for the seed that is timed)


@dataclass
class Run:
    val: float  # perplexity (bytes)
    test: float
    sparsity: float  # % exact zeros in the block Linear weights
    steps: int  # training steps of this run (post-training methods: after the dense pretraining)
    seconds: float = 0.0
    speed: dict | None = field(default=None)


@dataclass
class Ctx:
    corpus: Corpus
    setup: Setup
    ev: Evaluator

    def run(self, model: nn.Module, steps: int, t0: float, speed: Speed | None = None) -> Run:
        """Evaluate ``model`` (masks may still be attached), then finalize it and time it if asked."""
        val, test = self.ev.ppl(model, self.ev.val), self.ev.ppl(model, self.ev.test)
        finalize_checked(model)
        sp = block_sparsity(model)
        seconds = time.time() - t0
        return Run(val, test, sp, steps, seconds, speed(model) if speed is not None else None)


def dense(ctx: Ctx, seed: int, lr: float) -> tuple[Run, dict, dict]:
    """Train the dense LM; returns its run, its final state and its state at the IMP rewind step."""
    t0 = time.time()
    model = make_lm(ctx.setup, seed)
    rewind: dict = {}

    def save(step: int) -> None:
        if step == ctx.setup.rewind_step:
            rewind.update(state_of(model))

    train(model, ctx.corpus, ctx.setup, lr=lr, total_steps=ctx.setup.steps, seed=seed, on_step=save)
    state = state_of(model)
    return ctx.run(model, ctx.setup.steps, t0), state, rewind


def fine_tune(ctx: Ctx, model: nn.Module, seed: int, lr: float, steps: int, prepare=None) -> None:
    """Short fine-tune (no warm-up, cosine); masks attached to ``model`` stay fixed."""
    train(model, ctx.corpus, ctx.setup, lr=lr, total_steps=steps, seed=seed + 100, warmup=0, prepare=prepare)


def dense_fine_tune(ctx: Ctx, state: dict, seed: int, lr: float) -> Run:
    """Control: the dense model fine-tuned exactly like the pruned ones (what the extra steps alone buy)."""
    t0 = time.time()
    model = fresh_copy(ctx.setup, state, seed)
    fine_tune(ctx, model, seed, lr, ctx.setup.ft_steps)
    return ctx.run(model, ctx.setup.ft_steps, t0)


def one_shot_pruner(method: str, pattern: str):
    """magnitude | wanda | sparsegpt at "50%" (unstructured, per layer/row) or "N:M"."""
    nm = tuple(int(p) for p in pattern.split(":")) if ":" in pattern else None
    if method == "magnitude":
        return prune.NMPruner(*nm) if nm else prune.MagnitudePruner(0.5, scope="layer")
    cls = {"wanda": prune.WandaPruner, "sparsegpt": prune.SparseGPTPruner}[method]
    # sequential=True: each layer's statistics come through the already pruned layers before it (the papers')
    return cls(pattern=pattern, sequential=True) if nm else cls(0.5, sequential=True)


def one_shot(ctx: Ctx, state: dict, seed: int, method: str, pattern: str, ft_lr: float,
             speed: Speed | None = None) -> tuple[Run, Run]:
    """Prune the dense model once from calibration data; (no fine-tune, after the short fine-tune)."""
    t0 = time.time()
    model = fresh_copy(ctx.setup, state, seed)
    pruner = one_shot_pruner(method, pattern)
    names = prunable_names(model)
    if method == "magnitude":
        pruner.prepare(model, names)
    else:
        pruner.prepare(model, names, calib_batches=calibration(ctx.corpus, ctx.setup, seed))
    pruner.step()
    before = Run(ctx.ev.ppl(model, ctx.ev.val), ctx.ev.ppl(model, ctx.ev.test), block_sparsity(model), 0,
                 time.time() - t0)
    # The masks stay attached, so the fine-tune updates only the kept weights.
    fine_tune(ctx, model, seed, ft_lr, ctx.setup.ft_steps)
    return before, ctx.run(model, ctx.setup.ft_steps, t0, speed)


def gradual(ctx: Ctx, state: dict, seed: int, pruner: prune.BaseSparsifier, lr: float,
            speed: Speed | None = None, ramp: float = 0.75, frequency: int = 10) -> Run:
    """Fine-tune the dense model while the sparsity follows the cubic ramp (Zhu & Gupta) to the target."""
    t0 = time.time()
    model = fresh_copy(ctx.setup, state, seed)
    steps = ctx.setup.gradual_steps
    gp = prune.GradualPruner(pruner, start_step=0, end_step=int(ramp * steps), frequency=frequency)

    def prepare(opt):
        gp.prepare(model, prunable_names(model), optimizer=opt)
        return gp

    fine_tune(ctx, model, seed, lr, steps, prepare)
    return ctx.run(model, steps, t0, speed)


def from_scratch(ctx: Ctx, seed: int, sparsifier: prune.BaseSparsifier, lr: float, init_seed: int | None = None,
                 speed: Speed | None = None) -> Run:
    """Static / SET / RigL / re-init control: a random init trained with the sparsifier from step 0."""
    t0 = time.time()
    model = make_lm(ctx.setup, seed if init_seed is None else init_seed)

    def prepare(opt):
        names = list(sparsifier.initial_masks) if getattr(sparsifier, "initial_masks", None) else \
            prunable_names(model)
        sparsifier.prepare(model, names, optimizer=opt)
        return sparsifier

    train(model, ctx.corpus, ctx.setup, lr=lr, total_steps=ctx.setup.steps, seed=seed, prepare=prepare)
    return ctx.run(model, ctx.setup.steps, t0, speed)


def lottery(ctx: Ctx, state: dict, rewind: dict, seed: int, lr: float, schedule: list[float],
            speed: Speed | None = None) -> dict[float, tuple[Run, dict[str, torch.Tensor]]]:
    """IMP with rewinding, starting from this seed's dense run (IMP's first training run *is* it).

    Each round prunes the trained weights by magnitude (per layer) to the next sparsity of ``schedule``,
    rewinds every parameter to the dense run's step ``rewind_step`` and trains to the end of the same
    schedule with a fresh optimizer. Returns, per sparsity, the run and the mask (for the re-init control).
    """
    t0 = time.time()
    s = ctx.setup
    model = fresh_copy(s, rewind, seed)
    ticket = prune.LotteryTicket(prune_fraction=0.2, scope="layer")
    ticket.prepare(model, prunable_names(model))  # rewind point = the dense run at rewind_step
    mods = dict(model.named_modules())
    with torch.no_grad():  # load the trained dense weights: the first IMP prune looks at them
        for name in ticket.targets:
            prune.original(mods[name]).copy_(state[f"{name}.weight"])
        rest = {k: v for k, v in state.items()
                if not any(k == f"{n}.weight" for n in ticket.targets)}
        unexpected = model.load_state_dict(rest, strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"dense state keys not found in the masked model: {unexpected}")
    out, steps = {}, s.steps
    for r, sparsity in enumerate(schedule):
        ticket.step(sparsity)
        train(model, ctx.corpus, s, lr=lr, total_steps=s.steps, seed=seed + 1000 * (r + 1),
              start_step=s.rewind_step)
        steps += s.steps - s.rewind_step
        last = r == len(schedule) - 1
        masks = ticket.masks()
        if last:
            out[sparsity] = (ctx.run(model, steps, t0, speed), masks)
        else:
            out[sparsity] = (Run(ctx.ev.ppl(model, ctx.ev.val), ctx.ev.ppl(model, ctx.ev.test),
                                 block_sparsity(model), steps, time.time() - t0), masks)
    return out


def imp_control(ctx: Ctx, seed: int, sparsity: float, masks: dict[str, torch.Tensor], lr: float,
                speed: Speed | None = None) -> Run:
    """The IMP mask with fresh random weights (another init seed), trained from scratch for the dense budget."""
    return from_scratch(ctx, seed, prune.StaticSparsifier(sparsity, masks=masks), lr, init_seed=seed + 500,
                        speed=speed)


def feature_norm_spread(ctx: Ctx, state: dict, seed: int) -> dict[str, float]:
    """Per layer kind, the largest max/median ratio of the input-feature norms ||X_j|| on the calibration
    data: how much Wanda's |W|·||X|| can differ from plain magnitude (1 everywhere = no difference)."""
    from sparsec.prune.calib import collect

    model = fresh_copy(ctx.setup, state, seed).eval()
    mods = dict(model.named_modules())
    stats = collect(model, {n: mods[n] for n in prunable_names(model)}, calibration(ctx.corpus, ctx.setup, seed),
                    lambda x: (x * x).sum(0))
    out: dict[str, float] = {}
    for name, sq in stats.items():
        norms = sq.sqrt()
        kind = name.split(".")[-1]
        out[kind] = max(out.get(kind, 0.0), float(norms.max() / norms.median()))
    return out
