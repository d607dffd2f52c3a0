"""Small-N kernels for 16-bit weights stored as a bitmap plus packed values (and 2:4 with a nibble per group).

At N = 1 (LLM decode) a linear layer's time is the bytes of its weight. Dense bf16 reads 2 B per weight;
CSR with 16-bit column indices reads 2 B value + 2 B index per nonzero, as much as dense at 50%. A bitmap
reads one bit per weight plus the packed values: 1/8 + 2 d bytes per weight (1.125 B at d = 0.5, 0.73 B at
0.3, 1.53 B at 0.7). 2:4 with a 4-bit mask per group of four is the same 1.125 B, with the values at fixed
offsets (no running count).

The kernel walks the input dimension in steps of 8 weights. For each step and row it loads the row's mask
byte, that byte's ``pshufb`` control from a table built once (``shuffle_table``), and 16 bytes of packed
values at the row's running byte offset; ``pshufb`` spreads the mask's values to their 8 positions (zeros
elsewhere) and they meet 8 f32 lanes of X in one FMA. For bf16 a 256-bit pshufb (32-byte controls, 8 KB)
drops each value into the high half of a 32-bit lane, which is its f32 value: no widening op; fp16 takes a
128-bit pshufb (16-byte controls, 4 KB) and F16C's vcvtph2ps. The offset advances by 2 bytes per set bit
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
_PSHUFB256 = "llvm.x86.avx2.pshuf.b"


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


def shuffle_table(dtype: str = "f16") -> np.ndarray:
    """The pshufb controls, one entry per mask byte ``m``; lane ``k`` takes packed value
    ``popcount(m & (2**k - 1))`` when bit ``k`` is set, else zero (control byte 0x80).

    ``f16``: 16 bytes per entry, 8 16-bit lanes (widened by F16C after the shuffle). ``bf16``: 32 bytes
    per entry for a 256-bit pshufb of the 16 value bytes repeated in both halves, which puts each value
    in the high half of a 32-bit lane: the result *is* the f32 widening (a bf16 is an f32's top 16 bits)."""
    width = 32 if dtype == "bf16" else 16
    lut = np.full((256, width), 0x80, dtype=np.uint8)
    for m in range(256):
        r = 0
        for k in range(8):
            if m >> k & 1:
                at = 4 * k + 2 if dtype == "bf16" else 2 * k  # byte of lane k's value (bf16: the f32's high half)
                lut[m, at], lut[m, at + 1] = 2 * r, 2 * r + 1
                r += 1
    return lut.reshape(-1)


def table_bytes(dtype: str) -> int:
    """Size of ``shuffle_table(dtype)``."""
    return 256 * (32 if dtype == "bf16" else 16)


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
    args += ["%vals: memref<?xi8>", f"%lut: memref<{table_bytes(spec.dtype)}xi8>", f"%x: memref<{spec.n}x{spec.cols}xf32>"]
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
        f"llvm.func @{_PSHUFB256}(vector<32xi8>, vector<32xi8>) -> vector<32xi8>",
        f"func.func @{spec.name}({', '.join(kernel_args(spec))}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        "  %c8 = arith.constant 8 : index",
        "  %c16 = arith.constant 16 : index",
        "  %c32 = arith.constant 32 : index",
        f"  %groups = arith.constant {groups} : index",
        f"  %rows = arith.constant {spec.rows} : index",
        f"  %rps = arith.constant {rps} : index",
        f"  %zv = arith.constant dense<0.0> : {vt}",
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
            f"      %vb{r} = vector.load %vals[{offs[r]}] : memref<?xi8>, vector<16xi8>",
        ]
        lines += ["      " + ln for ln in _expand(spec, r, offs[r])]
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


def _expand(spec: BitmapSpec, r: int, off: str) -> list[str]:
    """Row r's 8 weights as ``%w{r}`` (vector<8xf32>) from its mask byte ``%mx{r}`` and value bytes ``%vb{r}``."""
    if spec.dtype == "f16":  # 128-bit pshufb to 8 f16 lanes, then F16C
        return [f"%lo{r} = arith.muli %mx{r}, %c16 : index",
                f"%ctl{r} = vector.load %lut[%lo{r}] : memref<4096xi8>, vector<16xi8>",
                f"%sh{r} = llvm.call @{_PSHUFB}(%vb{r}, %ctl{r}) : (vector<16xi8>, vector<16xi8>) -> vector<16xi8>",
                f"%w{r}_h = vector.bitcast %sh{r} : vector<16xi8> to vector<8xf16>",
                f"%w{r} = arith.extf %w{r}_h : vector<8xf16> to vector<8xf32>"]
    # bf16: 256-bit pshufb of the value bytes in both halves puts each value in an f32's high half
    both = ", ".join(str(i) for i in [*range(16), *range(16)])
    return [f"%lo{r} = arith.muli %mx{r}, %c32 : index",
            f"%ctl{r} = vector.load %lut[%lo{r}] : memref<8192xi8>, vector<32xi8>",
            f"%vd{r} = vector.shuffle %vb{r}, %vb{r} [{both}] : vector<16xi8>, vector<16xi8>",
            f"%sh{r} = llvm.call @{_PSHUFB256}(%vd{r}, %ctl{r}) : (vector<32xi8>, vector<32xi8>) -> vector<32xi8>",
            f"%w{r} = vector.bitcast %sh{r} : vector<32xi8> to vector<8xf32>"]


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
