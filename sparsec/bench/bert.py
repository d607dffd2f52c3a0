"""The BERT-base model the end-to-end and compile-time benchmarks share (random weights, no download)."""

from __future__ import annotations

import torch

#: BERT-base (HF BertConfig): hidden 768, 12 layers, 12 heads, FFN 3072; seq 128, batch 1
BERT_SEQ = 128


def bert_model(layers: int = 12, seed: int = 0) -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    """HF ``BertModel`` with BERT-base's config and random weights, eval mode; input ids [1, 128]."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=3072)
    model = BertModel(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, BERT_SEQ), generator=torch.Generator().manual_seed(seed))
    return model, (ids,)
