"""Claim checks, the results table (RESULTS.md) and the plot for the LM experiment."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from methods import Run  # noqa: E402

Rows = dict[tuple[str, float], list[Run]]
LABELS = ("magnitude", "Wanda", "SparseGPT")


def stats(runs: list[Run], field: str = "test") -> tuple[float, float]:
    values = [getattr(r, field) for r in runs]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(runs: list[Run], field: str = "test") -> str:
    m, s = stats(runs, field)
    return f"{m:.3f} ± {s:.3f}"


def get(rows: Rows, name: str, sparsity: float) -> list[Run] | None:
    for (n, sp), runs in rows.items():
        if n == name and abs(sp - sparsity) < 1e-9:
            return runs
    return None


def _wins(a: list[Run], b: list[Run]) -> str:
    """Seeds on which ``a`` has the lower test perplexity (runs are paired by seed)."""
    return f"lower on {sum(x.test < y.test for x, y in zip(a, b, strict=True))}/{len(a)} seeds"


def check_claims(rows: Rows, setup) -> list[dict]:
    """Each claim of the brief on mean test perplexity (lower is better); a missing row is a FAIL."""
    out: list[dict] = []

    def below(text: str, a: list[Run] | None, b: list[Run] | None, strict: bool = True) -> bool:
        if a is None or b is None:
            out.append({"claim": text, "pass": False, "detail": "row missing"})
            return False
        (ma, sa), (mb, sb) = stats(a), stats(b)
        ok = ma < mb if strict else ma <= mb
        out.append({"claim": text, "pass": ok,
                    "detail": f"{ma:.3f} ± {sa:.3f} vs {mb:.3f} ± {sb:.3f} ({ma - mb:+.3f}; {_wins(a, b)})"})
        return ok

    def beat_magnitude(pattern: str, extra: str = "") -> None:
        mag = get(rows, f"magnitude {pattern}, no fine-tune", 0.5)
        wan = get(rows, f"Wanda {pattern}, no fine-tune", 0.5)
        sgp = get(rows, f"SparseGPT {pattern}, no fine-tune", 0.5)
        text = f"{extra}Wanda and SparseGPT at {pattern} beat magnitude without fine-tune"
        if None in (mag, wan, sgp):
            out.append({"claim": text, "pass": False, "detail": "row missing"})
            return
        ok = stats(wan)[0] < stats(mag)[0] and stats(sgp)[0] < stats(mag)[0]
        out.append({"claim": text, "pass": ok,
                    "detail": f"magnitude {fmt(mag)}; Wanda {fmt(wan)} ({_wins(wan, mag)}); "
                              f"SparseGPT {fmt(sgp)} ({_wins(sgp, mag)})"})

    beat_magnitude("50%", "(1) ")
    below("(2) SparseGPT ≤ Wanda perplexity at 2:4 (no fine-tune)", get(rows, "SparseGPT 2:4, no fine-tune", 0.5),
          get(rows, "Wanda 2:4, no fine-tune", 0.5), strict=False)

    # (3): which 2:4 method is fine-tuned is itself a choice, so it is made on validation.
    text = "(3) 2:4 + short fine-tune within 5% of dense perplexity"
    cands = {lab: get(rows, f"{lab} 2:4 + fine-tune", 0.5) for lab in LABELS}
    dense, control = get(rows, "dense", 0.0), get(rows, "dense + fine-tune (control)", 0.0)
    if dense is None or any(v is None for v in cands.values()):
        out.append({"claim": text, "pass": False, "detail": "row missing"})
    else:
        best = min(LABELS, key=lambda lab: stats(cands[lab], "val")[0])
        m, d = stats(cands[best])[0], stats(dense)[0]
        ctl = f"; the dense model fine-tuned the same way: {fmt(control)}" if control else ""
        out.append({"claim": text, "pass": m <= 1.05 * d,
                    "detail": f"{best} (best on validation) {fmt(cands[best])} vs dense {fmt(dense)}: "
                              f"{100 * (m / d - 1):+.1f}% (allowed +5%){ctl}"})
    below("(4) RigL beats the static random mask at 90% at equal steps", get(rows, "RigL (ERK)", 0.9),
          get(rows, "static random mask (ERK)", 0.9))
    below("(5) IMP with rewinding at 80% beats its random re-init control",
          get(rows, f"IMP, rewind to step {setup.rewind_step}", 0.8), get(rows, "IMP mask, random re-init", 0.8))
    # The same comparisons elsewhere: reported, not asked for by the brief.
    beat_magnitude("2:4", "(extra) ")
    beat_magnitude("4:8", "(extra) ")
    for pattern in ("50%", "4:8"):
        below(f"(extra) SparseGPT ≤ Wanda perplexity at {pattern} (no fine-tune)",
              get(rows, f"SparseGPT {pattern}, no fine-tune", 0.5), get(rows, f"Wanda {pattern}, no fine-tune", 0.5),
              strict=False)
    below("(extra) RigL beats the static random mask at 80%", get(rows, "RigL (ERK)", 0.8),
          get(rows, "static random mask (ERK)", 0.8))
    below("(extra) RigL beats SET at 90%", get(rows, "RigL (ERK)", 0.9), get(rows, "SET (ERK)", 0.9))
    return out


def _speed_cells(run: Run, name: str) -> list[str]:
    sp = run.speed
    if sp is None:
        return ["same mask as the + fine-tune row" if name.endswith("no fine-tune") else "-", "", "", "", "", "", ""]
    if "error" in sp:
        return [f"compile failed: {sp['error']}", "", "", "", "", "", f"{sp['load']:.1f}"]
    fm = ", ".join(f"{k}×{v}" for k, v in sp["formats"].items())
    return [fm, f"{sp['eager_ms']:.1f}", f"{sp['compiled_ms']:.1f}", f"{sp['ratio']:.2f}", f"{sp['compile_s']:.1f}",
            f"{sp['max_abs_diff']:.1e}", f"{sp['load']:.1f}"]


def write_markdown(rows: Rows, claims: list[dict], config: dict, path: Path) -> None:
    s, n = config["setup"], len(config["seeds"])
    split = ", ".join(f"{p['name']} {p['files']} files / {p['bytes']:,} bytes (sha256 {p['sha256_12']})"
                      for p in config["splits"])
    sp_info = config.get("speed", {"mode": "inline"})
    flags = " --defer-speed" if sp_info["mode"] != "inline" else ""
    second = (f" with `{config['second_process']}` started next to it in a second process once the dense "
              "runs were cached (2 processes, 1 thread each)") if config.get("second_process") else ""
    lines = [
        "# sparsec.prune on a byte-level language model (the Python standard library's source)",
        "",
        f"Regenerate: `python experiments/lm/run.py{' --quick' if config['quick'] else ''}{flags}`{second} "
        f"(CPU, 1 thread per process, `nice -n 19`; this run took {config['elapsed_s'] / 60:.1f} min with the 1-minute load average between "
        f"{config['load_min']:.1f} and {config['load_max']:.1f} on a 2-core machine; "
        f"{config['cache']['hits']} of {config['cache']['hits'] + config['cache']['misses']} runs came from the "
        f"cache `{config['cache']['key']}`; the reported runs' own times add up to {config['run_seconds'] / 60:.1f} min; torch {config['versions']['torch']}, transformers "
        f"{config['versions']['transformers']}, Python {config['versions']['python']}).",
        "",
        f"**Data.** Every `.py` file under `{config['stdlib']}` except `site-packages` and the test suites "
        f"(`test`, `tests`, `idle_test`), shuffled with a fixed seed and split by file 80/10/10: {split}. "
        "Tokens are bytes (vocabulary 256). Training draws random windows from the train bytes; validation "
        f"and test perplexities are over {s['val_windows']} and {s['test_windows']} fixed, evenly spaced windows "
        f"of {s['seq'] + 1} bytes ({s['seq']} predictions each), the same bytes for every model.",
        "",
        f"**Model.** `transformers.LlamaForCausalLM`, random init: hidden {s['hidden']}, {s['layers']} layers, "
        f"{s['heads']} heads, MLP {s['intermediate']}, context {s['seq']}, untied embeddings, "
        f"{config['params']:,} parameters. Pruned: the {7 * s['layers']} Linear layers of the blocks (q/k/v/o, "
        "gate/up/down); embeddings and `lm_head` stay dense; sparsity below is measured over those Linears. "
        f"AdamW (β 0.9/0.95, weight decay 0.01, clip 1), batch {s['batch']}×{s['seq']} bytes, {s['warmup']} "
        "warm-up steps then cosine to 10 %.",
        "",
        f"**Budgets.** Dense and every sparse-from-scratch run (static, SET, RigL, the IMP re-init control): "
        f"{s['steps']} steps. One-shot methods prune each seed's dense model; \"+ fine-tune\" then trains the "
        f"kept weights for {s['ft_steps']} steps (mask fixed). Gradual magnitude and movement pruning fine-tune "
        f"the dense model for {s['gradual_steps']} steps, the sparsity following the cubic ramp over the first "
        "75 %, masks updated every 10 steps, per layer. Wanda and SparseGPT calibrate on "
        f"{s['calib_batches']}×{s['batch']} train windows and prune layer by layer in call order (sequential, "
        "as in the papers); magnitude 50 % is per layer, magnitude N:M per group. IMP (per-layer magnitude) "
        f"prunes the dense run to {', '.join(f'{x:.0%}' for x in config['imp_schedule'])}, each time rewinding "
        f"to step {s['rewind_step']} of it and retraining to step {s['steps']}; its control keeps the final "
        "mask with a fresh random init. Static/SET/RigL use ERK layer densities, α 0.3, updates until 75 %.",
        "",
        f"**Choices, all on validation** (test is only reported): learning rate {config['lr']:g} from "
        f"{list(config['lr_grid'])} on the dense model, seed 0 (used by every run from scratch); fine-tuning "
        f"rate {config['ft_lr']:g} from {[round(f * config['lr'], 8) for f in config['ft_lr_factors']]} on "
        "magnitude 2:4 + fine-tune, seed 0 (used by every post-training method); RigL update interval "
        f"{config['rigl_interval']} from {list(config['interval_grid'])} at 90 %, seed 0 (SET uses the same); "
        "for claim 3, which 2:4 method is fine-tuned.",
        "",
        "## Claims",
        "",
        "| claim | result | figures (mean ± std test perplexity over the seeds, lower is better) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {c['claim']} | **{'PASS' if c['pass'] else 'FAILING'}** | {c['detail']} |" for c in claims]
    lines += [
        "",
        "A claim compares means over the seeds; \"lower on k/n seeds\" pairs the runs by seed (one-shot runs of "
        "one seed prune the same dense model). A gap smaller than the standard deviations shown is within "
        "noise, whichever way it goes. A failing claim is reported as it came out: nothing was re-tuned on test.",
        "",
        "What Wanda's metric can add to magnitude here: the largest max/median ratio of the input-feature "
        "norms ‖X_j‖ over the calibration data of the dense model (seed 0), by layer kind: "
        + ", ".join(f"{k} {v:.1f}" for k, v in config["feature_norm_spread"].items())
        + ". Wanda's gains in its paper come from a few input features with much larger norms than the rest "
        "(outlier features of large LLMs); where the norms are even, |W|·‖X‖ ranks each row almost as |W| "
        "does, and its per-row comparison differs from the per-layer magnitude baseline mainly by forcing "
        "the same sparsity in every row.",
        "",
        f"## Results (mean ± std over {n} seed{'s' if n > 1 else ''})",
        "",
        "Steps = training steps of the run (post-training methods: after the dense pretraining; IMP: all its "
        "rounds including the dense run).",
        "",
        "| method | target sparsity | measured sparsity % | test ppl | val ppl | steps |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (name, sp), runs in rows.items():
        lines.append(f"| {name} | {sp:.0%} | {statistics.mean(r.sparsity for r in runs):.2f} | {fmt(runs)} | "
                     f"{fmt(runs, 'val')} | {runs[0].steps} |")
    lines += [
        "",
        "![test perplexity by method](results.png)",
        "",
        "## Compiled speed (seed 0's model of each row): `sparse_compile` vs eager, same process",
        "",
    ]
    if sp_info["mode"] == "deferred":
        lines += ["**Not measured in this run**: the machine was shared, so the full run only kept seed 0's "
                  "finalized models in the cache. Time them with `python experiments/lm/run.py --speed-only` "
                  "(same --cache; trains nothing, rewrites this file with the table below filled in).", ""]
    elif sp_info["mode"] == "speed-only":
        # the timing runs on one thread, which itself adds 1 to the load average of this 2-core machine
        loaded = max(sp_info["load_start"], sp_info["load_end"]) > 1.5
        lines += [f"Measured by `python experiments/lm/run.py --speed-only` from the cached models in "
                  f"{sp_info['elapsed_s'] / 60:.1f} min, 1-minute load average {sp_info['load_start']:.1f} at "
                  f"its start and {sp_info['load_end']:.1f} at its end"
                  + (" **(loaded: not a quiet-machine figure)**." if loaded else "."), ""]
    lines += [
        f"Input: one batch of {s['batch']}×{s['seq']} test bytes; CPU time per forward call of this process "
        "(`time.process_time`, 1 thread), median of 7 interleaved rounds of 3 calls. The machine was shared "
        "(load column: 1-minute load average when the model was measured), so these are CPU-time ratios "
        "in one process, not wall-clock speed-ups; rerun on a quiet machine for those. Formats: what the cost "
        "model chose for the block Linears. max |Δ| is the largest logit difference from eager.",
        "",
    ]
    if sp_info["mode"] == "deferred":
        path.write_text("\n".join(lines) + "\n")
        return
    lines += [
        "| method | target | formats | eager ms | compiled ms | eager / compiled | compile s | max abs diff | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (name, sp), runs in rows.items():
        if runs[0].speed is None:  # no-fine-tune rows share the + fine-tune row's mask; IMP's middle round
            continue
        lines.append(f"| {name} | {sp:.0%} | " + " | ".join(_speed_cells(runs[0], name)) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(rows: Rows, path: Path) -> None:
    """Left: one-shot 50 % (three patterns) before/after fine-tune. Right: perplexity vs sparsity."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    dense = get(rows, "dense", 0.0)
    d = stats(dense)[0] if dense else None
    ax = axes[0]
    for i, lab in enumerate(LABELS):
        for j, (suffix, marker) in enumerate(((", no fine-tune", "o"), (" + fine-tune", "s"))):
            xs, ys, es = [], [], []
            for k, pattern in enumerate(("50%", "2:4", "4:8")):
                runs = get(rows, f"{lab} {pattern}{suffix}", 0.5)
                if runs:
                    m, sd = stats(runs)
                    xs.append(k + (2 * i + j - 2.5) * 0.12)
                    ys.append(m)
                    es.append(sd)
            ax.errorbar(xs, ys, yerr=es, fmt=marker, color=f"C{i}", capsize=3, mfc="white" if j else f"C{i}",
                        label=f"{lab}{suffix}")
    if d:
        ax.axhline(d, color="k", ls="--", lw=1, label="dense")
    ax.set_xticks(range(3), ["50% unstructured", "2:4", "4:8"])
    ax.set_yscale("log")
    ax.set_ylabel("test perplexity (bytes, log scale)")
    ax.set_title("one-shot pruning at 50% (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax = axes[1]
    families = {}
    for (name, sp), runs in rows.items():
        if sp >= 0.7 or name.startswith("IMP"):
            families.setdefault(name, []).append((sp, *stats(runs)))
    for i, (name, pts) in enumerate(families.items()):
        pts.sort()
        ax.errorbar([100 * p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                    capsize=3, label=name, color=f"C{i}")
    if d:
        ax.axhline(d, color="k", ls="--", lw=1, label="dense")
    ax.set_xlabel("sparsity of the block Linears (%)")
    ax.set_ylabel("test perplexity (bytes)")
    ax.set_title("gradual, sparse training from scratch, IMP")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
