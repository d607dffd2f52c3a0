"""Backward through compiled sparse linears: gradients against eager, every format and epilogue."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsec

FORMATS = ["csr", "bsr16x16", "nm2:4", "coo"]
ACTS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "tanh": torch.nn.Tanh,
        None: torch.nn.Identity}


def prune_(w: torch.Tensor, fmt: str, gen: torch.Generator) -> None:
    """Zero ``w`` in place to a pattern ``fmt`` holds exactly."""
    with torch.no_grad():
        if fmt.startswith("nm"):
            g = w.view(-1, 4)
            g.scatter_(1, g.abs().argsort(1)[:, :2], 0)
        elif fmt.startswith("bsr"):
            keep = torch.rand(w.shape[0] // 16, w.shape[1] // 16, generator=gen) > 0.7
            w.mul_(keep.repeat_interleave(16, 0).repeat_interleave(16, 1))
        else:
            w.mul_(torch.rand(w.shape, generator=gen) > 0.85)


class Block(torch.nn.Module):
    def __init__(self, d: int, h: int, act: str | None, residual: bool) -> None:
        super().__init__()
        self.up, self.act, self.norm = torch.nn.Linear(d, h), ACTS[act](), torch.nn.LayerNorm(h)
        self.down, self.residual = torch.nn.Linear(h, d), residual

    def forward(self, x):
        y = self.down(self.norm(self.act(self.up(x))))
        return y + x if self.residual else y


def grads(model, fn, x):
    model.zero_grad()
    x = x.clone().requires_grad_()
    fn(x).pow(2).sum().backward()
    return x.grad, {n: p.grad.clone() for n, p in model.named_parameters()}


def check(model, fmt, x):
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format=fmt, calibrate=False,
                             min_weight_numel=0)
    assert {layer.format for layer in cm.report().layers} == {fmt}
    gx_e, gp_e = grads(model, model, x)
    gx_c, gp_c = grads(model, cm, x)
    assert torch.linalg.norm(gx_c - gx_e) <= 1e-4 * torch.linalg.norm(gx_e)
    for name, p in model.named_parameters():
        want = gp_e[name] * (p != 0) if name.endswith(("up.weight", "down.weight")) else gp_e[name]
        assert torch.linalg.norm(gp_c[name] - want) <= 1e-4 * torch.linalg.norm(want) + 1e-7, name
        if name.endswith(("up.weight", "down.weight")):
            assert torch.all(gp_c[name][p == 0] == 0), name  # nothing outside the stored positions


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("act,residual", [("relu", True), ("gelu", False), ("silu", True), ("tanh", False),
                                          (None, True)])
def test_gradients_match_eager(fmt, act, residual):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = Block(64, 128, act, residual)
    prune_(model.up.weight, fmt, gen)
    prune_(model.down.weight, fmt, gen)
    check(model, fmt, torch.randn(24, 64, generator=gen))


@settings(max_examples=10, deadline=None)
@given(d=st.sampled_from([32, 48, 80]), h=st.sampled_from([64, 96]), n=st.integers(1, 40),
       fmt=st.sampled_from(FORMATS), act=st.sampled_from(list(ACTS)), residual=st.booleans(),
       seed=st.integers(0, 100))
def test_gradients_random_shapes(d, h, n, fmt, act, residual, seed):
    """Every format and fused epilogue (bias, activation, residual) on random shapes, N = 1 included."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Block(d, h, act, residual)
    prune_(model.up.weight, fmt, gen)
    prune_(model.down.weight, fmt, gen)
    check(model, fmt, torch.randn(n, d, generator=gen))


def test_custom_op_is_registered_with_fake_kernel():
    model = Block(64, 128, "relu", False)
    prune_(model.up.weight, "csr", torch.Generator().manual_seed(1))
    cm = sparsec.sparse_compile(model, (torch.randn(8, 64),), target="cpu", force_format="csr", calibrate=False)
    mod = cm.graph_module.sparsec_up
    mod.enable_training(*mod.train_refs)
    x, w = torch.empty(5, 64, device="meta"), torch.empty(128, 64, device="meta")
    y = torch.ops.sparsec.sparse_linear(x, w, None, None, mod._handle)  # the fake kernel: shapes only
    assert tuple(y.shape) == (5, 128) and y.device.type == "meta"


