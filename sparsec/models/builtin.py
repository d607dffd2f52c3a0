"""An MLP and a pre-LayerNorm transformer block, written with plain nn.Linear so every projection is a
weight the compiler can make sparse (nn.TransformerEncoderLayer's fused fast path hides them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear-GELU-Linear-ReLU-Linear."""

    def __init__(self, d_in: int = 768, d_hidden: int = 3072, d_out: int = 768) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_hidden // 4)
        self.fc3 = nn.Linear(d_hidden // 4, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """MLP forward."""
        return self.fc3(F.relu(self.fc2(F.gelu(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-LN block: x + Attn(LN(x)); then x + FFN(LN(x)). Attention (softmax(QK^T)V) stays dense."""

    def __init__(self, d_model: int = 512, n_heads: int = 8, d_ff: int = 2048) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, seq, d_model]."""
        b, s, d = x.shape
        h = self.ln1(x)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.n_heads, d // self.n_heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(heads(self.q(h)), heads(self.k(h)), heads(self.v(h)))
        x = x + self.o(a.transpose(1, 2).reshape(b, s, d))
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


def demo_models() -> dict[str, tuple[nn.Module, tuple]]:
    """The demo's models with example inputs (seeded, random weights)."""
    torch.manual_seed(0)
    return {
        "mlp": (MLP(768, 3072, 768).eval(), (torch.randn(64, 768),)),
        "transformer_block": (TransformerBlock(512, 8, 2048).eval(), (torch.randn(1, 128, 512),)),
    }
