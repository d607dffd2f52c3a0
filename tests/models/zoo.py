"""The models of the model tests, built from configs with random weights (nothing is downloaded).

Each builder returns ``(model, example_inputs)`` in eval mode with its weights already sparse, so a test
(and examples/time_models.py) can compile it and compare with eager.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import sparsec.prune as prune


def magnitude_prune(model: nn.Module, sparsity: float, modules=None) -> nn.Module:
    """Zero ``sparsity`` of every Linear / Conv weight (or of ``modules``) by magnitude, baked in."""
    pruner = prune.MagnitudePruner(sparsity)
    pruner.prepare(model, modules)
    pruner.step()
    return pruner.finalize().eval()


# --- transformers -----------------------------------------------------------------------------------
def bert(hidden: int = 128, layers: int = 2, heads: int = 4, inter: int = 512, seq: int = 32, batch: int = 2,
         sparsity: float = 0.9, seed: int = 0):
    """HF BertModel with its encoder's Linear weights pruned; an attention mask with padding."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, vocab_size=1000, max_position_embeddings=max(512, seq))
    model = BertModel(cfg).eval()
    magnitude_prune(model, sparsity, [m for m in model.encoder.modules() if isinstance(m, nn.Linear)])
    return model.eval(), bert_inputs(batch, seq, seed)


def bert_inputs(batch: int, seq: int, seed: int = 1, vocab: int = 1000):
    """(input_ids, attention_mask): the last rows are padded (mask 0) from a third of the sequence on."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, max(1, seq // 3):] = 0
    return ids, mask


def gpt2(embd: int = 128, layers: int = 2, heads: int = 4, seq: int = 32, batch: int = 2, sparsity: float = 0.9,
         seed: int = 0):
    """HF GPT2Model (use_cache=False): its Conv1D weights are stored [in, out]; every one pruned."""
    from transformers import GPT2Config, GPT2Model
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(seed)
    cfg = GPT2Config(n_embd=embd, n_layer=layers, n_head=heads, vocab_size=1000, n_positions=max(256, seq),
                     use_cache=False, bos_token_id=0, eos_token_id=0)
    model = GPT2Model(cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Conv1D):  # not an nn.Linear: prune by magnitude here
                w = m.weight
                k = int(w.numel() * sparsity)
                w.mul_(w.abs() > w.abs().flatten().kthvalue(k).values)
    g = torch.Generator().manual_seed(seed + 1)
    return model, (torch.randint(0, 1000, (batch, seq), generator=g),)


# --- CNN ---------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """Conv-BN-ReLU-pool twice, a residual 1x1 conv, global pooling and a Linear head."""

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.c2, self.b2 = nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)
        self.c3 = nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2)
        self.c4 = nn.Conv2d(2 * width, 2 * width, 1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        x = F.relu(self.c4(F.relu(self.c3(x))) + x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding them is tested for real."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


def cnn(width: int = 32, batch: int = 2, size: int = 32, sparsity: float = 0.8, seed: int = 0):
    """SmallCNN with every conv pruned by magnitude and random BatchNorm statistics."""
    torch.manual_seed(seed)
    model = randomize_bn(SmallCNN(width), seed)
    magnitude_prune(model, sparsity, [model.c1, model.c2, model.c3, model.c4])
    return model.eval(), (torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + 1)),)


# --- mixture of experts ------------------------------------------------------------------------------
class Expert(nn.Module):
    """Linear-GELU-Linear."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TopKMoE(nn.Module):
    """Router, softmax, top-k, each expert on the tokens routed to it, weighted sum.

    Routing is data-dependent (``torch.where`` on the chosen experts): torch.export captures it with
    unbacked sizes, and the expert layers see a different number of tokens on every call.
    """

    def __init__(self, d: int = 64, hidden: int = 256, experts: int = 4, k: int = 2) -> None:
        super().__init__()
        self.router = nn.Linear(d, experts)
        self.experts = nn.ModuleList(Expert(d, hidden) for _ in range(experts))
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        weights, chosen = F.softmax(self.router(tokens), dim=-1).topk(self.k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(chosen == e)
            out = out.index_add(0, tok, expert(tokens[tok]) * weights[tok, slot].unsqueeze(-1))
        return out.reshape(shape)


def moe(d: int = 64, hidden: int = 256, experts: int = 4, k: int = 2, batch: int = 2, seq: int = 16,
        sparsity: float = 0.9, seed: int = 0):
    """TopKMoE with every expert's weights pruned (the router stays dense)."""
    torch.manual_seed(seed)
    model = TopKMoE(d, hidden, experts, k).eval()
    magnitude_prune(model, sparsity, [m for e in model.experts for m in (e.fc1, e.fc2)])
    return model, (torch.randn(batch, seq, d, generator=torch.Generator().manual_seed(seed + 1)),)


# --- sparse operands that are not Linear weights -----------------------------------------------------
def sparse_matrix(rows: int, cols: int, density: float, seed: int) -> torch.Tensor:
    """A random matrix with about ``density`` of its entries nonzero."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)


class SpMV(nn.Module):
    """y = A v with a constant sparse buffer A."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", a)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.mv(self.A, v)


