"""Tiny transformers families (hidden 64, 2 layers, random weights from configs) and plain-torch pruning.

``SWEEP`` holds the families ``tests/models/test_hf_families.py`` compiles three ways each, ``PROBED`` more
families ``examples/probe_families.py`` compiles the same way, ``UNCAPTURABLE`` the families torch.export
cannot capture and why (docs/models.md lists them all with their status). Nothing is downloaded, and
transformers is imported only when a model is built (it is a test / bench extra, not a dependency).

The pruning is what a new user writes: a mask multiplied into every weight, no sparsec.prune. It masks
``nn.Linear``, transformers' ``Conv1D`` (GPT-2; weight stored [in, out]) and ``nn.Conv2d`` with groups 1
(filter read as [out, in*kh*kw]), each along its reduction dimension, which is where N:M kernels need it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.utils import _pytree as pytree


class Family(NamedTuple):
    """One family: its config from the transformers module, the model class name, the input kind."""

    config: Callable  # transformers module -> a tiny config
    model: str  # class name in transformers
    kind: str  # "text", "seq2seq", "image", "audio" (Whisper features) or "wave" (raw audio)
    dynamic: bool = True  # False: capture static shapes (Swin's dynamic export takes ~100 s)


_H = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=128)
_KV = dict(_H, num_key_value_heads=2)
_S2S = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=128, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, decoder_start_token_id=0)
_GPT = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=128)
_VIS = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
            patch_size=8)

#: the test sweep (tests/models/test_hf_families.py)
SWEEP: dict[str, Family] = {
    "llama": Family(lambda T: T.LlamaConfig(**_KV), "LlamaModel", "text"),
    "mistral": Family(lambda T: T.MistralConfig(**_KV), "MistralModel", "text"),
    "qwen2": Family(lambda T: T.Qwen2Config(**_KV), "Qwen2Model", "text"),
    "phi": Family(lambda T: T.PhiConfig(**_H), "PhiModel", "text"),
    "gpt_neox": Family(lambda T: T.GPTNeoXConfig(**_H), "GPTNeoXModel", "text"),
    "gptj": Family(lambda T: T.GPTJConfig(**_GPT, rotary_dim=8), "GPTJModel", "text"),
    "opt": Family(lambda T: T.OPTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                                        vocab_size=128, word_embed_proj_dim=64), "OPTModel", "text"),
    "gemma": Family(lambda T: T.GemmaConfig(**_KV, head_dim=16), "GemmaModel", "text"),
    "falcon": Family(lambda T: T.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                              vocab_size=128), "FalconModel", "text"),
    "bloom": Family(lambda T: T.BloomConfig(hidden_size=64, n_layer=2, n_head=4, vocab_size=128), "BloomModel",
                    "text"),
    "mpt": Family(lambda T: T.MptConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=128), "MptModel", "text"),
    "mixtral": Family(lambda T: T.MixtralConfig(**_KV, num_local_experts=4, num_experts_per_tok=2), "MixtralModel",
                      "text"),
    "t5": Family(lambda T: T.T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, vocab_size=128),
                 "T5Model", "seq2seq"),
    "bart": Family(lambda T: T.BartConfig(**_S2S), "BartModel", "seq2seq"),
    "whisper": Family(lambda T: T.WhisperConfig(**_S2S, num_mel_bins=16, max_source_positions=16,
                                                max_target_positions=32), "WhisperModel", "audio"),
    "bert": Family(lambda T: T.BertConfig(**_H), "BertModel", "text"),
    "roberta": Family(lambda T: T.RobertaConfig(**_H), "RobertaModel", "text"),
    "albert": Family(lambda T: T.AlbertConfig(**_H, embedding_size=32), "AlbertModel", "text"),
    "deberta": Family(lambda T: T.DebertaV2Config(**_H), "DebertaV2Model", "text"),
    "vit": Family(lambda T: T.ViTConfig(**_VIS), "ViTModel", "image"),
    "swin": Family(lambda T: T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                          num_heads=[2, 4], window_size=4), "SwinModel", "image", dynamic=False),
}

#: more families, compiled by examples/probe_families.py (not in CI: about 5 minutes)
PROBED: dict[str, Family] = {
    "gpt2": Family(lambda T: T.GPT2Config(**_GPT), "GPT2Model", "text"),
    "gpt_bigcode": Family(lambda T: T.GPTBigCodeConfig(**_GPT), "GPTBigCodeModel", "text"),
    "codegen": Family(lambda T: T.CodeGenConfig(**_GPT, rotary_dim=8), "CodeGenModel", "text"),
    "stablelm": Family(lambda T: T.StableLmConfig(**_KV), "StableLmModel", "text"),
    "starcoder2": Family(lambda T: T.Starcoder2Config(**_KV), "Starcoder2Model", "text"),
    "phi3": Family(lambda T: T.Phi3Config(**_KV, pad_token_id=0), "Phi3Model", "text"),
    "qwen2_moe": Family(lambda T: T.Qwen2MoeConfig(**_KV, num_experts=4, num_experts_per_tok=2,
                                                   moe_intermediate_size=64, shared_expert_intermediate_size=64),
                        "Qwen2MoeModel", "text"),
    "olmo": Family(lambda T: T.OlmoConfig(**_KV), "OlmoModel", "text"),
    "gemma2": Family(lambda T: T.Gemma2Config(**_KV, head_dim=16), "Gemma2Model", "text"),
    "qwen3": Family(lambda T: T.Qwen3Config(**_KV, head_dim=16), "Qwen3Model", "text"),
    "granite": Family(lambda T: T.GraniteConfig(**_KV), "GraniteModel", "text"),
    "electra": Family(lambda T: T.ElectraConfig(**_H, embedding_size=32), "ElectraModel", "text"),
    "xlm_roberta": Family(lambda T: T.XLMRobertaConfig(**_H), "XLMRobertaModel", "text"),
    "distilbert": Family(lambda T: T.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                                      vocab_size=128), "DistilBertModel", "text"),
    "mobilebert": Family(lambda T: T.MobileBertConfig(**_H, embedding_size=32, intra_bottleneck_size=32,
                                                      true_hidden_size=32), "MobileBertModel", "text"),
    "mpnet": Family(lambda T: T.MPNetConfig(**_H), "MPNetModel", "text"),
    "funnel": Family(lambda T: T.FunnelConfig(d_model=64, n_head=4, d_head=16, d_inner=128, block_sizes=[1, 1],
                                              vocab_size=128), "FunnelModel", "text"),
    "reformer": Family(lambda T: T.ReformerConfig(hidden_size=64, num_attention_heads=2, attention_head_size=32,
                                                  feed_forward_size=128, vocab_size=128,
                                                  attn_layers=["local", "local"], axial_pos_shape=[2, 4],
                                                  axial_pos_embds_dim=[32, 32], local_attn_chunk_length=4,
                                                  is_decoder=False), "ReformerModel", "text"),
    "mbart": Family(lambda T: T.MBartConfig(**_S2S), "MBartModel", "seq2seq"),
    "pegasus": Family(lambda T: T.PegasusConfig(**_S2S), "PegasusModel", "seq2seq"),
    "marian": Family(lambda T: T.MarianConfig(**_S2S), "MarianModel", "seq2seq"),
    "mt5": Family(lambda T: T.MT5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, vocab_size=128),
                  "MT5Model", "seq2seq"),
    "deit": Family(lambda T: T.DeiTConfig(**_VIS), "DeiTModel", "image"),
    "beit": Family(lambda T: T.BeitConfig(**_VIS), "BeitModel", "image"),
    "dinov2": Family(lambda T: T.Dinov2Config(**_VIS), "Dinov2Model", "image"),
    "convnext": Family(lambda T: T.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
                                                  image_size=32), "ConvNextModel", "image"),
    "wav2vec2": Family(lambda T: T.Wav2Vec2Config(**_H, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                                                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
                       "Wav2Vec2Model", "wave"),
    "clip_text": Family(lambda T: T.CLIPTextConfig(**_H, max_position_embeddings=32), "CLIPTextModel", "text"),
}

#: families torch.export (torch 2.13) cannot capture, with the reason; the sweep expects them to fail
UNCAPTURABLE: dict[str, tuple[Family, str]] = {
    "longformer": (Family(lambda T: T.LongformerConfig(**_H, attention_window=4), "LongformerModel", "text"),
                   "sliding-window attention sizes its chunks with a tensor (torch.div(seq_len, window_overlap, "
                   "rounding_mode='trunc') fed to .view()), and export cannot guard on that data-dependent size "
                   "(4*u1 < s70); it also branches on is_index_global_attn.flatten().any().item()"),
    "led": (Family(lambda T: T.LEDConfig(**_S2S, attention_window=4, max_encoder_position_embeddings=64,
                                         max_decoder_position_embeddings=64), "LEDModel", "seq2seq"),
            "its Longformer encoder branches on is_index_global_attn.flatten().any().item() (a Python bool "
            "from a tensor), and export cannot guard on the data-dependent Eq(u0, 1)"),
}

#: every family the module knows
ALL: dict[str, Family] = {**SWEEP, **PROBED, **{k: f for k, (f, _) in UNCAPTURABLE.items()}}

#: pruning -> the format forced for it (at hidden 64 the cost model would keep most layers dense)
PRUNINGS = {"unstructured90": "csr", "nm2:4": "nm2:4", "block16": "bsr16x16"}


def build(family: str) -> torch.nn.Module:
    """The family's tiny model, seeded, in eval mode, with ``use_cache`` off (a cache cannot be exported)."""
    import transformers

    fam = ALL[family]
    config = fam.config(transformers)
    if hasattr(config, "use_cache"):
        config.use_cache = False
    torch.manual_seed(0)
    return getattr(transformers, fam.model)(config).eval()


