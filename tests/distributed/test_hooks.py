"""Multi-process tests of sparsec.distributed's DDP comm hooks (gloo over the loopback interface)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from sparsec.distributed import MaskedState, TopKState, masked_hook, topk_hook
from sparsec.errors import InputError
from sparsec.prune.masks import attach_mask, get_mask
from tests.distributed.spawn import run_ranks


def _masked_mlp(seed: int = 0, density: float = 0.1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    for layer in (model[0], model[2]):
        attach_mask(layer, "weight", torch.rand(layer.weight.shape, generator=g) < density)
    return model


def _train(rank: int, world: int, hook: str, steps: int, density: float):
    """K SGD steps (one accumulated with no_sync, one mask change) under ``hook``; params + bytes."""
    import torch.distributed as dist

    model = _masked_mlp(density=density)
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.02)  # several buckets, mixed params
    state = MaskedState(ddp) if hook == "masked" else None
    ddp.register_comm_hook(state, masked_hook if hook == "masked" else allreduce_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)
    per_step = []
    for step in range(steps):
        x, y = torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
        if step == 1:  # gradient accumulation: the hook sees the summed gradient of two micro-batches
            with ddp.no_sync():
                nn.functional.cross_entropy(ddp(x), y).backward()
        before = state.bytes_sent if state else 0
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
        opt.zero_grad()
        if state:
            per_step.append(state.bytes_sent - before)
        if step == steps // 2:  # a SET-style mask change, rank 0's choice broadcast to every rank
            mask = get_mask(model[2]).mask
            mask.copy_(torch.rand(mask.shape) < density)
            if state:
                state.sync_masks()
            else:
                buf = mask.to(torch.uint8)
                dist.broadcast(buf, 0)
                mask.copy_(buf.bool())
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dense = sum(p.numel() * 4 for p in model.parameters())
    return params, per_step, dense, (state.bytes_sent if state else 0)


@pytest.mark.parametrize("world", [2, 4])
def test_masked_hook_matches_default_allreduce(world):
    steps = 6 if world == 2 else 3
    masked = run_ranks(_train, world, "masked", steps, 0.1)
    default = run_ranks(_train, world, "default", steps, 0.1)
    for (pm, _, _, _), (pd, _, _, _) in zip(masked, default, strict=True):
        for name in pd:
            torch.testing.assert_close(pm[name], pd[name], rtol=1e-5, atol=1e-6, msg=name)
    # ranks agree with each other too
    for name in masked[0][0]:
        torch.testing.assert_close(masked[0][0][name], masked[-1][0][name], rtol=1e-5, atol=1e-6)
    # bytes per step: the kept weight entries plus the dense layer and biases, ≤ 1.05x that
    model = _masked_mlp(density=0.1)
    kept = sum(int(get_mask(m).mask.sum()) for m in (model[0], model[2]))
    dense_rest = sum(p.numel() for n, p in model.named_parameters() if "original" not in n)
    expected = 4 * (kept + dense_rest)
    _, per_step, dense, _ = masked[0]
    assert max(per_step[:steps // 2 + 1]) <= 1.05 * expected
    masked_dense = sum(m.weight.numel() for m in (model[0], model[2]))
    density = (kept + dense_rest) / (masked_dense + dense_rest)
    assert per_step[0] <= 1.05 * density * dense


def _digits_run(rank: int, world: int, hook: str):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    test, train = perm[:360], perm[360:]
    shard = train[rank::world]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    ddp = nn.parallel.DistributedDataParallel(model)
    state = TopKState(ratio=0.01, warmup_steps=20) if hook == "topk" else None
    if state:
        ddp.register_comm_hook(state, topk_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.2)
    g = torch.Generator().manual_seed(rank)
    for _ in range(400):
        b = shard[torch.randint(0, len(shard), (32,), generator=g)]
        nn.functional.cross_entropy(ddp(x[b]), y[b]).backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    return acc, (state.bytes_sent if state else 0), (state.dense_bytes if state else 0), state.step if state else 0


def test_topk_reaches_dense_accuracy_at_one_percent():
    dense = run_ranks(_digits_run, 2, "dense")
    topk = run_ranks(_digits_run, 2, "topk")
    acc_dense, acc_topk = dense[0][0], topk[0][0]
    assert acc_topk >= acc_dense - 0.01, (acc_topk, acc_dense)
    _, sent, dense_bytes, steps = topk[0]
    assert steps == 400
    assert sent <= 0.03 * dense_bytes  # 2 x 4 bytes per sent entry of 4: 2% once warm, warm-up adds little


def test_bad_inputs_raise():
    with pytest.raises(InputError):
        TopKState(ratio=0)
    with pytest.raises(InputError):
        MaskedState("not a model")
    s = TopKState(ratio=0.01, warmup_steps=10, warmup_ratio=0.25)
    assert s.current_ratio() == 0.25
    s.step = 10
    assert s.current_ratio() == 0.01