class SpMM(nn.Module):
    """relu(A @ H) (constant left operand, batched H allowed) and H^T @ B (constant right operand)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", a)
        self.B = nn.Parameter(b, requires_grad=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.relu(self.A @ h), h.transpose(-1, -2) @ self.B


class GCN(nn.Module):
    """Two graph convolutions relu(A_hat X W + b) with a fixed sparse normalized adjacency A_hat."""

    def __init__(self, nodes: int = 256, f_in: int = 32, f_hidden: int = 64, f_out: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        adj = (torch.rand(nodes, nodes, generator=g) < 0.02).float()
        adj = ((adj + adj.t() + torch.eye(nodes)) > 0).float()
        deg = adj.sum(1).rsqrt()
        self.register_buffer("adj", deg[:, None] * adj * deg[None, :])
        self.l1, self.l2 = nn.Linear(f_in, f_hidden), nn.Linear(f_hidden, f_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.adj @ self.l1(x))
        return self.adj @ self.l2(h)


class SDDMM(nn.Module):
    """S * (X @ Y^T): a sampled dense-dense product over a constant sparse S."""

    def __init__(self, s: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("S", s)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.S * (x @ y.transpose(-1, -2))


class RowScale(nn.Module):
    """s[:, None] * H with a mostly-zero constant scale per row (a sparse diagonal)."""

    def __init__(self, s: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("s", s)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.s[:, None] * h


class MaskedReduce(nn.Module):
    """Reductions of S * X over S's dimensions: per row, per column (keepdim) and in total."""

    def __init__(self, s: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("S", s)

    def forward(self, x: torch.Tensor):
        return (self.S * x).sum(-1), (x * self.S).sum(-2, keepdim=True), (self.S * x).sum((-2, -1))


# --- structural sparsity -----------------------------------------------------------------------------
class ResMLP(nn.Module):
    """fc2's output is added to fc1's: their channels form one group."""

    def __init__(self, d_in: int = 64, hidden: int = 256, classes: int = 10) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(d_in, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.head(torch.relu(h + self.fc2(h)))


class FlattenCNN(nn.Module):
    """Conv-BN-ReLU-pool twice, then flatten into a Linear (channel c owns H*W consecutive inputs)."""

    def __init__(self, width: int = 16, size: int = 16) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.c2, self.b2 = nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width * (size // 4) ** 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


def channel_pruned(model: nn.Module, inputs: tuple, sparsity: float = 0.5) -> nn.Module:
    """Zero ``sparsity`` of the channels of every prunable group (weights, biases and BatchNorms)."""
    pruner = prune.ChannelPruner(sparsity)
    pruner.prepare(model, example_inputs=inputs)
    pruner.step()
    return pruner.finalize().eval()
