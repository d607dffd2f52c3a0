"""bert-base (768 hidden, 12 layers, 12 heads, FFN 3072) at sequence length 128, encoder Linears pruned.

Random weights from the config (nothing is downloaded). Every encoder Linear loses ``--sparsity`` of its
weights by magnitude; the compiled model is checked against eager (relative error <= 1e-4, with an
attention mask that pads the last sequence) and both are timed in this process.

    python examples/bert_base.py [--sparsity 0.9] [--batch 1] [--seq 128] [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from sparsec.demo import timings


def build(sparsity: float, seed: int = 0) -> nn.Module:
    """BertModel(bert-base config) in eval mode with its encoder's Linear weights pruned by magnitude."""
    from transformers import BertConfig, BertModel

    import sparsec.prune as prune

    torch.manual_seed(seed)
    model = BertModel(BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                 intermediate_size=3072)).eval()
    pruner = prune.MagnitudePruner(sparsity)
    pruner.prepare(model, [m for m in model.encoder.modules() if isinstance(m, nn.Linear)])
    pruner.step()
    return pruner.finalize().eval()


def inputs(batch: int, seq: int, vocab: int = 30522) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and an attention mask whose last sequence is padded from the middle on."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq // 2:] = 0
    return ids, mask


def best_and_median(fn, repeats: int) -> tuple[float, float]:
    """(fastest, median) seconds of ``fn()`` after two warm-up calls."""
    times = timings(fn, repeats=repeats, warmup=2)
    return times[0], times[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    import sparsec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)

    model = build(args.sparsity)
    example = inputs(args.batch, args.seq)
    t0 = time.perf_counter()
    cm = sparsec.sparse_compile(model, example, target="cpu")
    compile_s = time.perf_counter() - t0
    with torch.no_grad():
        want = model(*example).last_hidden_state
        got = cm(*example).last_hidden_state
        err = float((got - want).abs().max() / want.abs().max().clamp_min(1.0))
        eager = best_and_median(lambda: model(*example), args.repeats)
        compiled = best_and_median(lambda: cm(*example), args.repeats)
    rep = cm.report()
    formats: dict[str, int] = {}
    for r in rep.layers:
        formats[r.format] = formats.get(r.format, 0) + 1
    print(f"bert-base, batch {args.batch}, seq {args.seq}, encoder Linears {args.sparsity:.0%} zero "
          f"(torch threads={torch.get_num_threads()})")
    print(f"layers by format: {formats}; fused: {sum('residual' in r.fused for r in rep.layers)} residual adds, "
          f"{sum('gelu' in r.fused for r in rep.layers)} GELUs")
    print(f"max error vs eager (relative to the output's scale): {err:.2e}  (tolerance 1e-4)")
    print(f"compile {compile_s:.1f} s; eager {eager[1] * 1e3:.1f} ms (best {eager[0] * 1e3:.1f}), "
          f"sparsec {compiled[1] * 1e3:.1f} ms (best {compiled[0] * 1e3:.1f}); "
          f"eager/compiled {eager[1] / compiled[1]:.2f}x median, {eager[0] / compiled[0]:.2f}x best")
    print("(timings on a shared machine are noisy)")
    return 0 if err <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
