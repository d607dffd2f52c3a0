"""The VNNI int8 kernel's input pass for an input that arrives transposed (X^T [in, n] contiguous).

Inside a compiled model a CSR layer returns its output as a transposed view of a [out, n] buffer, so the
next layer's input is X^T in memory: emit_int8_quant would first need a 0.1 ms copy to [n, in]. This pass
reads X^T directly and writes the same Xu^T (same scales, same bytes, same N order) as emit_int8_quant,
``int8_linear.quantize_rows`` bit for bit.

Pass 1: per block of 16 tokens, the running max of |x| down the input rows, then ``sx`` and ``1 / sx`` for
16 tokens at once. Pass 2: per 64-block of tokens and input row c, four 16-token loads, quantized; the
unpack order (position 16L + 4k + d holds token 16k + 4L + d) makes i32 word 4L + k of the 64 output bytes
word L of load k: a 4x4 transpose of i32 words, one shuffle, then one contiguous 64-byte store. A trailing
16-block keeps natural order (one 16-byte store). Loads past N are masked (zeros); their bytes fill N
positions that no stored sum reads. Buffers: xT [in, n] f32, sx [n] f32 (out), inv [n] f32 (scratch),
xt [cols * n_pad / 4] i32 (out; [cols, n_pad] bytes).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from sparsec.codegen.mlir.emit_int8_vnni import BLOCK, LANES, padded_n
from sparsec.codegen.mlir.pipeline import vector_pipeline_text

_QMAX, _OFFSET = 127, 128


@dataclass(frozen=True)
class QuantTSpec:
    """The transposed-input pass for ``n`` tokens of ``in_features`` values into an Xu^T of ``cols`` rows."""

    n: int
    in_features: int
    cols: int

    def __post_init__(self) -> None:
        if self.n <= 0 or self.in_features <= 0 or self.cols < self.in_features:
            raise ValueError(f"bad int8 quantize shape n={self.n}, in={self.in_features}, cols={self.cols}")

    @property
    def format(self) -> str:
        """The format family, for reports."""
        return "csr"

    @property
    def name(self) -> str:
        """A readable, unique symbol name for the kernel."""
        digest = hashlib.sha1(repr(asdict(self)).encode()).hexdigest()[:10]
        return f"sparsec_int8quantT_{self.n}x{self.in_features}_{digest}"

    def emit_mlir(self) -> tuple[str, str]:
        """(MLIR source, lowering pipeline); jit.compile_kernel calls this."""
        return emit_quant_t_kernel(self), vector_pipeline_text()


def emit_quant_t_kernel(spec: QuantTSpec) -> str:
    """MLIR text of the transposed-input pass for ``spec``."""
    n, k = spec.n, spec.in_features
    n_pad = padded_n(n)
    x_t, xt_t, vt = f"memref<{k}x{n}xf32>", f"memref<{spec.cols * (n_pad // 4)}xi32>", "vector<16xf32>"
    lines = [
        f"func.func @{spec.name}(%x: {x_t}, %sx: memref<{n}xf32>, %inv: memref<{n}xf32>, "
        f"%xt: {xt_t}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        "  %c64 = arith.constant 64 : index",
        f"  %k = arith.constant {k} : index",
        f"  %rowlen = arith.constant {n_pad // 4} : index",
        f"  %fz = arith.constant dense<0.0> : {vt}",
        f"  %fone = arith.constant dense<1.0> : {vt}",
        f"  %qmaxv = arith.constant dense<{float(_QMAX)}> : {vt}",
        f"  %hi = arith.constant dense<{_QMAX}> : vector<16xi32>",
        f"  %lo = arith.constant dense<{-_QMAX}> : vector<16xi32>",
        f"  %off = arith.constant dense<{_OFFSET}> : vector<16xi32>",
    ]
    # pass 1: scales, 16 tokens at a time
    for t0 in range(0, n, LANES):
        valid = min(LANES, n - t0)
        lines += _scales(x_t, n, t0, valid)
    # pass 2: full 64-blocks in a loop, then a padded 64-block or a trailing 16-block
    full = n // BLOCK
    if full:
        lines += [f"  %nfull = arith.constant {full * BLOCK} : index",
                  "  scf.for %b = %c0 to %nfull step %c64 {"]
        lines += ["    " + ln for ln in _block64(x_t, xt_t, n, "%b", None)]
        lines.append("  }")
    rest = n - full * BLOCK
    if rest:
        base = full * BLOCK
        lines.append(f"  %tb = arith.constant {base} : index")
        if n_pad - base == BLOCK:
            lines += ["  " + ln for ln in _block64(x_t, xt_t, n, "%tb", rest)]
        else:
            lines += ["  " + ln for ln in _block16(x_t, xt_t, n, "%tb", rest)]
    lines += ["  return", "}"]
    head = f"// int8 VNNI input pass from X^T: per-token quantize to u8, Xu^T in the VNNI kernel's lane order, N={n}\n"
    return head + "module {\n" + "\n".join(lines) + "\n}\n"


def _load(x_t: str, ref: str, valid: int, name: str, mask: str) -> list[str]:
    """A 16-float load of ``ref``: masked to its first ``valid`` lanes (zeros past them) when under 16."""
    vt = "vector<16xf32>"
    if valid >= LANES:
        return [f"{name} = vector.load {ref} : {x_t}, {vt}"]
    return [f"{mask} = vector.constant_mask [{valid}] : vector<16xi1>",
            f"{name} = vector.maskedload {ref}, {mask}, %fz : {x_t}, vector<16xi1>, {vt} into {vt}"]


def _scales(x_t: str, n: int, t0: int, valid: int) -> list[str]:
    """sx and 1 / sx of tokens t0 .. t0 + valid - 1."""
    vt, tag, mt = "vector<16xf32>", f"s{t0}", f"memref<{n}xf32>"
    ln = [f"  %{tag}_t = arith.constant {t0} : index",
          f"  %{tag}_m = scf.for %c = %c0 to %k step %c1 iter_args(%a = %fz) -> ({vt}) {{"]
    ln += ["    " + s for s in _load(x_t, f"%x[%c, %{tag}_t]", valid, f"%{tag}_v", f"%{tag}_mk")]
    ln += [f"    %{tag}_av = math.absf %{tag}_v : {vt}",
           f"    %{tag}_na = arith.maximumf %a, %{tag}_av : {vt}",
           f"    scf.yield %{tag}_na : {vt}",
           "  }",
           f"  %{tag}_pos = arith.cmpf ogt, %{tag}_m, %fz : {vt}",
           f"  %{tag}_sc = arith.divf %{tag}_m, %qmaxv : {vt}",
           f"  %{tag}_s = arith.select %{tag}_pos, %{tag}_sc, %fone : vector<16xi1>, {vt}",
           f"  %{tag}_i = arith.divf %fone, %{tag}_s : {vt}"]
    for buf, val in (("sx", f"%{tag}_s"), ("inv", f"%{tag}_i")):
        if valid >= LANES:
            ln.append(f"  vector.store {val}, %{buf}[%{tag}_t] : {mt}, {vt}")
        else:
            ln += [f"  %{tag}_{buf}m = vector.constant_mask [{valid}] : vector<16xi1>",
                   f"  vector.maskedstore %{buf}[%{tag}_t], %{tag}_{buf}m, {val} : {mt}, vector<16xi1>, {vt}"]
    return ln


def _quantize(x_t: str, n: int, base: str, j: int, valid: int, tag: str) -> list[str]:
    """Lines leaving ``%{tag}_b`` (vector<16xi8>): tokens base + 16j .. + 15 of input row %c as u8."""
    vt, mt = "vector<16xf32>", f"memref<{n}xf32>"
    ln = [f"%{tag}_o = arith.constant {LANES * j} : index", f"%{tag}_t = arith.addi {base}, %{tag}_o : index"]
    ln += _load(x_t, f"%x[%c, %{tag}_t]", valid, f"%{tag}_x", f"%{tag}_mk")
    if valid >= LANES:
        ln.append(f"%{tag}_iv = vector.load %inv[%{tag}_t] : {mt}, {vt}")
    else:
        ln.append(f"%{tag}_iv = vector.maskedload %inv[%{tag}_t], %{tag}_mk, %fz : {mt}, vector<16xi1>, {vt} "
                  f"into {vt}")
    return ln + [f"%{tag}_y = arith.mulf %{tag}_x, %{tag}_iv : {vt}",
                 f"%{tag}_r = math.roundeven %{tag}_y : {vt}",
                 f"%{tag}_i = arith.fptosi %{tag}_r : {vt} to vector<16xi32>",
                 f"%{tag}_h = arith.minsi %{tag}_i, %hi : vector<16xi32>",
                 f"%{tag}_l = arith.maxsi %{tag}_h, %lo : vector<16xi32>",
                 f"%{tag}_u = arith.addi %{tag}_l, %off : vector<16xi32>",
                 f"%{tag}_b = arith.trunci %{tag}_u : vector<16xi32> to vector<16xi8>"]


def _block64(x_t: str, xt_t: str, n: int, base: str, valid: int | None) -> list[str]:
    """Every input row's 64 bytes of the 64-block at token ``base`` (``valid`` tokens of it; None: all)."""
    ln = ["scf.for %c = %c0 to %k step %c1 {"]
    body = []
    for j in range(4):
        v = LANES if valid is None else max(0, min(LANES, valid - LANES * j))
        if v == 0:  # no token here: any bytes do (no stored sum reads these positions)
            body += [f"%q{j}_b = arith.constant dense<{_OFFSET - 256}> : vector<16xi8>"]
        else:
            body += _quantize(x_t, n, base, j, v, f"q{j}")
        body.append(f"%w{j} = vector.bitcast %q{j}_b : vector<16xi8> to vector<4xi32>")
    # output word 4L + k is word L of load k
    mask = ", ".join(str((k % 2) * 4 + lane + (0 if k < 2 else 8)) for lane in range(4) for k in range(4))
    body += ["%w01 = vector.shuffle %w0, %w1 [0, 1, 2, 3, 4, 5, 6, 7] : vector<4xi32>, vector<4xi32>",
             "%w23 = vector.shuffle %w2, %w3 [0, 1, 2, 3, 4, 5, 6, 7] : vector<4xi32>, vector<4xi32>",
             f"%wo = vector.shuffle %w01, %w23 [{mask}] : vector<8xi32>, vector<8xi32>",
             "%rowo = arith.muli %c, %rowlen : index",
             "%bq = arith.divui " + base + ", %c4q : index",
             "%at = arith.addi %rowo, %bq : index",
             f"vector.store %wo, %xt[%at] : {xt_t}, vector<16xi32>"]
    ln += ["  " + s for s in ["%c4q = arith.constant 4 : index", *body]]
    return [*ln, "}"]


def _block16(x_t: str, xt_t: str, n: int, base: str, valid: int) -> list[str]:
    """Every input row's 16 bytes of the trailing 16-block at token ``base`` (natural order)."""
    body = [*_quantize(x_t, n, base, 0, valid, "q0"),
            "%w0 = vector.bitcast %q0_b : vector<16xi8> to vector<4xi32>",
            "%c4q = arith.constant 4 : index",
            "%rowo = arith.muli %c, %rowlen : index",
            "%bq = arith.divui " + base + ", %c4q : index",
            "%at = arith.addi %rowo, %bq : index",
            f"vector.store %w0, %xt[%at] : {xt_t}, vector<4xi32>"]
    return ["scf.for %c = %c0 to %k step %c1 {", *["  " + s for s in body], "}"]
