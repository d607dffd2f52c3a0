"""Rank functions of the distributed tests: each runs on every rank and returns what the tests check.

They are grouped in :func:`run_all` so that one set of processes (one process-group setup) serves every
test of a world size; the tests then only assert on the returned values.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

import sparsec.prune as prune
from sparsec.distributed import MaskedState, TopKState, average_growth_gradients, masked_hook, topk_hook
from sparsec.prune.masks import attach_mask, get_mask, set_mask


def masked_mlp(seed: int = 0, density: float = 0.1) -> nn.Module:
    """An MLP whose first two weights carry sparsec.prune masks of the given density; the last is dense."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    for layer in (model[0], model[2]):
        attach_mask(layer, "weight", torch.rand(layer.weight.shape, generator=g) < density)
    return model


def _unmasked_numel(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "original" not in n)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _recording(hook, masked_ids: set[int], log: list):
    """Wrap ``hook``: log, per bucket, whether it holds masked and unmasked parameters together."""

    def wrapped(state, bucket):
        kinds = {id(p) in masked_ids for p in bucket.parameters()}
        log.append(kinds == {True, False})
        return hook(state, bucket)

    return wrapped


def masked_vs_default(rank: int, world: int, steps: int, density: float = 0.1) -> dict:
    """K momentum-SGD steps under the masked hook and under the default hook, same data and masks.

    Step 1 accumulates a micro-batch under ``no_sync``. At step K//2 each rank draws *different* new
    masks (a SET-style change, one updated in place, one replaced by a new buffer) and ``sync_masks``
    makes rank 0's choice everyone's; the default run broadcasts the same way.
    """
    out: dict = {}
    for hook in ("masked", "default"):
        model = masked_mlp(density=density)
        masked_ids = {id(m.parametrizations.weight.original) for m in (model[0], model[2])}
        # several mixed buckets; no buffer broadcast, which would also copy rank 0's masks at each forward
        ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.02, forward_sync_buffers=False)
        state = MaskedState(ddp) if hook == "masked" else None
        mixed: list[bool] = []
        ddp.register_comm_hook(state, _recording(masked_hook if state else allreduce_hook, masked_ids, mixed))
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(100 + rank)
        change = torch.Generator().manual_seed(1000 + rank)  # differs per rank: sync must fix it
        sent, expected = [], []
        for step in range(steps):
            x, y = torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
            if step == 1:
                with ddp.no_sync():
                    nn.functional.cross_entropy(ddp(x), y).backward()
            kept = sum(int(get_mask(m).mask.sum()) for m in (model[0], model[2]))
            expected.append(4 * (kept + _unmasked_numel(model)))
            before = state.bytes_sent if state else 0
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
            opt.zero_grad()
            sent.append(state.bytes_sent - before if state else 0)
            if step == steps // 2:
                set_mask(model[2], "weight", torch.rand(128, 128, generator=change) < density)
                get_mask(model[0]).mask = torch.rand(128, 64, generator=change) < density  # a new buffer
                if state:
                    state.sync_masks()
                else:
                    for m in (model[0], model[2]):
                        buf = get_mask(m).mask.to(torch.uint8)
                        dist.broadcast(buf, 0)
                        get_mask(m).mask.copy_(buf.bool())
                for m in (model[0], model[2]):  # pruned weights are gone, as sparsec.prune does
                    prune.masks.zero_pruned_(m)
        out[hook] = {"params": _params(model), "sent": sent, "expected": expected, "mixed": any(mixed),
                     "dense_bytes": state.dense_bytes if state else 0}
    return out


def frozen_zeros(rank: int, world: int, steps: int = 4) -> dict:
    """Plain weights with exact zeros: the masked hook vs the default hook with those gradients dropped."""
    out: dict = {}
    for hook in ("masked", "default"):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        with torch.no_grad():
            model[0].weight.mul_(torch.rand(128, 64) < 0.2)
        zeros = model[0].weight == 0
        ddp = nn.parallel.DistributedDataParallel(model)
        state = MaskedState(ddp) if hook == "masked" else None
        ddp.register_comm_hook(state, masked_hook if state else allreduce_hook)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(200 + rank)
        for _ in range(steps):
            x, y = torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
            nn.functional.cross_entropy(ddp(x), y).backward()
            if state is None:
                model[0].weight.grad[zeros] = 0
            opt.step()
            opt.zero_grad()
        out[hook] = {"params": _params(model), "zeros": zeros, "sent": state.bytes_sent if state else 0,
                     "density": state.density if state else 1.0}
    return out


