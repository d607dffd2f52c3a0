"""Digits experiment for sparsec.prune: every method on a 64-256-256-10 MLP, 3 seeds, CPU, a few minutes.

    python experiments/digits/run.py            # writes RESULTS.md, results.json and results.png here
    python experiments/digits/run.py --quick    # 1 seed, short training: a smoke test of the pipeline

Every choice (learning rate, RigL/SET update interval) is made on the validation split; the test split
is only evaluated, and the claim checks are computed from the numbers, never written by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402
from common import load_data, steps_per_epoch  # noqa: E402
from methods import Run, dense, gradual, lottery, one_shot, sparse_from_scratch  # noqa: E402
from report import check_claims, plot, write_markdown  # noqa: E402

import sparsec.prune as prune  # noqa: E402

LR_GRID = (0.003, 0.01, 0.03, 0.1)
FT_LR_FACTORS = (0.1, 0.3, 1.0)
INTERVAL_GRID = (25, 50, 100)
SPARSITIES = (0.9, 0.95, 0.98)


def mean_val(runs: list[Run]) -> float:
    return statistics.mean(r.val for r in runs)


def pick(grid, trials: dict) -> object:
    """The grid value with the best mean validation accuracy (the first one on ties)."""
    return max(grid, key=lambda v: mean_val(trials[v]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed and short training (smoke test)")
    parser.add_argument("--compiled", action="store_true",
                        help="also train the static-mask, RigL and SET rows through sparsec's compiled sparse kernels")
    parser.add_argument("--out", type=Path, default=HERE, help="directory for RESULTS.md, results.json/png")
    args = parser.parse_args()
    # One thread: these matrices are tiny, and a second thread only adds contention on a shared 2-core box.
    torch.set_num_threads(1)
    start = time.time()
    seeds = [0] if args.quick else [0, 1, 2]
    epochs, ft_epochs, rewind_epochs = (6, 2, 1) if args.quick else (60, 20, 2)
    data = load_data()
    spe = steps_per_epoch(data)
    steps, ft_steps, rewind_step = epochs * spe, ft_epochs * spe, rewind_epochs * spe
    rows: dict[tuple[str, float], list[Run]] = {}

    def add(name: str, sparsity: float, run: Run) -> None:
        rows.setdefault((name, sparsity), []).append(run)

    def log(what: str) -> None:
        print(f"[{time.time() - start:6.1f}s] {what}", flush=True)

    # Dense baseline; its learning rate (picked on validation) is also IMP's, as in Frankle et al.
    dense_runs = {v: [dense(data, s, v, steps) for s in seeds] for v in LR_GRID}
    lr = pick(LR_GRID, {v: [r for r, _ in runs] for v, runs in dense_runs.items()})
    states = {}
    for s, (run, state) in zip(seeds, dense_runs[lr], strict=True):
        add("dense", 0.0, run)
        states[s] = state
    log(f"dense done, lr={lr}")

    # Post-training family (one-shot, N:M, gradual, movement): one fine-tuning rate, picked on validation
    # for one-shot magnitude at 90 %.
    ft_trials = {f: [one_shot(data, states[s], s, prune.MagnitudePruner(0.9, scope="global"), f * lr, ft_steps)
                     for s in seeds] for f in FT_LR_FACTORS}
    ft_lr = lr * pick(FT_LR_FACTORS, {f: [after for _, after in runs] for f, runs in ft_trials.items()})
    for s in seeds:
        for n, m in ((2, 4), (1, 4), (4, 8)):
            before, after = one_shot(data, states[s], s, prune.NMPruner(n, m), ft_lr, ft_steps)
            add(f"{n}:{m} one-shot, no fine-tune", 1 - n / m, before)
            add(f"{n}:{m} one-shot + fine-tune", 1 - n / m, after)
        for sp in SPARSITIES:
            before, after = one_shot(data, states[s], s, prune.MagnitudePruner(sp, scope="global"), ft_lr, ft_steps)
            add("magnitude one-shot, no fine-tune", sp, before)
            add("magnitude one-shot + fine-tune", sp, after)
            add("gradual magnitude (cubic)", sp,
                gradual(data, states[s], s, prune.MagnitudePruner(sp, scope="global"), ft_lr, ft_steps))
            add("movement (cubic)", sp,
                gradual(data, states[s], s, prune.MovementPruner(sp, scope="global"), ft_lr, ft_steps))
    log(f"post-training methods done, fine-tune lr={ft_lr:g}")

    # Sparse-from-scratch family (static, RigL, SET, re-init control): one learning rate, picked on
    # validation for the *baseline* (static random mask at 90 %), so tuning cannot favour RigL.
    def static(sp: float, s: int, v: float) -> Run:
        return sparse_from_scratch(data, s, prune.StaticSparsifier(sp, distribution="erk", seed=s), v, steps)

    static_trials = {v: [static(0.9, s, v) for s in seeds] for v in LR_GRID}
    sparse_lr = pick(LR_GRID, static_trials)
    for sp in SPARSITIES:
        runs = static_trials[sparse_lr] if sp == 0.9 else [static(sp, s, sparse_lr) for s in seeds]
        for run in runs:
            add("static random mask (ERK)", sp, run)
    log(f"static done, sparse lr={sparse_lr}")
    if args.compiled:  # the same runs through the compiled kernels: the accuracies must agree
        for sp in SPARSITIES:
            for s, eager in zip(seeds, rows[("static random mask (ERK)", sp)], strict=True):
                run = sparse_from_scratch(data, s, prune.StaticSparsifier(sp, distribution="erk", seed=s),
                                          sparse_lr, steps, compiled=True)
                add("static random mask (ERK), compiled kernels", sp, run)
                log(f"static {sp:.0%} seed {s}: test accuracy eager {eager.test:.2f}%, compiled {run.test:.2f}%")

    for s in seeds:
        for sp, (run, masks) in lottery(data, s, lr, steps, rewind_step, list(SPARSITIES)).items():
            add(f"IMP, rewind to iter {rewind_step}", sp, run)
            # Control: the same mask with fresh random weights (another init seed), trained from scratch.
            control = prune.StaticSparsifier(sp, masks=masks)
            add("IMP mask, random re-init", sp,
                sparse_from_scratch(data, s, control, sparse_lr, steps, init_seed=s + 500))
    log("lottery tickets done")

    # RigL / SET update interval: picked on validation at 90 %, then used at every sparsity.
    chosen = {}
    for name, cls in (("RigL", prune.RigL), ("SET", prune.SET)):
        def dst(sp: float, s: int, dt: int, cls=cls, compiled: bool = False) -> Run:
            sparsifier = cls(sp, end_step=int(0.75 * steps), update_interval=dt, distribution="erk", seed=s)
            return sparse_from_scratch(data, s, sparsifier, sparse_lr, steps, compiled=compiled)

        trials = {dt: [dst(0.9, s, dt) for s in seeds] for dt in INTERVAL_GRID}
        chosen[name] = pick(INTERVAL_GRID, trials)
        for sp in SPARSITIES:
            runs = trials[chosen[name]] if sp == 0.9 else [dst(sp, s, chosen[name]) for s in seeds]
            for run in runs:
                add(f"{name} (ERK)", sp, run)
            if args.compiled:  # the same runs through the compiled kernels (masks re-packed at each update)
                for s, eager in zip(seeds, runs, strict=True):
                    run = dst(sp, s, chosen[name], compiled=True)
                    add(f"{name} (ERK), compiled kernels", sp, run)
                    log(f"{name} {sp:.0%} seed {s}: test accuracy eager {eager.test:.2f}%, compiled {run.test:.2f}%")
    log("RigL / SET done")

    elapsed = time.time() - start
    config = {"seeds": seeds, "epochs": epochs, "steps": steps, "fine_tune_steps": ft_steps,
              "rewind_step": rewind_step, "lr": lr, "fine_tune_lr": ft_lr, "lr_grid": LR_GRID,
              "ft_lr_factors": FT_LR_FACTORS, "sparse_lr": sparse_lr,
              "rigl_interval": chosen["RigL"], "set_interval": chosen["SET"], "interval_grid": INTERVAL_GRID,
              "n_train": len(data.y_train), "n_val": len(data.y_val), "n_test": len(data.y_test),
              "elapsed_s": round(elapsed, 1), "torch": torch.__version__}
    claims = check_claims(rows, rewind_step)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"config": config, "claims": claims,
         "rows": [{"method": k[0], "target_sparsity": k[1], "runs": [vars(r) for r in v]} for k, v in rows.items()]},
        indent=1))
    plot(rows, args.out / "results.png")
    write_markdown(rows, claims, config, args.out / "RESULTS.md")
    for c in claims:
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['claim']}: {c['detail']}")
    print(f"total {elapsed:.0f}s; wrote {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
