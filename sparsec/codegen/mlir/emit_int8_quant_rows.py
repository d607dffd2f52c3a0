"""The dense int8 layer's input pass on VNNI hosts: X [n, in] f32 to u8 ``xq + 128`` [n, in] and scales.

oneDNN's int8 GEMM takes u8 activations; quantizing in torch (amax, multiply, round, clamp, cast, then the
offset through int16) took ~0.55 ms of a 1.7 ms 768x3072 layer at N = 128 (1 thread), the GEMM itself
~1 ms. Here each token is one row walk for its max |x| and a second over the same row (still in L1)
writing ``round(x * (1 / sx)) + 128`` (round half to even, clamped to [-127, 127] first:
``int8_linear.quantize_rows`` bit for bit, offset by 128). Buffers: x [n, in] f32, sx [n] f32 (out),
xu [n, in] i8 (out: the u8 bits).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from sparsec.codegen.mlir.emit_int8_vnni import LANES
from sparsec.codegen.mlir.pipeline import vector_pipeline_text

_QMAX, _OFFSET = 127, 128


@dataclass(frozen=True)
class QuantRowsSpec:
    """The row-layout pass for ``n`` tokens of ``in_features`` values."""

    n: int
    in_features: int

    def __post_init__(self) -> None:
        if self.n <= 0 or self.in_features <= 0:
            raise ValueError(f"bad int8 quantize shape n={self.n}, in={self.in_features}")

    @property
    def format(self) -> str:
        """The format family, for reports."""
        return "dense"

    @property
    def name(self) -> str:
        """A readable, unique symbol name for the kernel."""
        digest = hashlib.sha1(repr(asdict(self)).encode()).hexdigest()[:10]
        return f"sparsec_int8quantrows_{self.n}x{self.in_features}_{digest}"

    def emit_mlir(self) -> tuple[str, str]:
        """(MLIR source, lowering pipeline); jit.compile_kernel calls this."""
        return emit_quant_rows_kernel(self), vector_pipeline_text()


def emit_quant_rows_kernel(spec: QuantRowsSpec) -> str:
    """MLIR text of the row-layout pass for ``spec``."""
    n, k = spec.n, spec.in_features
    x_t, u_t, vt = f"memref<{n}x{k}xf32>", f"memref<{n}x{k}xi8>", "vector<16xf32>"
    full, rem = k - k % LANES, k % LANES
    lines = [
        f"func.func @{spec.name}(%x: {x_t}, %sx: memref<{n}xf32>, %xu: {u_t}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        "  %c16 = arith.constant 16 : index",
        f"  %n = arith.constant {n} : index",
        f"  %full = arith.constant {full} : index",
        f"  %fz = arith.constant dense<0.0> : {vt}",
        "  %one = arith.constant 1.0 : f32",
        "  %zero = arith.constant 0.0 : f32",
        f"  %qmax = arith.constant {float(_QMAX)} : f32",
        f"  %hi = arith.constant dense<{_QMAX}> : vector<16xi32>",
        f"  %lo = arith.constant dense<{-_QMAX}> : vector<16xi32>",
        f"  %off = arith.constant dense<{_OFFSET}> : vector<16xi32>",
    ]
    if rem:
        lines.append(f"  %tailm = vector.constant_mask [{rem}] : vector<16xi1>")
    lines += [
        "  scf.for %t = %c0 to %n step %c1 {",
        f"    %m = scf.for %c = %c0 to %full step %c16 iter_args(%a = %fz) -> ({vt}) {{",
        f"      %v = vector.load %x[%t, %c] : {x_t}, {vt}",
        f"      %av = math.absf %v : {vt}",
        f"      %na = arith.maximumf %a, %av : {vt}",
        f"      scf.yield %na : {vt}",
        "    }",
    ]
    acc = "%m"
    if rem:
        lines += [f"    %tv = vector.maskedload %x[%t, %full], %tailm, %fz : {x_t}, vector<16xi1>, {vt} into {vt}",
                  f"    %ta = math.absf %tv : {vt}",
                  f"    %tm = arith.maximumf %m, %ta : {vt}"]
        acc = "%tm"
    lines += [
        f"    %amax = vector.reduction <maximumf>, {acc} : {vt} into f32",
        "    %pos = arith.cmpf ogt, %amax, %zero : f32",
        "    %sc = arith.divf %amax, %qmax : f32",
        "    %s = arith.select %pos, %sc, %one : f32",
        f"    memref.store %s, %sx[%t] : memref<{n}xf32>",
        "    %is = arith.divf %one, %s : f32",
        f"    %iv = vector.broadcast %is : f32 to {vt}",
        "    scf.for %c = %c0 to %full step %c16 {",
        f"      %v = vector.load %x[%t, %c] : {x_t}, {vt}",
        *["      " + ln for ln in _quantize("%v")],
        f"      vector.store %b, %xu[%t, %c] : {u_t}, vector<16xi8>",
        "    }",
    ]
    if rem:
        lines += [*["    " + ln for ln in _quantize("%tv")],
                  f"    vector.maskedstore %xu[%t, %full], %tailm, %b : {u_t}, vector<16xi1>, vector<16xi8>"]
    lines += ["  }", "  return", "}"]
    return f"// int8 dense input pass: per-token quantize to u8 [n, in], N={n}\nmodule {{\n" + "\n".join(lines) + "\n}\n"


def _quantize(v: str) -> list[str]:
    """Lines leaving ``%b`` (vector<16xi8>, u8 bits) from the 16 floats ``v`` and the inverse scale ``%iv``."""
    vt = "vector<16xf32>"
    return [f"%y = arith.mulf {v}, %iv : {vt}",
            f"%r = math.roundeven %y : {vt}",
            f"%i = arith.fptosi %r : {vt} to vector<16xi32>",
            "%h = arith.minsi %i, %hi : vector<16xi32>",
            "%l = arith.maxsi %h, %lo : vector<16xi32>",
            "%u = arith.addi %l, %off : vector<16xi32>",
            "%b = arith.trunci %u : vector<16xi32> to vector<16xi8>"]