@pytest.mark.parametrize("threads,n", [(2, 300), (1, 17)])
def test_gradients_through_slabs_and_passes(threads, n):
    """Two row slabs (threads) and N over one kernel pass (256 lanes): the SDDMM and dx paths split work."""
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(48, 96), torch.nn.ReLU(), torch.nn.Linear(96, 40), torch.nn.Tanh())
    prune_(model[0].weight, "csr", gen)
    prune_(model[2].weight, "csr", gen)
    x = torch.randn(n, 48, generator=gen)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", calibrate=False,
                                min_weight_numel=0, threads=threads)
    assert len(cm.graph_module.sparsec_0.slabs) == threads
    gx_e, gp_e = grads(model, model, x)
    gx_c, gp_c = grads(model, cm, x)
    torch.testing.assert_close(gx_c, gx_e, rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        want = gp_e[name] * (p != 0) if name.endswith("weight") else gp_e[name]
        torch.testing.assert_close(gp_c[name], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["csr", "coo"])
@pytest.mark.parametrize("at", ["forward", "backward"])
def test_dense_weight_grads_on_request(fmt, at):
    """Inside sparsec.dense_weight_grads(): the dense gradient (pruned positions too) of every sparse
    weight, as eager computes it; .grad stays masked; outside the block nothing is collected."""
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    model = Block(64, 128, "relu", True)
    prune_(model.up.weight, fmt, gen)
    prune_(model.down.weight, fmt, gen)
    x = torch.randn(12, 64, generator=gen)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format=fmt, calibrate=False, min_weight_numel=0)
    _, want = grads(model, model, x)
    model.zero_grad()
    if at == "forward":
        with sparsec.dense_weight_grads() as dense:
            loss = cm(x).pow(2).sum()
        loss.backward()
    else:
        loss = cm(x).pow(2).sum()
        with sparsec.dense_weight_grads() as dense:
            loss.backward()
    assert set(map(id, dense)) == {id(model.up.weight), id(model.down.weight)}
    for name in ("up.weight", "down.weight"):
        p = model.get_parameter(name)
        torch.testing.assert_close(dense[p], want[name], rtol=1e-4, atol=1e-5)
        assert bool((dense[p][p == 0] != 0).any())  # pruned positions have a gradient
        torch.testing.assert_close(p.grad, want[name] * (p != 0), rtol=1e-4, atol=1e-5)
    model.zero_grad()
    cm(x).pow(2).sum().backward()  # outside: the masked SDDMM path, nothing collected
    assert len(dense) == 2
    torch.testing.assert_close(model.up.weight.grad, want["up.weight"] * (model.up.weight != 0),
                               rtol=1e-4, atol=1e-5)


def test_bert_layer_gradients_match_eager():
    """A transformers BertLayer (attention, GELU MLP, LayerNorm, residuals): every parameter's gradient."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert.modeling_bert import BertLayer

    cfg = transformers.BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    layer = BertLayer(cfg)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x)[0]

    model = Wrap().eval()
    gen = torch.Generator().manual_seed(0)
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for n in linears:
        prune_(model.get_submodule(n).weight, "csr", gen)
    x = torch.randn(2, 16, 64, generator=gen)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", calibrate=False, min_weight_numel=0)
    assert {layer.format for layer in cm.report().layers} == {"csr"}
    r = torch.randn(2, 16, 64, generator=gen)  # the output is LayerNorm'd: sum(y^2) is nearly constant

    def proj(fn):
        return lambda t: fn(t) * r  # grads() takes sum((y * r)^2)

    gx_e, gp_e = grads(model, proj(model), x)
    gx_c, gp_c = grads(model, proj(cm), x)
    assert torch.linalg.norm(gx_c - gx_e) <= 1e-4 * torch.linalg.norm(gx_e)
    for name, p in model.named_parameters():
        sparse = name.rsplit(".", 1)[0] in linears and name.endswith("weight")
        want = gp_e[name] * (p != 0) if sparse else gp_e[name]
        assert torch.linalg.norm(gp_c[name] - want) <= 1e-4 * torch.linalg.norm(want) + 1e-7, name
