"""Tiny configs (hidden 64, 2 layers, random weights) of the transformers families the sweep compiles."""

from __future__ import annotations

import torch
import transformers as T

_H = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=128)
_KV = dict(_H, num_key_value_heads=2)
_SEQ2SEQ = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=128, pad_token_id=1, bos_token_id=0,
                eos_token_id=2, decoder_start_token_id=0)

#: family -> (config, model class, input kind)
FAMILIES = {
    "llama": (lambda: T.LlamaConfig(**_KV), T.LlamaModel, "text"),
    "mistral": (lambda: T.MistralConfig(**_KV), T.MistralModel, "text"),
    "qwen2": (lambda: T.Qwen2Config(**_KV), T.Qwen2Model, "text"),
    "phi": (lambda: T.PhiConfig(**_H), T.PhiModel, "text"),
    "gpt_neox": (lambda: T.GPTNeoXConfig(**_H), T.GPTNeoXModel, "text"),
    "gptj": (lambda: T.GPTJConfig(n_embd=64, n_layer=2, n_head=4, vocab_size=128, rotary_dim=8), T.GPTJModel, "text"),
    "opt": (lambda: T.OPTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                                vocab_size=128, word_embed_proj_dim=64), T.OPTModel, "text"),
    "gemma": (lambda: T.GemmaConfig(**_KV, head_dim=16), T.GemmaModel, "text"),
    "falcon": (lambda: T.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128),
               T.FalconModel, "text"),
    "bloom": (lambda: T.BloomConfig(hidden_size=64, n_layer=2, n_head=4, vocab_size=128), T.BloomModel, "text"),
    "mpt": (lambda: T.MptConfig(d_model=64, n_layers=2, n_heads=4, vocab_size=128), T.MptModel, "text"),
    "mixtral": (lambda: T.MixtralConfig(**_KV, num_local_experts=4, num_experts_per_tok=2), T.MixtralModel, "text"),
    "t5": (lambda: T.T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, vocab_size=128),
           T.T5Model, "seq2seq"),
    "bart": (lambda: T.BartConfig(**_SEQ2SEQ), T.BartModel, "seq2seq"),
    "whisper": (lambda: T.WhisperConfig(**_SEQ2SEQ, num_mel_bins=16, max_source_positions=16,
                                        max_target_positions=32), T.WhisperModel, "audio"),
    "bert": (lambda: T.BertConfig(**_H), T.BertModel, "text"),
    "roberta": (lambda: T.RobertaConfig(**_H), T.RobertaModel, "text"),
    "albert": (lambda: T.AlbertConfig(**_H, embedding_size=32), T.AlbertModel, "text"),
    "deberta": (lambda: T.DebertaV2Config(**_H), T.DebertaV2Model, "text"),
    "vit": (lambda: T.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                image_size=32, patch_size=8), T.ViTModel, "image"),
    "swin": (lambda: T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                  window_size=4), T.SwinModel, "image"),
}


def build(family: str) -> torch.nn.Module:
    """The family's tiny model in eval mode, seeded, with use_cache off (see docs/models.md)."""
    make_config, cls, _ = FAMILIES[family]
    config = make_config()
    if hasattr(config, "use_cache"):
        config.use_cache = False
    torch.manual_seed(0)
    return cls(config).eval()


def inputs(family: str, seed: int) -> tuple[tuple, dict]:
    """(args, kwargs) of the family's input kind; another seed is another input of the same shapes."""
    g = torch.Generator().manual_seed(seed)
    kind = FAMILIES[family][2]
    if kind == "image":
        return (torch.randn(2, 3, 32, 32, generator=g),), {}
    if kind == "audio":
        return (torch.randn(2, 16, 32, generator=g),), {"decoder_input_ids": torch.randint(3, 128, (2, 4), generator=g)}
    ids = torch.randint(3, 128, (2, 8), generator=g)
    if kind == "seq2seq":
        return (ids,), {"decoder_input_ids": torch.randint(3, 128, (2, 4), generator=g)}
    return (ids,), {}
