"""Model, training loop and perplexity shared by the LM experiment (a tiny byte-level Llama, CPU)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers
from data import Corpus, eval_windows, train_batch
from torch import nn

import sparsec.prune as prune

VOCAB = 256  # bytes
WEIGHT_DECAY = 0.01
BETAS = (0.9, 0.95)
CLIP = 1.0


@dataclass(frozen=True)
class Setup:
    """Everything that fixes a run's cost and the meaning of its numbers (part of every cache key)."""

    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    seq: int = 128
    batch: int = 8
    steps: int = 300  # dense and every sparse-from-scratch run
    warmup: int = 15
    ft_steps: int = 75  # short fine-tune after one-shot pruning (mask kept)
    gradual_steps: int = 150  # gradual magnitude / movement, starting from the dense model
    rewind_step: int = 15  # IMP rewinds here (the end of warm-up)
    calib_batches: int = 8  # one-shot calibration: batches of ``batch`` train windows
    val_windows: int = 256
    test_windows: int = 512
    max_files: int | None = None


def make_lm(setup: Setup, seed: int) -> transformers.LlamaForCausalLM:
    """A random-init Llama decoder over bytes; init drawn from ``seed``."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=setup.hidden, intermediate_size=setup.intermediate,
        num_hidden_layers=setup.layers, num_attention_heads=setup.heads, num_key_value_heads=setup.heads,
        max_position_embeddings=setup.seq, tie_word_embeddings=False, use_cache=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return transformers.LlamaForCausalLM(cfg)


def prunable_names(model: nn.Module) -> list[str]:
    """Every Linear of the decoder blocks (q/k/v/o and the MLP); embeddings and lm_head stay dense."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] != "lm_head"]


def loss_of(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    logits = model(windows[:, :-1]).logits
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), windows[:, 1:].reshape(-1))


class Evaluator:
    """Perplexity on fixed val/test windows (the same bytes for every model)."""

    def __init__(self, corpus: Corpus, setup: Setup) -> None:
        self.val = eval_windows(corpus.val.tokens, setup.val_windows, setup.seq)
        self.test = eval_windows(corpus.test.tokens, setup.test_windows, setup.seq)

    @staticmethod
    @torch.no_grad()
    def ppl(model: nn.Module, windows: torch.Tensor, chunk: int = 32) -> float:
        was = model.training
        model.eval()
        total, count = 0.0, 0
        for i in range(0, len(windows), chunk):
            w = windows[i:i + chunk]
            total += float(loss_of(model, w)) * w[:, 1:].numel()
            count += w[:, 1:].numel()
        model.train(was)
        return math.exp(total / count)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine to 10 % of ``peak`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def train(model: nn.Module, corpus: Corpus, setup: Setup, *, lr: float, total_steps: int, seed: int,
          warmup: int | None = None, start_step: int = 0,
          prepare: Callable[[torch.optim.Optimizer], object] | None = None,
          on_step: Callable[[int], None] | None = None) -> None:
    """AdamW on random train windows, warm-up + cosine over ``total_steps``, run from ``start_step``.

    ``prepare(optimizer)`` runs before the first step (a sparsifier gets the optimizer there) and may
    return an object whose ``step()`` is called after every ``optimizer.step()``, as in torch.ao.
    ``start_step > 0`` resumes the schedule mid-way (IMP rewinding).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=BETAS, weight_decay=WEIGHT_DECAY)
    sparsifier = prepare(opt) if prepare is not None else None
    gen = torch.Generator().manual_seed(seed)
    warmup = setup.warmup if warmup is None else warmup
    model.train()
    for step in range(start_step, total_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total_steps, lr, warmup)
        loss = loss_of(model, train_batch(corpus.train.tokens, setup.batch, setup.seq, gen))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {step} (loss {float(loss)}); lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        if sparsifier is not None and hasattr(sparsifier, "step"):
            sparsifier.step()
        if on_step is not None:
            on_step(step + 1)


def calibration(corpus: Corpus, setup: Setup, seed: int) -> list[torch.Tensor]:
    """One-shot calibration inputs: ``calib_batches`` batches of train windows (input ids only)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    return [train_batch(corpus.train.tokens, setup.batch, setup.seq, gen)[:, :-1]
            for _ in range(setup.calib_batches)]


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fresh_copy(setup: Setup, state: dict[str, torch.Tensor], seed: int) -> transformers.LlamaForCausalLM:
    model = make_lm(setup, seed)
    model.load_state_dict(state)
    return model


def block_sparsity(model: nn.Module) -> float:
    """Exact zeros over the prunable (block) Linear weights, in %, read from the effective weights."""
    mods = dict(model.named_modules())
    zeros = total = 0
    for n in prunable_names(model):
        w = mods[n].weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return 100.0 * zeros / total


def finalize_checked(model: nn.Module) -> nn.Module:
    """Bake the masks; nothing of the pruning machinery may be left for the compiler."""
    prune.finalize(model)
    for m in model.modules():
        if hasattr(m, "parametrizations"):
            raise AssertionError(f"finalize left a parametrization on {type(m).__name__}")
    return model
