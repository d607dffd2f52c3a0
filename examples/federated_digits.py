"""Federated averaging on sklearn digits with sparse uploads, over torch.distributed (gloo, 127.0.0.1).

N client processes each hold a shard of the training set; every round the server process broadcasts the
global model, each client trains locally and uploads its update (local minus global weights), and the
server averages the updates into the global model. Uploads are sent three ways:

* ``dense``: every entry (4 bytes each, what plain FedAvg sends);
* ``masked``: the model is 90% sparse under a fixed sparsec.prune mask shared by every process (same
  seed), so an update is zero off the mask and only the kept entries are sent: lossless;
* ``topk``: each client sends the ``ratio`` largest entries of update + residual as (value, index) pairs
  and keeps the rest as its residual for the next round (error feedback, as sparsec.distributed.topk_hook).

    python examples/federated_digits.py --clients 4 --rounds 30 --mode masked

Prints the test accuracy per round and the upload bytes against dense FedAvg's. The processes are local
(sparsec.distributed.local.run_local): nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.distributed as dist
from torch import nn

MODES = ("dense", "masked", "topk")


def digits(seed: int = 0):
    """Digits scaled to [0, 1]: (x, y, test indices, train indices)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x, y, perm[:360], perm[360:]


def make_model(mode: str, sparsity: float, seed: int) -> nn.Module:
    """The same MLP on every process; in ``masked`` mode with the same random 90%-sparse masks (ERK layer densities)."""
    import sparsec.prune as prune

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    if mode == "masked":
        # ERK: the small output layer stays denser (random 90% masks on it alone learn slowly)
        prune.StaticSparsifier(sparsity, seed=seed, distribution="erk").prepare(model)
        with torch.no_grad():  # kept weights scaled by 1/sqrt(density): the layer's output keeps its variance
            for _, module, name, m in prune.iter_masks(model):
                module.parametrizations[name].original.mul_(m.mask.float().mean().rsqrt())
    return model


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _load(model: nn.Module, flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


def kept_positions(model: nn.Module) -> torch.Tensor:
    """Flat positions an update can be non-zero at: the mask's kept entries, every unmasked entry."""
    from sparsec.prune.masks import iter_masks

    masks = {id(module.parametrizations[name].original): m.mask for _, module, name, m in iter_masks(model)}
    parts, offset = [], 0
    for p in model.parameters():
        mask = masks.get(id(p))
        if mask is None:
            parts.append(torch.arange(offset, offset + p.numel()))
        else:
            parts.append(mask.reshape(-1).nonzero().squeeze(1) + offset)
        offset += p.numel()
    return torch.cat(parts)


def _encode_topk(update: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(payload of k values then k int32 indices bit-cast to float32, the update with them zeroed)."""
    idx = update.abs().topk(k, sorted=False).indices
    payload = torch.cat([update[idx], idx.to(torch.int32).view(torch.float32)])
    rest = update.clone()
    rest[idx] = 0
    return payload, rest


def _decode_topk(payload: torch.Tensor, n: int) -> torch.Tensor:
    k = payload.numel() // 2
    out = torch.zeros(n)
    out.index_add_(0, payload[k:].view(torch.int32).long(), payload[:k])
    return out


def run_rank(rank: int, world: int, cfg: dict) -> dict | None:
    """Rank 0 is the server, ranks 1..N the clients. The server returns the round log."""
    x, y, test, train = digits(cfg["seed"])
    model = make_model(cfg["mode"], cfg["sparsity"], cfg["seed"])
    n = sum(p.numel() for p in model.parameters())
    keep = kept_positions(model) if cfg["mode"] == "masked" else None
    k = max(1, math.ceil(cfg["ratio"] * n))
    size = {"dense": n, "masked": n if keep is None else keep.numel(), "topk": 2 * k}[cfg["mode"]]
    clients = world - 1
    shard = train[rank - 1::clients] if rank > 0 else None
    residual = torch.zeros(n)
    g = torch.Generator().manual_seed(cfg["seed"] * 1000 + rank)
    log = {"acc": [], "upload_bytes": 0, "dense_upload_bytes": 0, "download_bytes": 0, "n": n}
    for _ in range(cfg["rounds"]):
        global_flat = _flat(model)
        dist.broadcast(global_flat, src=0)  # the global model, dense (downloads are not compressed here)
        if rank > 0:
            _load(model, global_flat)
            opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
            for _ in range(cfg["local_steps"]):
                b = shard[torch.randint(0, len(shard), (cfg["batch"],), generator=g)]
                nn.functional.cross_entropy(model(x[b]), y[b]).backward()
                opt.step()
                opt.zero_grad()
            update = _flat(model) - global_flat
            if cfg["mode"] == "dense":
                payload = update
            elif cfg["mode"] == "masked":
                payload = update[keep]
            else:
                payload, residual = _encode_topk(update + residual, k)
            dist.gather(payload, dst=0)
        else:
            gathered = [torch.empty(size) for _ in range(world)]
            dist.gather(torch.empty(size), gathered, dst=0)
            total = torch.zeros(n)
            for payload in gathered[1:]:
                if cfg["mode"] == "dense":
                    total += payload
                elif cfg["mode"] == "masked":
                    total[keep] += payload
                else:
                    total += _decode_topk(payload, n)
            _load(model, global_flat + total / clients)
            log["upload_bytes"] += sum(p.numel() * p.element_size() for p in gathered[1:])
            log["dense_upload_bytes"] += clients * n * 4
            log["download_bytes"] += clients * n * 4
            with torch.no_grad():
                log["acc"].append((model(x[test]).argmax(1) == y[test]).float().mean().item())
    return log if rank == 0 else None


def main(argv: list[str] | None = None) -> dict:
    """Run the simulation; print per-round accuracy and the upload bytes; return the server's log."""
    ap = argparse.ArgumentParser(description="federated averaging on digits with sparse uploads")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--mode", choices=MODES, default="masked")
    ap.add_argument("--ratio", type=float, default=0.05, help="top-k: fraction of entries uploaded")
    ap.add_argument("--sparsity", type=float, default=0.9, help="masked: fraction of weights pruned")
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="only the summary line")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.rounds < 1:
        ap.error("--clients and --rounds must be >= 1")
    if not 0 < args.ratio <= 1 or not 0 <= args.sparsity < 1:
        ap.error("--ratio must lie in (0, 1] and --sparsity in [0, 1)")
    from sparsec.distributed.local import run_local

    cfg = {"mode": args.mode, "rounds": args.rounds, "ratio": args.ratio, "sparsity": args.sparsity,
           "local_steps": args.local_steps, "batch": args.batch, "lr": args.lr, "seed": args.seed}
    log = run_local(run_rank, args.clients + 1, cfg, timeout=600, preload=("sklearn.datasets", "sparsec.prune"))[0]
    if not args.quiet:
        for i, acc in enumerate(log["acc"], 1):
            print(f"round {i:3d}: test accuracy {acc:.1%}")
    ratio = log["upload_bytes"] / log["dense_upload_bytes"]
    print(f"{args.mode}: {args.clients} clients, {args.rounds} rounds, final accuracy {log['acc'][-1]:.1%}; "
          f"uploaded {log['upload_bytes'] / 1e6:.2f} MB = {ratio:.1%} of dense FedAvg's "
          f"{log['dense_upload_bytes'] / 1e6:.2f} MB (downloads, dense: {log['download_bytes'] / 1e6:.2f} MB)")
    log["ratio"] = ratio
    return log


if __name__ == "__main__":
    main()