def rigl(rank: int, world: int, steps: int = 8) -> dict:
    """RigL under DDP: averaged growth gradients give identical mask updates on every rank."""
    out: dict = {}
    for hook in ("masked", "default"):
        torch.manual_seed(2)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sparsifier = prune.RigL(0.9, end_step=steps, update_interval=2, seed=0)
        sparsifier.prepare(model, optimizer=opt)
        ddp = nn.parallel.DistributedDataParallel(model, forward_sync_buffers=False)  # masks are not copied
        state = MaskedState(ddp) if hook == "masked" else None
        ddp.register_comm_hook(state, masked_hook if state else allreduce_hook)
        g = torch.Generator().manual_seed(300 + rank)
        sent, expected = [], []
        for _ in range(steps):
            x, y = torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
            kept = sum(int(m.sum()) for m in sparsifier.masks().values())
            bias = sum(m.bias.numel() for m in (model[0], model[2]))
            expected.append(4 * (kept + bias))
            before = state.bytes_sent if state else 0
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
            opt.zero_grad()
            sent.append(state.bytes_sent - before if state else 0)
            average_growth_gradients(sparsifier)
            sparsifier.step()
        out[hook] = {"params": _params(model), "masks": sparsifier.masks(), "sent": sent, "expected": expected,
                     "moved": sum(h[2] for h in sparsifier.history)}
    return out


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x, y, perm[:360], perm[360:]


def _ef_recorder(log: list):
    """Wrap topk_hook: keep (gradient + old residual, new residual, result) of the first buckets."""

    def wrapped(state, bucket):
        old = state.residuals.get(bucket.index())
        buffer = bucket.buffer()
        total = buffer.clone() if old is None or old.shape != buffer.shape else buffer + old
        fut = topk_hook(state, bucket)

        def record(f):
            result = f.value()
            if len(log) < 3:
                log.append((total, state.residuals[bucket.index()].clone(), result.clone()))
            return result

        return fut.then(record)

    return wrapped


def topk_digits(rank: int, world: int, steps: int = 150, batch: int = 64, lr: float = 0.4) -> dict:
    """Digits MLP trained with the default hook and with top-k at 1% (warm-up 20 steps)."""
    x, y, test, train = _digits()
    shard = train[rank::world]
    out: dict = {}
    for hook in ("dense", "topk"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
        ddp = nn.parallel.DistributedDataParallel(model)
        state = TopKState(ratio=0.01, warmup_steps=20) if hook == "topk" else None
        log: list = []
        if state:
            ddp.register_comm_hook(state, _ef_recorder(log))
        opt = torch.optim.SGD(ddp.parameters(), lr=lr)
        g = torch.Generator().manual_seed(rank)
        sent, ratios = [], []
        for step in range(steps):
            b = shard[torch.randint(0, len(shard), (batch,), generator=g)]
            if step == 5:  # accumulation: the hook sees (and compresses) the sum of two micro-batches
                with ddp.no_sync():
                    nn.functional.cross_entropy(ddp(x[b]), y[b]).backward()
            before = state.bytes_sent if state else 0
            if state:
                ratios.append(state.current_ratio())
            nn.functional.cross_entropy(ddp(x[b]), y[b]).backward()
            opt.step()
            opt.zero_grad()
            sent.append(state.bytes_sent - before if state else 0)
        with torch.no_grad():
            acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
        out[hook] = {"acc": acc, "sent": sent, "ratios": ratios, "ef": log,
                     "dense_bytes": state.dense_bytes if state else 0, "steps": state.step if state else 0,
                     "numel": sum(p.numel() for p in model.parameters())}
    return out


class _Holder(nn.Module):
    """Owns the source model's parameters (for DDP) and runs the compiled sparse model."""

    def __init__(self, source: nn.Module, compiled) -> None:
        super().__init__()
        self.source = source
        self._compiled = [compiled]  # a list: not a child module

    def forward(self, x):
        return self._compiled[0](x)


def compiled(rank: int, world: int, steps: int = 4) -> dict:
    """A model compiled by sparsec (CSR kernels, backward through them) vs eager, both under masked_hook."""
    import sparsec

    out: dict = {}
    for mode in ("compiled", "eager"):
        torch.manual_seed(3)
        source = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        with torch.no_grad():
            source[0].weight.mul_(torch.rand(128, 64) < 0.1)
            source[2].weight.mul_(torch.rand(10, 128) < 0.1)
        x0 = torch.randn(16, 64)
        if mode == "compiled":
            cm = sparsec.sparse_compile(source, (x0,), target="cpu", force_format="csr", calibrate=False,
                                        min_weight_numel=0)
            formats = sorted({layer.format for layer in cm.report().layers})
            model = _Holder(source, cm)
        else:
            formats, model = [], source
        ddp = nn.parallel.DistributedDataParallel(model)
        state = MaskedState(ddp)
        ddp.register_comm_hook(state, masked_hook)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(400 + rank)
        for _ in range(steps):
            x, y = torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g)
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
            opt.zero_grad()
        out[mode] = {"params": _params(source), "formats": formats, "sent": state.bytes_sent,
                     "density": state.density}
    return out


def run_all(rank: int, world: int, which: tuple[str, ...]) -> dict:
    """Run the named scenarios in order on this rank."""
    table = {"masked": lambda: masked_vs_default(rank, world, steps=6 if world == 2 else 3),
             "frozen": lambda: frozen_zeros(rank, world), "rigl": lambda: rigl(rank, world),
             "topk": lambda: topk_digits(rank, world), "compiled": lambda: compiled(rank, world)}
    return {name: table[name]() for name in which}