def inputs(family: str, seed: int) -> tuple[tuple, dict]:
    """(args, kwargs) of the family's input kind; another seed is another input of the same shapes."""
    g = torch.Generator().manual_seed(seed)
    kind = ALL[family].kind
    if kind == "image":
        return (torch.randn(2, 3, 32, 32, generator=g),), {}
    if kind == "wave":
        return (torch.randn(2, 400, generator=g),), {}
    if kind == "audio":
        return (torch.randn(2, 16, 32, generator=g),), {"decoder_input_ids": torch.randint(3, 128, (2, 4), generator=g)}
    ids = torch.randint(3, 128, (2, 8), generator=g)
    if kind == "seq2seq":
        return (ids,), {"decoder_input_ids": torch.randint(3, 128, (2, 4), generator=g)}
    return (ids,), {}


def plain_mask(w: torch.Tensor, how: str) -> torch.Tensor:
    """Keep-mask of a 2-d weight [out, in] for one of ``PRUNINGS``: the largest 10% by magnitude, the top 2 of
    every 4 consecutive inputs, or a random quarter of the 16x16 blocks (seeded by the size)."""
    if how == "unstructured90":
        k = max(1, int(0.1 * w.numel()))
        return w.abs() >= w.abs().flatten().kthvalue(w.numel() - k + 1).values
    if how == "nm2:4":
        pad = (-w.shape[1]) % 4
        g = torch.nn.functional.pad(w.abs(), (0, pad)).reshape(w.shape[0], -1, 4)
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(2, g.topk(2, dim=2).indices, True)
        return keep.reshape(w.shape[0], -1)[:, : w.shape[1]]
    if how == "block16":
        rows, cols = -(-w.shape[0] // 16), -(-w.shape[1] // 16)
        keep = torch.rand(rows, cols, generator=torch.Generator().manual_seed(w.numel())) < 0.25
        return keep.repeat_interleave(16, 0).repeat_interleave(16, 1)[: w.shape[0], : w.shape[1]]
    raise ValueError(f"unknown pruning {how!r}; known: {', '.join(PRUNINGS)}")


def _as_out_in(mod: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """How to view ``mod.weight`` as [out, in] (a view, so masking it writes the weight), or None."""
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    if isinstance(mod, torch.nn.Linear):
        return lambda w: w
    if conv1d is not None and isinstance(mod, conv1d):
        return lambda w: w.t()  # stored [in, out]
    if isinstance(mod, torch.nn.Conv2d) and mod.groups == 1:
        return lambda w: w.view(w.shape[0], -1)
    return None


def prune(model: torch.nn.Module, how: str) -> int:
    """Zero the weights of every Linear, Conv1D and Conv2d (groups 1) by ``how`` along their reduction
    dimension, in place; returns how many weights were masked."""
    count = 0
    with torch.no_grad():
        for mod in model.modules():
            view = _as_out_in(mod)
            if view is not None and isinstance(getattr(mod, "weight", None), torch.Tensor):
                w = view(mod.weight)
                w.mul_(plain_mask(w, how))
                count += 1
    return count


def output_tensors(out) -> list[torch.Tensor]:
    """Every tensor in a model's (nested, ModelOutput) result, in order."""
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
