"""LM experiment for sparsec.prune: a byte-level Llama on the stdlib's source, every method, 3 seeds, CPU.

    python experiments/lm/run.py            # writes RESULTS.md, results.json and results.png here
    python experiments/lm/run.py --quick    # tiny model, 1 seed, a few steps: a smoke test (< 1 min)
    python experiments/lm/run.py --defer-speed  # train/prune everything, keep seed 0's models, time nothing
    python experiments/lm/run.py --speed-only   # later, on a quiet machine: time those cached models only

A second process ``--warm late`` (sparse training from scratch and IMP) next to the main one uses a
second core; start it once the main process has logged "dense done" (it then reads the dense runs from
the cache instead of training them again).

Every choice (learning rates, RigL's update interval) is made on the validation split; the test split is
only evaluated, and the claim checks are computed from the numbers. Finished runs (the dense pretraining
above all) are cached under --cache, keyed by the whole configuration, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402
from cache import Cache  # noqa: E402
from common import Evaluator, Setup, fresh_copy  # noqa: E402
from data import load_corpus  # noqa: E402
from methods import (  # noqa: E402
    Ctx,
    Run,
    dense,
    dense_fine_tune,
    feature_norm_spread,
    from_scratch,
    gradual,
    imp_control,
    lottery,
    one_shot,
)
from report import check_claims, plot, write_markdown  # noqa: E402
from speed import measure  # noqa: E402

import sparsec.prune as prune  # noqa: E402

FULL = Setup()
QUICK = replace(FULL, hidden=32, layers=1, heads=2, intermediate=64, seq=32, batch=4, steps=16, warmup=2,
                ft_steps=4, gradual_steps=10, rewind_step=2, calib_batches=2, val_windows=16, test_windows=16,
                max_files=40)
LR_GRID = (1e-3, 3e-3)
FT_LR_FACTORS = (0.1, 0.3)
INTERVAL_GRID = (25, 50)
METHODS = (("magnitude", "magnitude"), ("wanda", "Wanda"), ("sparsegpt", "SparseGPT"))
PATTERNS = ("50%", "2:4", "4:8")
GRADUAL = (0.7, 0.9)
SCRATCH = (0.8, 0.9)
IMP_SCHEDULE = [0.5, 0.8]


def pick(grid, trials: dict):
    """The grid value whose runs have the lowest mean validation perplexity (the first one on ties)."""
    return min(grid, key=lambda v: statistics.mean(r.val for r in trials[v]))


def run_seconds(rows: dict[tuple[str, float], list[Run]]) -> float:
    """Compute time of the reported runs, cached or not (a no-fine-tune row and IMP's middle round are
    contained in their successor's time; unchosen grid trials are not counted)."""
    return sum(r.seconds for (name, sp), runs in rows.items() for r in runs
               if not name.endswith("no fine-tune") and not (name.startswith("IMP, rewind") and sp != IMP_SCHEDULE[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 seed, few steps (smoke test)")
    parser.add_argument("--out", type=Path, default=HERE, help="directory for RESULTS.md, results.json/png")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache", help="run cache directory")
    parser.add_argument("--no-cache", action="store_true", help="recompute everything, write no cache")
    parser.add_argument("--warm", choices=["imp", "late"], help="only compute this phase into the cache (imp: "
                        "IMP; late: static/SET/RigL then IMP) - run it in a second process next to a full run "
                        "to use a second core - then exit")
    parser.add_argument("--defer-speed", action="store_true", help="time nothing; keep seed 0's finalized "
                        "models in the cache for a later --speed-only pass (timing under load means nothing)")
    parser.add_argument("--speed-only", action="store_true", help="train nothing (every run must be cached): "
                        "time the cached models of a --defer-speed run and rewrite RESULTS.md")
    parser.add_argument("--second-process", default="", help="for RESULTS.md: the command of a --warm "
                        "process that ran next to this one (it shares the wall time)")
    args = parser.parse_args()
    # One thread everywhere: tiny matrices, a shared machine, and CPU-time ratios that mean something.
    torch.set_num_threads(1)
    start = time.time()
    setup = QUICK if args.quick else FULL
    seeds = [0] if args.quick else [0, 1, 2]
    lr_grid, ft_factors, intervals = ((3e-3,), (0.3,), (4,)) if args.quick else \
        (LR_GRID, FT_LR_FACTORS, INTERVAL_GRID)
    corpus = load_corpus(setup.max_files)
    ctx = Ctx(corpus, setup, Evaluator(corpus, setup))
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "python": sys.version.split()[0]}
    if args.speed_only and (args.no_cache or args.warm):
        parser.error("--speed-only reads the cache: it cannot go with --no-cache or --warm")
    # A --warm process never times anything (it runs next to another one): it keeps the models instead.
    defer = args.defer_speed or args.speed_only or bool(args.warm)
    cache = Cache(None if args.no_cache else args.cache, setup, [s.digest for s in corpus.splits()], versions,
                  read_only=args.speed_only)
    example = ctx.ev.test[:setup.batch, :-1]  # the timed input: one training-sized batch of test bytes
    timed_rows = {"SparseGPT 2:4 + fine-tune"} if args.quick else None
    rows: dict[tuple[str, float], list[Run]] = {}
    loads = [os.getloadavg()[0]]

    def speed_for(name: str, seed: int, key: str):
        """How row ``name``'s finalized model (cache entry ``key``) is timed: now, or saved for --speed-only."""
        if seed != seeds[0] or (timed_rows is not None and name not in timed_rows):
            return None
        if defer:
            return lambda m: {"deferred": cache.save_model(key, m)}
        return lambda m: measure(m, example)

    def add(name: str, sparsity: float, run: Run) -> None:
        rows.setdefault((name, sparsity), []).append(run)

    def log(what: str) -> None:
        loads.append(os.getloadavg()[0])
        print(f"[{time.time() - start:7.1f}s load {loads[-1]:.1f}] {what}", flush=True)

    log(f"data: {[(s.name, len(s.files), len(s.tokens)) for s in corpus.splits()]}; cache {cache.key}")

    # Dense pretraining: the learning rate is picked on validation with seed 0, then used by every run
    # that trains from scratch (dense, static, SET, RigL, IMP, re-init control).
    trials = {lr: cache.get(f"dense-s{seeds[0]}-lr{lr:g}", lambda lr=lr: dense(ctx, seeds[0], lr))
              for lr in lr_grid}
    lr = pick(lr_grid, {v: [t[0]] for v, t in trials.items()})
    dense_runs = {seeds[0]: trials[lr]}
    for s in seeds[1:]:
        dense_runs[s] = cache.get(f"dense-s{s}-lr{lr:g}", lambda s=s: dense(ctx, s, lr))
    states = {s: d[1] for s, d in dense_runs.items()}
    rewinds = {s: d[2] for s, d in dense_runs.items()}
    for s in seeds:
        run = dense_runs[s][0]
        if s == seeds[0]:
            run = replace(run, speed={"deferred": None} if defer else cache.get(
                "speed-dense", lambda s=s: measure(fresh_copy(setup, states[s], s), example)))
        add("dense", 0.0, run)
    spread = feature_norm_spread(ctx, states[seeds[0]], seeds[0])
    log(f"dense done, lr={lr:g} (val ppl {[round(t[0].val, 3) for t in trials.values()]} for {lr_grid})")

    def imp_phase() -> None:
        for s in seeds:
            imp = cache.get(f"imp-s{s}", lambda s=s: lottery(
                ctx, states[s], rewinds[s], s, lr, IMP_SCHEDULE,
                speed_for(f"IMP, rewind to step {setup.rewind_step}", s, f"imp-s{s}")))
            for sp, (run, masks) in imp.items():
                add(f"IMP, rewind to step {setup.rewind_step}", sp, run)
                if sp == IMP_SCHEDULE[-1]:
                    add("IMP mask, random re-init", sp,
                        cache.get(f"imp-control-s{s}", lambda s=s, sp=sp, masks=masks: imp_control(
                            ctx, s, sp, masks, lr, speed_for("IMP mask, random re-init", s, f"imp-control-s{s}"))))
            log(f"IMP seed {s} done")

    # Sparse training from scratch, the dense step budget. RigL's update interval is picked on validation
    # at 90 %, seed 0; SET uses the same interval (they differ only in how they grow).
    def scratch(kind: str, sp: float, s: int, dt: int):
        label = {"static": "static random mask (ERK)", "SET": "SET (ERK)", "RigL": "RigL (ERK)"}[kind]
        key = f"scratch-{kind}-{sp:g}-s{s}-dt{dt if kind != 'static' else 0}"

        def make():
            if kind == "static":
                sparsifier = prune.StaticSparsifier(sp, distribution="erk", seed=s)
            else:
                cls = prune.RigL if kind == "RigL" else prune.SET
                sparsifier = cls(sp, end_step=int(0.75 * setup.steps), update_interval=dt, distribution="erk",
                                 seed=s)
            return from_scratch(ctx, s, sparsifier, lr, speed=speed_for(label, s, key))

        return label, cache.get(key, make)

    def scratch_phase() -> int:
        rigl_trials = {dt: [scratch("RigL", 0.9, seeds[0], dt)[1]] for dt in intervals}
        dt = pick(intervals, rigl_trials)
        for s in seeds:
            for sp in SCRATCH:
                for kind in ("static", "SET", "RigL"):
                    label, run = scratch(kind, sp, s, dt)
                    add(label, sp, run)
            log(f"static / SET / RigL seed {s} done (interval {dt})")
        return dt

    if args.warm:  # a second process filling the cache while the first does the rest
        if args.warm == "late":
            scratch_phase()
        imp_phase()
        return

    # One fine-tuning rate for every post-training method, picked on validation for magnitude 2:4, seed 0.
    def shot(s: int, method: str, pattern: str, ft_lr: float, label: str):
        key = f"oneshot-{method}-{pattern.replace(':', 'of').replace('%', 'pct')}-s{s}-ft{ft_lr:g}"
        return cache.get(key, lambda: one_shot(ctx, states[s], s, method, pattern, ft_lr,
                                               speed_for(f"{label} {pattern} + fine-tune", s, key)))

    ft_trials = {f: shot(seeds[0], "magnitude", "2:4", f * lr, "magnitude") for f in ft_factors}
    ft_lr = lr * pick(ft_factors, {f: [after] for f, (_, after) in ft_trials.items()})
    for s in seeds:
        add("dense + fine-tune (control)", 0.0,
            cache.get(f"dense-ft-s{s}-ft{ft_lr:g}", lambda s=s: dense_fine_tune(ctx, states[s], s, ft_lr)))
        for method, label in METHODS:
            for pattern in PATTERNS:
                before, after = shot(s, method, pattern, ft_lr, label)
                add(f"{label} {pattern}, no fine-tune", 0.5, before)
                add(f"{label} {pattern} + fine-tune", 0.5, after)
        log(f"one-shot seed {s} done (fine-tune lr {ft_lr:g})")
    for s in seeds:
        for sp in GRADUAL:
            for label, cls in (("gradual magnitude (cubic)", prune.MagnitudePruner),
                               ("movement (cubic)", prune.MovementPruner)):
                key = f"gradual-{cls.__name__}-{sp:g}-s{s}-ft{ft_lr:g}"
                add(label, sp, cache.get(key, lambda s=s, sp=sp, cls=cls, label=label, key=key: gradual(
                    ctx, states[s], s, cls(sp, scope="layer"), ft_lr, speed_for(label, s, key))))
        log(f"gradual / movement seed {s} done")

    dt = scratch_phase()
    imp_phase()

    elapsed = time.time() - start
    speed_info = {"mode": "deferred" if defer else "inline"}
    previous = args.out / "results.json"
    # --speed-only times the models a deferred run left in the cache; an inline run also times any row that
    # came from the cache still deferred (e.g. written by a --warm process).
    if args.speed_only or not defer:
        t_speed, load_start = time.time(), os.getloadavg()[0]
        for (name, _), runs in rows.items():
            sp = runs[0].speed
            if sp is not None and "deferred" in sp:
                key = sp["deferred"]
                state = states[seeds[0]] if key is None else cache.load_model(key)
                runs[0] = replace(runs[0], speed=measure(fresh_copy(setup, state, seeds[0]), example))
                log(f"timed {name}: {runs[0].speed.get('ratio', runs[0].speed.get('error'))}")
        speed_info = {"mode": "speed-only" if args.speed_only else "inline", "elapsed_s": round(time.time() - t_speed, 1),
                      "load_start": load_start, "load_end": os.getloadavg()[0]}
    old = json.loads(previous.read_text())["config"] if args.speed_only and previous.exists() else {}
    config = {"seeds": seeds, "setup": asdict(setup), "lr": lr, "lr_grid": lr_grid, "ft_lr": ft_lr,
              "ft_lr_factors": ft_factors, "rigl_interval": dt, "interval_grid": intervals,
              "imp_schedule": IMP_SCHEDULE, "feature_norm_spread": spread, "quick": args.quick, "elapsed_s": round(elapsed, 1),
              "load_min": min(loads),
              "run_seconds": run_seconds(rows), "load_max": max(loads), "load_mean": statistics.mean(loads),
              "cache": {"key": cache.key, "hits": cache.hits, "misses": cache.misses}, "versions": versions,
              "speed": speed_info, "second_process": args.second_process,
              "splits": [{"name": s.name, "files": len(s.files), "bytes": len(s.tokens), "sha256_12": s.digest}
                         for s in corpus.splits()], "stdlib": corpus.root,
              "params": sum(p.numel() for p in fresh_copy(setup, states[seeds[0]], 0).parameters())}
    if old.get("cache", {}).get("key") == cache.key:  # the numbers below are the full run's, not this pass's
        config.update({k: old[k] for k in ("elapsed_s", "load_min", "load_max", "load_mean", "cache",
                                           "run_seconds", "second_process")})
    claims = check_claims(rows, setup)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"config": config, "claims": claims,
         "rows": [{"method": k[0], "target_sparsity": k[1], "runs": [asdict(r) for r in v]}
                  for k, v in rows.items()]}, indent=1))
    plot(rows, args.out / "results.png")
    write_markdown(rows, claims, config, args.out / "RESULTS.md")
    for c in claims:
        print(f"{'PASS' if c['pass'] else 'FAILING'}  {c['claim']}: {c['detail']}")
    print(f"total {elapsed:.0f}s; wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
