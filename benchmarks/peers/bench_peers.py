"""sparsec against its peers on this machine: torch eager, sparsec, DeepSparse 1.8.0, ONNX Runtime.

Cases: BERT-base (transformers.BertConfig(), random weights, eager attention, every encoder Linear
pruned to 90% by magnitude, seq 128, batch 1; and the same model dense) and single Linears 3072x768 /
768x3072 at N=64, 90%. OpenVINO is an optional engine (reported "not installed" when the venv lacks it).
Then the issue's other target rows (benchmarks/peers/targets.py): section "targets" lists every target
with its figure and met/missed.
Every engine runs in interleaved rotating rounds within one run (DeepSparse and ONNX Runtime in a
worker process in their own venv, see setup_venv.sh), medians of all timed calls, the output of each
checked against torch eager, and the machine flagged busy when the load average or a fixed 1024^3 GEMM
before/after says other processes ran. Writes section "peers" of benchmarks/RESULTS.md.

    bash benchmarks/peers/setup_venv.sh                 # once: /work/venvs/deepsparse{,-export}
    python benchmarks/peers/bench_peers.py [--quick] [--venv /work/venvs/deepsparse] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = "/work/venvs/deepsparse"
#: pause after each engine's turn: ORT's threads spin ~36 ms after a call, torch's libgomp workers and
#: DeepSparse's after theirs; on 2 cores a spinning pool left behind slows whichever engine runs next
SETTLE_S = 0.2


def _reexec_with_onnx(venv: str) -> None:
    """torch.onnx.export needs the onnx package, which the test environment does not carry: rerun this
    script under setup_venv.sh's export venv (the host's packages plus onnx) when it is missing."""
    try:
        import onnx  # noqa: F401
        return
    except ImportError:
        pass
    py = Path(f"{venv}-export/bin/python")
    if not py.exists() or os.environ.get("SPARSEC_PEERS_REEXEC"):
        sys.exit(f"bench_peers: the onnx package is missing and {py} does not exist; run "
                 f"benchmarks/peers/setup_venv.sh {venv} first")
    os.environ["SPARSEC_PEERS_REEXEC"] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.execv(str(py), [str(py), *sys.argv])


class Worker:
    """DeepSparse and ONNX Runtime in the peers' venv, over JSON lines."""

    def __init__(self, venv: str) -> None:
        env = dict(os.environ, NM_DISABLE_ANALYTICS="1")
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [f"{venv}/bin/python", str(Path(__file__).with_name("worker.py"))], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env,
        )

    def call(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the peers' worker exited (see its stderr above)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def gemm_seconds() -> float:
    """A fixed 1024^3 GEMM, median of 10, on the current threads (the machine's quietness yardstick)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    ts = []
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def build_cases(quick: bool):
    """name -> (model, example inputs); every Linear pruned 90% by magnitude, random weights."""
    import torch
    import transformers

    from sparsec.demo import prune_linears

    torch.manual_seed(0)
    cfg = transformers.BertConfig(attn_implementation="eager")
    if quick:
        cfg.num_hidden_layers = 2  # --quick: the same layers, fewer of them

    class Bert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertModel(cfg, add_pooling_layer=False)

        def forward(self, ids):
            return self.bert(input_ids=ids).last_hidden_state

    ids = torch.randint(0, cfg.vocab_size, (1, 128))
    tag = " (2 layers, --quick)" if quick else ""
    dense = Bert().eval()
    bert = Bert().eval()
    prune_linears(bert.bert.encoder, 0.9)
    cases = {f"BERT-base{tag} 90%, seq 128, batch 1": (bert, (ids,)),
             f"BERT-base{tag} dense, seq 128, batch 1": (dense, (ids,))}
    for out_f, in_f in ((3072, 768), (768, 3072)):
        lin = prune_linears(torch.nn.Linear(in_f, out_f).eval(), 0.9)
        cases[f"Linear {out_f}x{in_f}, N=64, 90%"] = (lin, (torch.randn(64, in_f),))
    return cases


def run(args) -> str:
    import numpy as np
    import torch

    import sparsec
    from sparsec.bench.machine import machine_info
    from sparsec.bench.sections import write_section

    torch.set_num_threads(args.threads)
    load0, gemm0 = os.getloadavg()[0], gemm_seconds()
    rounds, reps = (3, 5) if args.quick else (10, 10)
    tmp = Path(tempfile.mkdtemp(prefix="sparsec-peers-"))
    worker = Worker(args.venv)
    versions = worker.call(cmd="versions")
    rows, medians = [], {}
    cases = build_cases(args.quick)
    for ci, (name, (model, inputs)) in enumerate(cases.items()):
        with torch.no_grad():
            want = model(*inputs).numpy()
        onnx_path = tmp / f"case{ci}.onnx"
        with warnings.catch_warnings():  # the legacy exporter is deprecated, and the one DeepSparse reads
            warnings.simplefilter("ignore")
            torch.onnx.export(model, inputs, str(onnx_path), dynamo=False, opset_version=14,
                              input_names=[f"in{i}" for i in range(len(inputs))], output_names=["out"])
        model.eval()  # the exporter restores the wrapper's training flag
        npys = []
        for i, x in enumerate(inputs):
            npys.append(str(tmp / f"case{ci}-in{i}.npy"))
            np.save(npys[-1], x.numpy())
        t = time.perf_counter()
        cm = sparsec.sparse_compile(model, inputs, target="cpu")
        engines = {"torch eager": lambda m=model, xs=inputs: m(*xs), "sparsec": lambda c=cm, xs=inputs: c(*xs)}
        notes = {"sparsec": f"compile {time.perf_counter() - t:.0f} s"}
        for peer, key in (("DeepSparse", "deepsparse"), ("ONNX Runtime", "ort"), ("OpenVINO", "openvino")):
            r = worker.call(cmd="load", name=f"{ci}-{key}", engine=key, path=str(onnx_path), threads=args.threads,
                            batch=int(inputs[0].shape[0]))
            if r["ok"]:
                engines[peer] = f"{ci}-{key}"
                notes[peer] = f"load {r['load_s']:.0f} s"
            elif key == "openvino" and "No module named" in r["error"]:
                notes[peer] = "not installed in the peers' venv (optional)"
            else:
                notes[peer] = r["error"][:80]
        times = {e: [] for e in engines}
        errors: dict[str, float] = {}
        order = list(engines)
        for rnd in range(rounds):
            for e in order[rnd % len(order):] + order[:rnd % len(order)]:  # rotate who goes first
                fn = engines[e]
                if isinstance(fn, str):
                    out = str(tmp / f"case{ci}-{e}.npy")
                    r = worker.call(cmd="run", name=fn, inputs=npys, reps=reps, out=out)
                    if not r["ok"]:
                        notes[e] = f"run failed: {r['error'][:80]}"
                        continue
                    times[e] += r["times"]
                    got = np.load(out)
                else:
                    with torch.no_grad():
                        got = fn().numpy()  # also the untimed first call of this round
                        for _ in range(reps):
                            t = time.perf_counter()
                            fn()
                            times[e].append(time.perf_counter() - t)
                err = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
                errors[e] = max(errors.get(e, 0.0), err)
                time.sleep(SETTLE_S)
        medians[name] = {e: statistics.median(t) for e, t in times.items() if t}
        eager = statistics.median(times["torch eager"])
        for e in ["torch eager", "sparsec", "DeepSparse", "ONNX Runtime", "OpenVINO"]:
            if e not in engines or not times.get(e):
                rows.append((name, e, None, None, None, notes.get(e, "not installed (optional)" if e == "OpenVINO"
                                                                 else "not run")))
                continue
            med = statistics.median(times[e])
            rows.append((name, e, med, eager / med, errors[e], notes.get(e, "")))
        print(f"{name}: " + ", ".join(f"{e} {statistics.median(t) * 1e3:.2f} ms" for e, t in times.items() if t),
              flush=True)
    worker.close()
    # the target rows that are not peer ratios (benchmarks/peers/targets.py)
    sys.path.insert(0, str(Path(__file__).parent))
    import targets

    print("targets: kernel rates, poisoned calibration, BERT 1 thread", flush=True)
    rates = targets.kernel_rates(args.threads, rounds, reps)
    guard = targets.poisoned_calibration(args.threads)
    bert_model, bert_inputs = next(v for k, v in cases.items() if "90%" in k and k.startswith("BERT"))
    one = targets.bert_one_thread(bert_model, bert_inputs[0], rounds, max(2, reps // 2))
    torch.set_num_threads(args.threads)
    load1, gemm1 = os.getloadavg()[0], gemm_seconds()
    cores = os.cpu_count() or 1
    # the load average counts this run's own threads at the end (not at the start, which may still hold
    # an earlier job's tail): other processes ran when what is left exceeds half the cores
    busy = max(load0, load1 - args.threads) > 0.5 * cores or gemm1 > 1.3 * gemm0
    info = machine_info(args.threads)
    lines = [
        f"Peers, {'--quick (2-layer BERT, 3 rounds x 5 calls)' if args.quick else 'full (10 rounds x 10 calls)'}, "
        f"{args.threads} threads each, {info['cpu']}, {info['date']}, commit {info['commit']}. "
        f"DeepSparse {versions.get('deepsparse')}, ONNX Runtime {versions.get('onnxruntime')}, torch {torch.__version__}.",
        "",
        f"Machine: load average {load0:.2f} -> {load1:.2f}; 1024^3 GEMM {gemm0 * 1e3:.1f} -> {gemm1 * 1e3:.1f} ms"
        + (" — **BUSY: other processes ran; these figures are not the machine's**" if busy else " (quiet)."),
        "",
        "Command: `python benchmarks/peers/bench_peers.py" + (" --quick" if args.quick else "") + "` "
        "(after `bash benchmarks/peers/setup_venv.sh`).",
        "",
        "| case | engine | median ms | vs eager | max rel. error | note |",
        "|---|---|---|---|---|---|",
    ]
    for name, e, med, speed, err, note in rows:
        if med is None:
            lines.append(f"| {name} | {e} | – | – | – | {note} |")
        else:
            ok = "" if err < 1e-3 else " **WRONG**"
            lines.append(f"| {name} | {e} | {med * 1e3:.2f} | {speed:.2f}x | {err:.1e}{ok} | {note} |")
    md = "\n".join(lines)
    write_section(args.results, "peers", md)
    head = lines[0] + "\n\n" + lines[2] + "\n\n"
    tmd = head + targets.targets_markdown(medians, rates, one, guard, args.quick)
    write_section(args.results, "targets", tmd)
    return md + "\n\n" + tmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2-layer BERT, 3 rounds (< 60 s once kernels are cached)")
    ap.add_argument("--venv", default=DEFAULT_VENV, help="the DeepSparse venv made by setup_venv.sh")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()
    if not Path(f"{args.venv}/bin/python").exists():
        sys.exit(f"bench_peers: no venv at {args.venv}; run benchmarks/peers/setup_venv.sh {args.venv}")
    _reexec_with_onnx(args.venv)
    print(run(args))


if __name__ == "__main__":
    main()
