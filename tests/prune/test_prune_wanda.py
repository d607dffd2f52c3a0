"""Wanda and SparseGPT against references on small layers with correlated inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsec
from sparsec import prune
from sparsec.errors import InputError


def _correlated(n=512, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 1, d)  # uneven feature norms: what Wanda exploits
    mix = torch.randn(d, d, generator=g) * 0.5 + torch.eye(d)
    return (torch.randn(n, d, generator=g) * scale) @ mix


def _layer(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(32, 24, bias=False)


def _err(layer, dense_w, x):
    return float(((x @ layer.weight.detach().t()) - x @ dense_w.t()).pow(2).mean())


@pytest.mark.parametrize("kw", [{"sparsity": 0.5}, {"pattern": "2:4"}, {"pattern": "4:8"}])
def test_reconstruction_error_ordering_and_pattern(kw):
    x = _correlated()
    batches = list(x.split(128))
    errs = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        layer = _layer()
        w0 = layer.weight.detach().clone()
        if method == "magnitude":
            keep = prune.nm_mask(w0, *map(int, kw["pattern"].split(":"))) if "pattern" in kw else \
                prune.magnitude_masks({"w": w0}, 0.5)["w"]
            with torch.no_grad():
                layer.weight.mul_(keep)
        else:
            getattr(prune, method)(layer, batches, **kw)
        w = layer.weight.detach()
        assert int((w == 0).sum()) == w.numel() // 2
        if "pattern" in kw:
            n, m = map(int, kw["pattern"].split(":"))
            assert prune.is_nm_sparse(w, n, m)
        errs[method] = _err(layer, w0, x)
    assert errs["sparsegpt"] < errs["wanda"] < errs["magnitude"], errs


def test_wanda_metric_matches_direct_computation():
    x = _correlated()
    layer = _layer()
    w0 = layer.weight.detach().clone()
    prune.wanda(layer, [x[:200], x[200:]], 0.25)
    score = w0.abs() * x.norm(dim=0).unsqueeze(0)
    k = round(0.25 * 32)
    ref = torch.ones_like(w0, dtype=torch.bool)
    for r in range(w0.shape[0]):
        ref[r, torch.argsort(score[r])[:k]] = False
    assert torch.equal(layer.weight.detach() != 0, ref)
    torch.testing.assert_close(layer.weight.detach(), w0 * ref)


def test_sequential_mlp_compiles():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).eval()
    x = _correlated(256)
    for fn in (prune.wanda, prune.sparsegpt):
        m = fn(nn.Sequential(*[type(mod)(*()) if isinstance(mod, nn.ReLU) else mod for mod in model]),
               [x[:128], (x[128:],)], pattern="2:4", sequential=True)
        assert all(prune.is_nm_sparse(mod.weight, 2, 4) for mod in m if isinstance(mod, nn.Linear))
        cm = sparsec.sparse_compile(m, (x[:8],), target="cpu", min_weight_numel=0)
        with torch.no_grad():
            torch.testing.assert_close(cm(x[:8]), m(x[:8]), rtol=1e-4, atol=1e-4)


def test_gpt2_conv1d_and_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (2, 16))
    g = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32,
                                                            n_layer=1, n_head=2)).eval()
    prune.sparsegpt(g, [ids, {"input_ids": ids}], pattern="2:4", sequential=True)
    c = g.transformer.h[0].attn.c_attn.weight  # Conv1D [in, out]: groups run along dim 0
    assert prune.is_nm_sparse(c.t(), 2, 4)
    assert float((g.lm_head.weight == 0).float().mean()) < 0.01  # tied embedding left alone
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    lm = transformers.LlamaForCausalLM(cfg).eval()
    prune.wanda(lm, [ids], 0.5)
    q = lm.model.layers[0].self_attn.q_proj.weight
    assert int((q == 0).sum()) == q.numel() // 2


def test_bad_arguments():
    layer = _layer()
    x = _correlated()
    with pytest.raises(InputError, match="empty"):
        prune.wanda(layer, [], 0.5)
    with pytest.raises(InputError, match="iterable"):
        prune.sparsegpt(layer, x, 0.5)
    with pytest.raises(InputError, match="not both"):
        prune.wanda(layer, [x], 0.5, pattern="2:4")
    with pytest.raises(InputError, match="2:4"):
        prune.sparsegpt(layer, [x], pattern="half")
    with pytest.raises(ValueError, match="N <= M"):
        prune.wanda(layer, [x], pattern="5:4")
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        prune.sparsegpt(layer, [x], 1.5)
    with pytest.raises(ValueError, match="divisible"):
        prune.wanda(nn.Linear(30, 4), [torch.randn(4, 30)], pattern="4:8")
    with pytest.raises(InputError, match="tensors, tuples or dicts"):
        prune.wanda(layer, [3.0], 0.5)


def test_class_form_keeps_masks_for_fine_tuning_then_bakes_them():
    x = _correlated()
    layer = _layer()
    p = prune.SparseGPTPruner(pattern="2:4")
    with pytest.raises(RuntimeError, match="prepare"):
        p.step()
    with pytest.raises(RuntimeError, match="prepare"):
        p.finalize()
    p.prepare(layer, calib_batches=[x])
    p.step()
    assert prune.get_mask(layer, "weight") is not None  # still masked: a fine-tune keeps the pattern
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x).pow(2).mean().backward()
    opt.step()
    assert prune.is_nm_sparse(layer.weight.detach(), 2, 4)
    out = p.squash_mask()
    assert out is layer and prune.get_mask(layer, "weight") is None
    assert prune.is_nm_sparse(layer.weight.detach(), 2, 4)


def _sparsegpt_reference(w, h, sparsity, nm, blocksize, damp=0.01):
    """The paper's algorithm spelled out with explicit inverses: column i of each row is pruned with the OBS
    update over the columns not yet processed, F = {i, ..., d-1}: w_F -= w_i / [H_F⁻¹]_00 · [H_F⁻¹]_0,:.
    Masks: per block of columns the lowest w² / [H_F⁻¹]_00² (unstructured), per N:M group at its first column."""
    w = w.double().clone()
    h = h.double() + damp * torch.diag(h.double()).mean() * torch.eye(h.shape[0], dtype=torch.float64)
    rows, cols = w.shape
    inv = [torch.linalg.inv(h[i:, i:]) for i in range(cols)]
    diag = torch.tensor([inv[i][0, 0].sqrt() for i in range(cols)], dtype=torch.float64)
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for i in range(cols):
        if nm is None and i % blocksize == 0:
            i2 = min(i + blocksize, cols)
            k = round(sparsity * rows * i2) - round(sparsity * rows * i)
            score = (w[:, i:i2] ** 2 / diag[i:i2] ** 2).reshape(-1)
            blk = torch.zeros(score.numel(), dtype=torch.bool)
            blk[torch.argsort(score, stable=True)[:k]] = True
            pruned[:, i:i2] = blk.view(rows, i2 - i)
        if nm is not None and i % nm[1] == 0:
            score = w[:, i:i + nm[1]] ** 2 / diag[i:i + nm[1]] ** 2
            pruned[:, i:i + nm[1]].scatter_(1, torch.argsort(score, dim=1, stable=True)[:, :nm[1] - nm[0]], True)
        r = pruned[:, i]
        w[r, i:] -= (w[r, i] / inv[i][0, 0]).unsqueeze(1) * inv[i][0].unsqueeze(0)
        w[r, i] = 0.0
    return w, ~pruned


@pytest.mark.parametrize("sparsity,nm,blocksize", [(0.5, None, 128), (0.5, None, 8), (0.3, None, 16),
                                                    (0.5, (2, 4), 128), (0.5, (2, 4), 8), (0.5, (4, 8), 16)])
def test_sparsegpt_layer_matches_the_papers_algorithm_with_explicit_inverses(sparsity, nm, blocksize):
    x = _correlated().double()
    w0 = _layer().weight.detach().double()
    h = x.t() @ x
    got, keep = prune.sparsegpt_layer(w0, h, sparsity, nm, blocksize=blocksize)
    ref, ref_keep = _sparsegpt_reference(w0, h, sparsity, nm, blocksize)
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8)


def test_sequential_statistics_come_through_the_pruned_earlier_layers():
    x = _correlated(256)
    torch.manual_seed(1)
    dense = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    ref = {}
    for sequential in (False, True):
        m = nn.Sequential(*[nn.ReLU() if isinstance(mod, nn.ReLU) else nn.Linear(mod.in_features, mod.out_features)
                            for mod in dense])
        m.load_state_dict(dense.state_dict())
        prune.wanda(m, [x[:128], x[128:]], 0.5, sequential=sequential)
        # layer 2's reference mask: Wanda on its inputs, computed through the pruned (or the dense) layer 1
        first = m[0] if sequential else dense[0]
        with torch.no_grad():
            h = torch.relu(first(x))
        score = prune.wanda_scores(dense[2].weight, (h.double() ** 2).sum(0))
        ref_keep = torch.ones_like(score, dtype=torch.bool)
        for r in range(16):
            ref_keep[r, torch.argsort(score[r])[:32]] = False  # half of each row's 64 inputs
        assert torch.equal(m[2].weight.detach() != 0, ref_keep), sequential
        ref[sequential] = ref_keep
    assert not torch.equal(ref[False], ref[True])  # the option changes something on this data


def test_sparsegpt_on_llama_compiles():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ids = torch.randint(0, 64, (2, 16))
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                   use_cache=False)
    lm = prune.sparsegpt(transformers.LlamaForCausalLM(cfg).eval(), [ids, ids.flip(0)], pattern="2:4",
                         sequential=True)
    for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
        assert prune.is_nm_sparse(lm.model.layers[0].get_submodule(name).weight, 2, 4), name
    cm = sparsec.sparse_compile(lm, (ids,), target="cpu", min_weight_numel=0)
    with torch.no_grad():
        torch.testing.assert_close(cm(ids).logits, lm(ids).logits, rtol=1e-4, atol=1e-4)
