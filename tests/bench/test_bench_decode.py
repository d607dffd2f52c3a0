"""bench_decode's approach on a tiny HF Llama: compiled MLPs and attention projections swapped into the model
decode with HF's KV cache like eager does (no timing asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from sparsec.codegen.mlir import emit_bitmap

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not emit_bitmap.available(), reason="the bitmap kernels need x86-64 with SSSE3/AVX2/F16C")


def _bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_decode.py"
    spec = importlib.util.spec_from_file_location("bench_decode", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_swapped_parts_decode_like_eager(monkeypatch):
    bench = _bench()
    tiny = transformers.LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=4, vocab_size=128, max_position_embeddings=64)
    monkeypatch.setattr(bench, "llama_config", lambda quick: tiny)
    model = bench.build_llama(True)
    w = model.model.layers[0].mlp.gate_proj.weight
    assert w.dtype == torch.bfloat16 and float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    from sparsec import knobs

    with knobs.scope(poison_outputs=True):
        swaps, formats = bench.compile_parts(model, threads=2)
    assert len(swaps) == 2 * 5 and formats
    prompt = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(0))
    bench.use(swaps, False)
    _, eager_seq, eager_logits = bench.decode(model, prompt, 4, bench._clock(False))
    bench.use(swaps, True)
    assert model.model.layers[1].mlp is swaps[5][3]
    _, seq, logits = bench.decode(model, prompt, 4, bench._clock(False))
    err = (logits - eager_logits).abs().max() / eager_logits.abs().max().clamp_min(1.0)
    assert err < 3e-2, err
    bench.use(swaps, False)
    bd = bench.step_breakdown(model, swaps, prompt, 2, bench._clock(False))
    for k in ("sparsec", "eager"):  # hooks saw the parts and the head; the parts sum to the step
        v = bd[k]
        assert v["parts"] > 0 and v["lm_head"] > 0 and v["rest"] >= 0
        assert v["parts"] + v["lm_head"] + v["rest"] == pytest.approx(v["step"])
    assert model.model.layers[1].mlp is swaps[5][2]  # eager parts back in, hooks removed
    assert not model.lm_head._forward_hooks and not model.lm_head._forward_pre_hooks


def test_prune_2_4_keeps_two_of_four():
    bench = _bench()
    w = torch.randn(8, 32)
    bench.prune_2_4_(w)
    assert int((w.view(8, 8, 4) != 0).sum(2).max()) == 2
