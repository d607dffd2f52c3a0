#!/usr/bin/env python
"""GPU benchmark of the sparsec Triton kernels against cuBLAS and PyTorch's sparse paths.

    python benchmarks/bench_gpu.py                       # writes benchmarks/RESULTS_GPU.md (+ .json)
    python benchmarks/bench_gpu.py results/h100.md --sweep

For every weight shape W [out, in] (4096x4096, 4096x11008, 11008x4096) and every N (1, 16, 256, 2048),
in fp16, it times Y = X @ W^T with:

* dense: cuBLAS ``F.linear`` (the baseline of every speedup);
* BSR 16x16 / 32x32 / 64x64 at 90% block sparsity: sparsec ``bsr_linear`` and ``torch.sparse`` BSR;
* CSR at 95% unstructured sparsity: sparsec ``csr_linear`` and ``torch.sparse`` CSR (cuSPARSE);
* 2:4: sparsec ``nm_linear`` (Triton, dense MMA on decompressed tiles) and PyTorch's semi-structured
  path (cuSPARSELt and CUTLASS sparse tensor cores) + the sparsec epilogue pass.

Every result is checked against a dense fp32 reference on every element of every row (sparsec
outputs are first filled with NaN, so an unwritten element fails). Times are medians of
``triton.testing.do_bench`` (L2 flushed between runs). The markdown report carries the card's name
and the command; the JSON next to it holds the raw records and, for 2:4, the measured choice
between the Triton kernel and the semi-structured path per (shape, N) — what the compiler's selector
reads. ``--sweep`` also times launch configurations around the cost model's pick.

Without a CUDA GPU it exits with a message (``--smoke`` runs tiny shapes in the Triton interpreter
on the CPU to exercise the harness; its timings mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import sparsec  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsec.codegen.triton import (  # noqa: E402
    LaunchConfig,
    bsr_linear,
    csr_linear,
    nm_linear,
    prepare_semi_structured,
    semi_structured_linear,
    semi_structured_supported,
)
from sparsec.codegen.triton.layouts import dense_to_bsr, dense_to_csr, dense_to_nm, prune_nm  # noqa: E402
from sparsec.codegen.triton.testing import RTOL  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ACTS = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}
NO_GPU = ("bench_gpu.py: no CUDA GPU is available (torch.cuda.is_available() is False). This benchmark "
          "times GPU kernels and needs an NVIDIA GPU; use --smoke to exercise the harness on the CPU.")


@dataclass
class Record:
    """One measured (shape, N, pattern, implementation)."""

    out_features: int
    in_features: int
    n_rows: int
    pattern: str
    sparsity: float
    impl: str
    time_us: float | None = None
    speedup: float | None = None
    ok: bool | None = None
    worst: float | None = None
    bad_rows: int | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Problem:
    """Shared inputs of one (shape, N)."""

    x: torch.Tensor
    bias: torch.Tensor | None
    residual: torch.Tensor | None
    activation: str | None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", nargs="?", default="benchmarks/RESULTS_GPU.md", help="markdown report path")
    p.add_argument("--shapes", default="4096x4096,4096x11008,11008x4096", help="comma list of OUTxIN")
    p.add_argument("--n", default="1,16,256,2048", help="comma list of N (rows of X)")
    p.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    p.add_argument("--blocks", default="16,32,64", help="square BSR block sizes")
    p.add_argument("--bsr-sparsity", type=float, default=0.9)
    p.add_argument("--csr-sparsity", type=float, default=0.95)
    p.add_argument("--epilogue", default="none",
                   help="'none' (plain matmul) or a comma list of bias, relu|gelu|silu|tanh, residual")
    p.add_argument("--sweep", action="store_true", help="also time launch configs around the cost model's pick")
    p.add_argument("--warmup", type=int, default=25, help="do_bench warmup (ms)")
    p.add_argument("--rep", type=int, default=100, help="do_bench repetitions (ms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny shapes in the Triton interpreter on the CPU")
    args = p.parse_args(argv)
    if args.smoke and args.shapes == p.get_default("shapes"):
        args.shapes, args.n, args.blocks = "48x80,80x48", "1,5,33", "16,32"
    return args


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _epilogue(spec: str) -> tuple[bool, str | None, bool]:
    parts = {p.strip() for p in spec.split(",") if p.strip() and p.strip() != "none"}
    acts = parts & {"relu", "gelu", "silu", "tanh"}
    unknown = parts - acts - {"bias", "residual"}
    if unknown or len(acts) > 1:
        raise SystemExit(f"bench_gpu.py: bad --epilogue {spec!r}")
    return "bias" in parts, next(iter(acts), None), "residual" in parts


class Timer:
    """Median time in microseconds: do_bench on the GPU, perf_counter in smoke mode."""

    def __init__(self, gpu: bool, warmup: int, rep: int) -> None:
        self.gpu, self.warmup, self.rep = gpu, warmup, rep

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.gpu:
            import triton.testing

            return 1000.0 * triton.testing.do_bench(fn, warmup=self.warmup, rep=self.rep, return_mode="median")
        fn()
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return 1e6 * statistics.median(samples)


def check(y: torch.Tensor, w: torch.Tensor, prob: Problem, extra_roundings: int = 0) -> tuple[bool, float, int]:
    """Compare ``y`` with an fp32 reference on the device, every element of every row.

    ``extra_roundings`` counts the intermediate results an eager baseline rounds to the dtype (one per
    epilogue op after the matmul); the fused kernels round once. Returns (ok, worst error / tolerance,
    number of rows with an element out of tolerance or NaN).
    """
    with torch.no_grad():
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            x, wf = prob.x.float(), w.float()
            ref = x @ wf.t()
            mag = x.abs() @ wf.abs().t()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        if prob.bias is not None:
            ref, mag = ref + prob.bias.float(), mag + prob.bias.float().abs()
        ref = ACTS[prob.activation](ref)
        if prob.residual is not None:
            ref, mag = ref + prob.residual.float(), mag + prob.residual.float().abs()
        # Output rounding of the dtype, plus fp32 accumulation-order differences (cuBLAS split-K,
        # reduced-precision reductions) and intermediate roundings, relative to the magnitude of the sum.
        tol = RTOL[y.dtype] * ref.abs() + (1e-4 + extra_roundings * RTOL[y.dtype]) * mag + 1e-6
        ratio = (y.float() - ref).abs() / tol
        ratio = torch.where(torch.isnan(ratio), torch.full_like(ratio, float("inf")), ratio)
        bad_rows = int((ratio > 1).any(dim=1).sum())
        return bad_rows == 0, float(ratio.max()) if ratio.numel() else 0.0, bad_rows


def _eager_epilogue(y: torch.Tensor, prob: Problem, bias_done: bool = False) -> torch.Tensor:
    if prob.bias is not None and not bias_done:
        y = y + prob.bias
    y = ACTS[prob.activation](y)
    if prob.residual is not None:
        y = y + prob.residual
    return y


def _block_sparse(w: torch.Tensor, block: int, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    rb, cb = -(-w.shape[0] // block), -(-w.shape[1] // block)
    keep = torch.rand(rb, cb, generator=gen, device="cpu") >= sparsity
    mask = keep.repeat_interleave(block, 0).repeat_interleave(block, 1)[: w.shape[0], : w.shape[1]]
    return w * mask.to(w.device)


def _unstructured(w: torch.Tensor, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    return w * (torch.rand(w.shape, generator=gen, device="cpu") >= sparsity).to(w.device)


class Bench:
    """Runs the measurements of one (shape, N) and collects records."""

    def __init__(self, args: argparse.Namespace, device: torch.device, timer: Timer) -> None:
        self.args, self.device, self.timer = args, device, timer
        self.dtype = DTYPES[args.dtype]
        self.records: list[Record] = []
        self.sweeps: list[dict] = []
        self.interpret = device.type != "cuda"

    def measure(self, base: Record, w: torch.Tensor, prob: Problem, fn: Callable[[torch.Tensor | None], torch.Tensor],
                poison: bool, dense_us: float | None, extra_roundings: int = 0) -> Record:
        """Time ``fn`` and check its output; failures become a note instead of aborting the run."""
        rec = base
        try:
            out = None
            if poison:
                out = torch.full((prob.x.shape[0], w.shape[0]), float("nan"), dtype=self.dtype, device=self.device)
            y = fn(out)
            rec.ok, rec.worst, rec.bad_rows = check(y, w, prob, extra_roundings)
            rec.time_us = self.timer(lambda: fn(out))
            if dense_us is not None and rec.time_us:
                rec.speedup = dense_us / rec.time_us
        except Exception as exc:  # noqa: BLE001 - report any library limitation in the table
            rec.note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        self.records.append(rec)
        status = "ok" if rec.ok else ("FAIL" if rec.ok is False else "-")
        t = f"{rec.time_us:10.1f} us" if rec.time_us is not None else "       n/a"
        print(f"  {rec.pattern:>9} {rec.impl:<34} {t}  {status} {rec.note}", flush=True)
        return rec

    def run_shape(self, out_f: int, in_f: int, n_rows: int, gen: torch.Generator) -> None:
        args, dev, dt = self.args, self.device, self.dtype
        has_bias, act, has_res = _epilogue(args.epilogue)

        def rnd(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen).to(device=dev, dtype=dt)

        w = rnd(out_f, in_f) * 0.05
        prob = Problem(rnd(n_rows, in_f), rnd(out_f) if has_bias else None,
                       rnd(n_rows, out_f) if has_res else None, act)
        rec = lambda pattern, sparsity, impl: Record(out_f, in_f, n_rows, pattern, sparsity, impl)  # noqa: E731
        kw = dict(bias=prob.bias, activation=act, residual=prob.residual)
        eager = int(act is not None) + int(has_res)  # roundings of the unfused epilogue after F.linear

        dense = self.measure(rec("dense", 0.0, "cuBLAS F.linear"), w, prob,
                             lambda out: _eager_epilogue(F.linear(prob.x, w, prob.bias), prob, True), False, None,
                             eager)
        base = dense.time_us

        for b in _ints(args.blocks):
            wb = _block_sparse(w, b, args.bsr_sparsity, gen)
            ip, ix, vals = dense_to_bsr(wb, (b, b))
            pat = f"bsr{b}x{b}"
            self.measure(rec(pat, args.bsr_sparsity, "sparsec triton bsr_linear"), wb, prob,
                         lambda out, ip=ip, ix=ix, vals=vals, b=b: bsr_linear(
                             prob.x, ip, ix, vals, (b, b), out_f, **kw, out=out, interpret=self.interpret),
                         True, base)
            self.measure(rec(pat, args.bsr_sparsity, "torch.sparse BSR (mm)"), wb, prob,
                         self._torch_sparse(wb, prob, "bsr", b), False, base, eager + int(has_bias))
            if args.sweep and n_rows >= 256:
                self.sweep("bsr", pat, wb, prob, lambda cfg, ip=ip, ix=ix, vals=vals, b=b: bsr_linear(
                    prob.x, ip, ix, vals, (b, b), out_f, **kw, config=cfg, interpret=self.interpret),
                    [LaunchConfig(bn, b, b, nw, ns) for bn in (32, 64, 128) for nw in (4, 8) for ns in (2, 3, 4)])

        wc = _unstructured(w, args.csr_sparsity, gen)
        ip, ix, vals = dense_to_csr(wc)
        self.measure(rec("csr", args.csr_sparsity, "sparsec triton csr_linear"), wc, prob,
                     lambda out: csr_linear(prob.x, ip, ix, vals, out_f, **kw, out=out, interpret=self.interpret),
                     True, base)
        self.measure(rec("csr", args.csr_sparsity, "torch.sparse CSR (cuSPARSE mm)"), wc, prob,
                     self._torch_sparse(wc, prob, "csr", 0), False, base, eager + int(has_bias))
        if args.sweep and n_rows >= 256:
            self.sweep("csr", "csr", wc, prob, lambda cfg: csr_linear(
                prob.x, ip, ix, vals, out_f, **kw, config=cfg, interpret=self.interpret),
                [LaunchConfig(bn, bo, bk, nw, ns) for bn in (64, 128) for bo in (16, 32) for bk in (16, 32, 64)
                 for nw in (4, 8) for ns in (2, 3)])

        wn = prune_nm(w, 2, 4)
        nv, ni = dense_to_nm(wn, 2, 4)
        self.measure(rec("2:4", 0.5, "sparsec triton nm_linear"), wn, prob,
                     lambda out: nm_linear(prob.x, nv, ni, 2, 4, in_f, **kw, out=out, interpret=self.interpret),
                     True, base)
        for backend in ("cusparselt", "cutlass"):
            impl = f"torch semi-structured ({backend})"
            ok, reason = semi_structured_supported(dev)
            if not ok:
                r = rec("2:4", 0.5, impl)
                r.note = reason
                self.records.append(r)
                print(f"  {'2:4':>9} {impl:<34}        n/a  - {reason}", flush=True)
                continue
            try:
                wss = prepare_semi_structured(nv, ni, 2, 4, in_f, backend=backend)
            except Exception as exc:  # noqa: BLE001
                r = rec("2:4", 0.5, impl)
                r.note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                self.records.append(r)
                continue
            self.measure(rec("2:4", 0.5, impl), wn, prob,
                         lambda out, wss=wss: semi_structured_linear(prob.x, wss, **kw, out=out), True, base)
        if args.sweep and n_rows >= 256:
            self.sweep("nm", "2:4", wn, prob, lambda cfg: nm_linear(
                prob.x, nv, ni, 2, 4, in_f, **kw, config=cfg, interpret=self.interpret),
                [LaunchConfig(bn, bo, bk, nw, ns) for bn in (64, 128) for bo in (32, 64, 128) for bk in (32, 64)
                 for nw in (4, 8) for ns in (2, 3)])

    def _torch_sparse(self, w: torch.Tensor, prob: Problem, layout: str, block: int) -> Callable:
        cache: dict[str, torch.Tensor] = {}

        def run(out: torch.Tensor | None) -> torch.Tensor:
            # Converted on first use so a conversion error is reported like a matmul error.
            if "sp" not in cache:
                cache["sp"] = w.to_sparse_bsr((block, block)) if layout == "bsr" else w.to_sparse_csr()
            # Y^T = W_sparse @ X^T; the transposed view is what a caller would consume.
            return _eager_epilogue(torch.mm(cache["sp"], prob.x.t()).t(), prob)

        return run

    def sweep(self, kernel: str, pattern: str, w: torch.Tensor, prob: Problem, fn: Callable,
              configs: list[LaunchConfig]) -> None:
        """Time each config; record the cost model's pick (config=None) next to the best one."""
        times = {}
        for cfg in [None, *configs]:
            try:
                y = fn(cfg)
                if not check(y, w, prob)[0]:
                    continue
                times[cfg] = self.timer(lambda cfg=cfg: fn(cfg))
            except Exception:  # noqa: BLE001 - e.g. out of shared memory for a big config
                continue
        if None not in times:
            return
        best = min((c for c in times if c is not None), key=times.__getitem__, default=None)
        self.sweeps.append(dict(kernel=kernel, pattern=pattern, out_features=w.shape[0], in_features=w.shape[1],
                                n_rows=prob.x.shape[0], model_us=times[None],
                                best_us=times[best] if best else times[None], best_config=asdict(best) if best else None,
                                tried=len(times)))


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def render(bench: Bench, args: argparse.Namespace, device_name: str, command: str) -> tuple[str, dict]:
    """Build the markdown report and the JSON payload."""
    recs = bench.records
    lines = [f"# sparsec GPU benchmark — {device_name}", "",
             f"- command: `{command}`",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
             f"- torch {torch.__version__}, triton {_triton_version()}, CUDA {torch.version.cuda}, "
             f"python {platform.python_version()}",
             f"- dtype {args.dtype}; epilogue: {args.epilogue}; BSR block sparsity {args.bsr_sparsity:.0%}, CSR "
             f"sparsity {args.csr_sparsity:.0%}, 2:4 = 50%",
             "- time: median of triton.testing.do_bench (L2 flushed); speedup = cuBLAS dense time / time; "
             "TFLOP/s counts the dense-equivalent 2*N*out*in",
             "- check: every element of every row against an fp32 reference (sparsec outputs NaN-poisoned "
             "first); `worst` = max |error| / tolerance", ""]
    if args.smoke:
        lines.insert(2, "**SMOKE RUN on the CPU (Triton interpreter): timings are meaningless.**\n")
    lines += ["| W [out x in] | N | pattern | implementation | time (us) | vs cuBLAS (x) | TFLOP/s | check | note |",
              "|---|---:|---|---|---:|---:|---:|---|---|"]
    for r in recs:
        flops = 2.0 * r.n_rows * r.out_features * r.in_features
        tflops = flops / (r.time_us * 1e-6) / 1e12 if r.time_us else None
        chk = "n/a" if r.ok is None else (f"ok ({r.worst:.2f})" if r.ok else f"FAIL: {r.bad_rows} rows ({r.worst:.3g})")
        lines.append(f"| {r.out_features}x{r.in_features} | {r.n_rows} | {r.pattern} | {r.impl} | "
                     f"{_fmt(r.time_us, '.1f')} | {_fmt(r.speedup, '.2f')} | {_fmt(tflops, '.1f')} | {chk} | "
                     f"{r.note} |")

    # Issue targets (H100): measured by the best sparsec option for each pattern.
    targets = [("bsr32x32", 5.0, "BSR 32x32 @ 90% >= 5x cuBLAS"), ("csr", 2.0, "CSR @ 95% >= 2x cuBLAS"),
               ("2:4", 1.3, "2:4 >= 1.3x cuBLAS")]
    lines += ["", "## Targets (N >= 256)", "", "| target | W | N | best sparsec option | speedup (x) | met |",
              "|---|---|---:|---|---:|---|"]
    for pattern, goal, label in targets:
        for key in sorted({(r.out_features, r.in_features, r.n_rows) for r in recs if r.pattern == pattern}):
            if key[2] < 256:
                continue
            cands = [r for r in recs if (r.out_features, r.in_features, r.n_rows) == key and r.pattern == pattern
                     and r.ok and r.speedup and not r.impl.startswith("torch.sparse")]
            best = max(cands, key=lambda r: r.speedup, default=None)
            lines.append(f"| {label} | {key[0]}x{key[1]} | {key[2]} | {best.impl if best else 'n/a'} | "
                         f"{_fmt(best.speedup if best else None, '.2f')} | "
                         f"{'yes' if best and best.speedup >= goal else 'no'} |")

    # 2:4 selector: Triton kernel vs semi-structured, by measured time.
    selector = []
    lines += ["", "## 2:4 selector (measured)", "",
              "| W | N | triton nm (us) | semi-structured best (us) | choose |", "|---|---:|---:|---:|---|"]
    for key in sorted({(r.out_features, r.in_features, r.n_rows) for r in recs if r.pattern == "2:4"}):
        rows = [r for r in recs if (r.out_features, r.in_features, r.n_rows) == key and r.pattern == "2:4"
                and r.ok and r.time_us]
        tri = next((r for r in rows if r.impl.startswith("sparsec")), None)
        ss = min((r for r in rows if r.impl.startswith("torch semi")), key=lambda r: r.time_us, default=None)
        choice = min([c for c in (tri, ss) if c], key=lambda r: r.time_us, default=None)
        selector.append(dict(out_features=key[0], in_features=key[1], n_rows=key[2],
                             triton_us=tri.time_us if tri else None, semi_structured_us=ss.time_us if ss else None,
                             semi_structured_impl=ss.impl if ss else None, choice=choice.impl if choice else None))
        lines.append(f"| {key[0]}x{key[1]} | {key[2]} | {_fmt(tri.time_us if tri else None, '.1f')} | "
                     f"{_fmt(ss.time_us if ss else None, '.1f')}{f' ({ss.impl[22:-1]})' if ss else ''} | "
                     f"{choice.impl if choice else 'n/a'} |")

    if bench.sweeps:
        lines += ["", "## Launch parameters: cost model vs best of the sweep", "",
                  "| kernel | W | N | model (us) | best (us) | best config | configs |",
                  "|---|---|---:|---:|---:|---|---:|"]
        for s in bench.sweeps:
            lines.append(f"| {s['pattern']} | {s['out_features']}x{s['in_features']} | {s['n_rows']} | "
                         f"{s['model_us']:.1f} | {s['best_us']:.1f} | {s['best_config']} | {s['tried']} |")
    failed = [r for r in recs if r.ok is False]
    lines += ["", f"**{len(failed)} correctness failure(s).**" if failed else "All checked outputs are correct.", ""]
    payload = dict(device=device_name, command=command, dtype=args.dtype, epilogue=args.epilogue,
                   records=[asdict(r) for r in recs], selector_2_4=selector, sweeps=bench.sweeps)
    return "\n".join(lines), payload


def _triton_version() -> str:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return "missing"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = torch.cuda.is_available() and not args.smoke
    if not gpu and not args.smoke:
        print(NO_GPU, file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=".*Sparse (BSR|CSR) tensor support is in beta.*")
    device = torch.device("cuda" if gpu else "cpu")
    device_name = torch.cuda.get_device_name(device) if gpu else f"CPU smoke run ({platform.processor() or 'cpu'})"
    command = "python " + " ".join(shlex.quote(a) for a in ([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])))
    if gpu:
        major, minor = torch.cuda.get_device_capability(device)
        device_name += f" (sm_{major}{minor})"
    bench = Bench(args, device, Timer(gpu, args.warmup, args.rep))
    gen = torch.Generator().manual_seed(args.seed)
    for shape in args.shapes.split(","):
        out_f, in_f = (int(v) for v in shape.lower().split("x"))
        for n_rows in _ints(args.n):
            print(f"W {out_f}x{in_f}, N={n_rows}:", flush=True)
            bench.run_shape(out_f, in_f, n_rows, gen)
            if gpu:
                torch.cuda.empty_cache()
    text, payload = render(bench, args, device_name, command)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 1 if any(r.ok is False for r in bench.records) else 0


if __name__ == "__main__":
    sys.exit(main())
