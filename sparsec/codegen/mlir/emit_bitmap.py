"""Small-N kernels for 16-bit weights stored as a bitmap plus packed values (and 2:4 with a nibble per group).

At N = 1 (LLM decode) a linear layer's time is the bytes of its weight. Dense bf16 reads 2 B per weight;
CSR with 16-bit column indices reads 2 B value + 2 B index per nonzero, as much as dense at 50%. A bitmap
reads one bit per weight plus the packed values: 1/8 + 2 d bytes per weight (1.125 B at d = 0.5, 0.73 B at
0.3, 1.53 B at 0.7). 2:4 with a 4-bit mask per group of four is the same 1.125 B, with the values at fixed
offsets (no running count).

The kernel walks the input dimension in steps of 8 weights. For each step and row it loads the row's mask
byte, a 16-byte ``pshufb`` control for that byte from a 4 KB table (the table is built once, see
``shuffle_table``), and 16 bytes of packed values at the row's running byte offset; ``pshufb`` spreads the
mask's values to their 8 positions (zeros elsewhere), they are widened to f32 (bf16 by a shift, fp16 by
F16C) and multiplied with 8 f32 lanes of X by one FMA; the offset advances by 2 bytes per set bit
(``popcount``; a constant 8 bytes for 2:4). ``rows_per_step`` rows share each X load. After the walk each
accumulator is reduced, the epilogue (bias, activation, residual) applied in f32, and the result rounded
to the 16-bit dtype once. X comes as f32 [N, cols] (the runtime widens it once per call), Y is [N, rows]
in the layer's dtype (a strided view into the full output).

``pshufb`` (SSSE3) has no MLIR vector op: it is an LLVM intrinsic call, so the kernel is x86-only;
``available()`` says whether this host has it.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from sparsec.codegen.mlir.emit_rowvec import _load_f32, _to_dtype
from sparsec.codegen.mlir.mathfn import Builder, activation
from sparsec.codegen.spec import ACTIVATIONS

#: weights per step: one mask byte
STEP = 8
_PIPELINE = "builtin.module(convert-scf-to-cf, convert-vector-to-llvm, convert-to-llvm, reconcile-unrealized-casts)"
_PSHUFB = "llvm.x86.ssse3.pshuf.b.128"


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether this host runs the kernels: x86-64 with SSSE3 (pshufb) and F16C (fp16 widening)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"ssse3", "f16c", "fma", "avx2", "popcnt"} <= flags
    except OSError:
        return False
    return False


def shuffle_table() -> np.ndarray:
    """The 256 x 16-byte pshufb controls: for mask byte ``m``, 16-bit lane ``k`` takes packed value
    ``popcount(m & (2**k - 1))`` when bit ``k`` is set, else zero (control byte 0x80)."""
    lut = np.full((256, 16), 0x80, dtype=np.uint8)
    for m in range(256):
        r = 0
        for k in range(8):
            if m >> k & 1:
                lut[m, 2 * k], lut[m, 2 * k + 1] = 2 * r, 2 * r + 1
                r += 1
    return lut.reshape(-1)


@dataclass(frozen=True)
class BitmapSpec:
    """The kernel of one row slab: ``rows`` x ``cols`` (cols a multiple of 8) at ``n`` input rows.

    ``fixed`` is 2:4 (4 values per mask byte, at fixed offsets; no per-row value starts); ``dtype`` is
    ``bf16`` or ``f16``; the bias is f32; ``rows`` is a multiple of ``rows_per_step``."""

    rows: int
    cols: int
    n: int
    dtype: str = "bf16"
    fixed: bool = False
    bias: bool = False
    activation: str | None = None
    residual: bool = False
    rows_per_step: int = 4

    def __post_init__(self) -> None:
        if self.dtype not in ("bf16", "f16"):
            raise ValueError(f"bitmap kernels take bf16 or f16 values, not {self.dtype!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.cols % STEP or self.cols <= 0 or self.rows <= 0 or self.n < 1:
            raise ValueError(f"bad bitmap kernel shape {self.rows}x{self.cols} (cols a multiple of {STEP}), n={self.n}")
        if self.rows_per_step < 1 or self.rows % self.rows_per_step:
            raise ValueError(f"rows {self.rows} is not a multiple of rows_per_step {self.rows_per_step}")

    @property
    def format(self) -> str:
        """The format family, for reports."""
        return "nm2:4c" if self.fixed else "bitmap"

    @property
    def name(self) -> str:
        """A readable, unique symbol name for the kernel."""
        digest = hashlib.sha1(repr(asdict(self)).encode()).hexdigest()[:10]
        return f"sparsec_{'nm24c' if self.fixed else 'bitmap'}_{self.rows}x{self.cols}_n{self.n}_{digest}"

    def emit_mlir(self) -> tuple[str, str]:
        """(MLIR source, lowering pipeline); jit.compile_kernel calls this."""
        return emit_bitmap_kernel(self), _PIPELINE


def kernel_args(spec: BitmapSpec) -> list[str]:
    """mask, [vstart], values (bytes), table, x, [bias], [residual], out: the order the runtime passes."""
    ot = f"memref<{spec.n}x{spec.rows}x{spec.dtype}, strided<[?, 1]>>"
    args = ["%mask: memref<?xi8>"]
    if not spec.fixed:
        args.append("%vstart: memref<?xi32>")
    args += ["%vals: memref<?xi8>", "%lut: memref<4096xi8>", f"%x: memref<{spec.n}x{spec.cols}xf32>"]
    if spec.bias:
        args.append(f"%bias: memref<{spec.rows}xf32>")
    if spec.residual:
        args.append(f"%res: {ot}")
    args.append(f"%out: {ot}")
    return args


def emit_bitmap_kernel(spec: BitmapSpec) -> str:
    """MLIR text of the kernel for ``spec``."""
    rps, n, ft = spec.rows_per_step, spec.n, spec.dtype
    groups = spec.cols // STEP
    ot = f"memref<{n}x{spec.rows}x{ft}, strided<[?, 1]>>"
    pairs = [(r, j) for r in range(rps) for j in range(n)]
    accs = [f"%a{r}_{j}" for r, j in pairs]
    offs = [f"%f{r}" for r in range(rps)]
    vt = "vector<8xf32>"
    lines = [
        f"llvm.func @{_PSHUFB}(vector<16xi8>, vector<16xi8>) -> vector<16xi8>",
        f"func.func @{spec.name}({', '.join(kernel_args(spec))}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        "  %c8 = arith.constant 8 : index",
        "  %c16 = arith.constant 16 : index",
        f"  %groups = arith.constant {groups} : index",
        f"  %rows = arith.constant {spec.rows} : index",
        f"  %rps = arith.constant {rps} : index",
        f"  %zv = arith.constant dense<0.0> : {vt}",
        "  %s16 = arith.constant dense<16> : vector<8xi32>",
        "  scf.for %rb = %c0 to %rows step %rps {",
    ]
    for r in range(rps):
        lines += [f"    %ro{r} = arith.constant {r} : index",
                  f"    %row{r} = arith.addi %rb, %ro{r} : index",
                  f"    %mb{r} = arith.muli %row{r}, %groups : index"]
        if spec.fixed:  # 4 values (8 bytes) per mask byte
            lines += [f"    %cb{r} = arith.constant {groups * 8} : index",
                      f"    %f0{r} = arith.muli %row{r}, %cb{r} : index"]
        else:
            lines += [f"    %vs{r} = memref.load %vstart[%row{r}] : memref<?xi32>",
                      f"    %vi{r} = arith.index_cast %vs{r} : i32 to index",
                      f"    %f0{r} = arith.addi %vi{r}, %vi{r} : index"]
    inits = ", ".join([f"{a} = %zv" for a in accs] + [f"{o} = %f0{r}" for r, o in enumerate(offs)])
    types = ", ".join([vt] * len(accs) + ["index"] * rps)
    lines.append(f"    %acc:{len(accs) + rps} = scf.for %g = %c0 to %groups step %c1 iter_args({inits}) -> ({types}) {{")
    lines.append("      %col = arith.muli %g, %c8 : index")
    for j in range(n):
        lines.append(f"      %xj{j} = arith.constant {j} : index")
        lines.append(f"      %x{j} = vector.load %x[%xj{j}, %col] : memref<{n}x{spec.cols}xf32>, {vt}")
    new_accs, new_offs = [], []
    for r in range(rps):
        lines += [
            f"      %mi{r} = arith.addi %mb{r}, %g : index",
            f"      %m{r} = memref.load %mask[%mi{r}] : memref<?xi8>",
            f"      %mw{r} = arith.extui %m{r} : i8 to i32",
            f"      %mx{r} = arith.index_cast %mw{r} : i32 to index",
            f"      %lo{r} = arith.muli %mx{r}, %c16 : index",
            f"      %ctl{r} = vector.load %lut[%lo{r}] : memref<4096xi8>, vector<16xi8>",
            f"      %vb{r} = vector.load %vals[{offs[r]}] : memref<?xi8>, vector<16xi8>",
            f"      %sh{r} = llvm.call @{_PSHUFB}(%vb{r}, %ctl{r}) : (vector<16xi8>, vector<16xi8>) -> vector<16xi8>",
        ]
        lines += ["      " + ln for ln in _widen(spec, f"%w{r}", f"%sh{r}")]
        if spec.fixed:
            lines.append(f"      %nf{r} = arith.addi {offs[r]}, %c8 : index")
        else:
            lines += [f"      %pc{r} = math.ctpop %mw{r} : i32",
                      f"      %pb{r} = arith.addi %pc{r}, %pc{r} : i32",
                      f"      %px{r} = arith.index_cast %pb{r} : i32 to index",
                      f"      %nf{r} = arith.addi {offs[r]}, %px{r} : index"]
        new_offs.append(f"%nf{r}")
        for j in range(n):
            lines.append(f"      %na{r}_{j} = vector.fma %w{r}, %x{j}, %a{r}_{j} : {vt}")
            new_accs.append(f"%na{r}_{j}")
    lines.append(f"      scf.yield {', '.join(new_accs + new_offs)} : {types}")
    lines.append("    }")
    for q, (r, j) in enumerate(pairs):
        lines += _epilogue(spec, r, j, q, ot)
    lines += ["  }", "  return", "}"]
    head = (f"// {spec.format} Y = X W^T at N={n}: mask byte -> pshufb expands packed {ft} values, f32 FMA\n")
    return head + "module {\n" + "\n".join(lines) + "\n}\n"


def _widen(spec: BitmapSpec, name: str, src: str) -> list[str]:
    """8 16-bit lanes (as 16 bytes) to vector<8xf32>."""
    if spec.dtype == "f16":
        return [f"{name}_h = vector.bitcast {src} : vector<16xi8> to vector<8xf16>",
                f"{name} = arith.extf {name}_h : vector<8xf16> to vector<8xf32>"]
    return [f"{name}_h = vector.bitcast {src} : vector<16xi8> to vector<8xi16>",
            f"{name}_e = arith.extui {name}_h : vector<8xi16> to vector<8xi32>",
            f"{name}_u = arith.shli {name}_e, %s16 : vector<8xi32>",
            f"{name} = arith.bitcast {name}_u : vector<8xi32> to vector<8xf32>"]


def _epilogue(spec: BitmapSpec, r: int, j: int, q: int, ot: str) -> list[str]:
    """Reduce accumulator (row r, input j), bias, activation, residual in f32; round once; store."""
    b = Builder("f32", indent="    ", prefix=f"e{q}_")
    lines = [f"    %s{q} = vector.reduction <add>, %acc#{q} : vector<8xf32> into f32",
             f"    %ej{q} = arith.constant {j} : index"]
    v = f"%s{q}"
    if spec.bias:
        lines.append(f"    %bs{q} = memref.load %bias[%row{r}] : memref<{spec.rows}xf32>")
        v = b.op("arith.addf", v, f"%bs{q}")
    v = activation(b, spec.activation, v)
    lines += b.text().rstrip("\n").split("\n") if b.lines else []
    if spec.residual:
        lines += ["    " + ln for ln in _load_f32(_Dt(spec.dtype), f"%rv{q}", f"memref.load %res[%ej{q}, %row{r}] : {ot}", 1)]
        lines.append(f"    %rs{q} = arith.addf {v}, %rv{q} : f32")
        v = f"%rs{q}"
    cast, v = _to_dtype(_Dt(spec.dtype), f"%h{q}", v, 1)
    lines += ["    " + ln for ln in cast]
    lines.append(f"    memref.store {v}, %out[%ej{q}, %row{r}] : {ot}")
    return lines


@dataclass(frozen=True)
class _Dt:
    """What emit_rowvec's dtype helpers read off a spec: its dtype."""

    dtype: str
