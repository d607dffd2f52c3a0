"""The VNNI int8 kernel's input pass: quantize X per token and write Xu^T in the kernel's lane order.

``sx[t] = max|x[t]| / 127`` (1 for an all-zero token), ``xu[c, p] = round(x[t, c] * (1 / sx[t])) + 128`` (round half
to even, clamped to [-127, 127] before the offset: ``int8_linear.quantize_rows`` bit for bit) for the token t
whose activation sits at N position p (``emit_int8_vnni.block_order``). Torch ran these steps (amax, divide,
round, clamp, cast, offset, permute, transpose) in 1.2 ms for 128 x 3072 on one thread, twice the VNNI
kernel's own time; this kernel makes one pass for the scales and one for the values.

The second pass takes four tokens at a time, which the permutation keeps at four adjacent N positions
(tokens 4g..4g+3 sit at ``4 * slot(g)``, ``slot`` swapping the two 2-bit fields of g within a 64-block), so
each column gets one i32 store of four bytes: per 16 columns, four 16-float loads, their quantization, the
natural-order 4-row byte interleave of emit_int8_vnni and 16 i32 stores. Tokens past N (padding up to a
multiple of 4) repeat the last token; N positions no token fills are left unwritten (the VNNI kernel's
sums there are never stored). Buffers: x [n, in] f32, sx [n] f32 (out), inv [n] f32 (scratch: 1 / sx), xt [cols * n_pad / 4] i32 (out; [cols, n_pad] bytes).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from sparsec.codegen.mlir.emit_int8_vnni import BLOCK, LANES, _operand16, padded_n
from sparsec.codegen.mlir.pipeline import vector_pipeline_text

#: the largest quantized magnitude (int8_linear.QMAX) and the u8 offset (int8_linear.U8_OFFSET)
_QMAX, _OFFSET = 127, 128


@dataclass(frozen=True)
class QuantSpec:
    """The input pass for ``n`` tokens of ``in_features`` values into an Xu^T of ``cols`` rows."""

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
        return f"sparsec_int8quant_{self.n}x{self.in_features}_{digest}"

    def emit_mlir(self) -> tuple[str, str]:
        """(MLIR source, lowering pipeline); jit.compile_kernel calls this."""
        return emit_quant_kernel(self), vector_pipeline_text()


def emit_quant_kernel(spec: QuantSpec) -> str:
    """MLIR text of the input pass for ``spec``."""
    n, k = spec.n, spec.in_features
    n_pad = padded_n(n)
    perm_end = n_pad - n_pad % BLOCK  # groups below this token count are permuted within their 64-block
    xt_t, x_t, vt = f"memref<{spec.cols * (n_pad // 4)}xi32>", f"memref<{n}x{k}xf32>", "vector<16xf32>"
    full, rem = k - k % LANES, k % LANES
    lines = [
        f"func.func @{spec.name}(%x: {x_t}, %sx: memref<{n}xf32>, %inv: memref<{n}xf32>, "
        f"%xt: {xt_t}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        "  %c3 = arith.constant 3 : index",
        "  %c4 = arith.constant 4 : index",
        "  %c16 = arith.constant 16 : index",
        f"  %n = arith.constant {n} : index",
        f"  %nlast = arith.constant {n - 1} : index",
        f"  %full = arith.constant {full} : index",
        f"  %groups = arith.constant {-(-n // 4)} : index",
        f"  %permg = arith.constant {perm_end // 4} : index",
        f"  %fz = arith.constant dense<0.0> : {vt}",
        "  %one = arith.constant 1.0 : f32",
        "  %zero = arith.constant 0.0 : f32",
        f"  %qmax = arith.constant {float(_QMAX)} : f32",
        f"  %hi = arith.constant dense<{_QMAX}> : vector<16xi32>",
        f"  %lo = arith.constant dense<{-_QMAX}> : vector<16xi32>",
        f"  %off = arith.constant dense<{_OFFSET}> : vector<16xi32>",
        f"  %rowlen = arith.constant {n_pad // 4} : index",
    ]
    if rem:
        lines.append(f"  %tailm = vector.constant_mask [{rem}] : vector<16xi1>")
    # pass 1: the scales
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
        f"    memref.store %is, %inv[%t] : memref<{n}xf32>",
        "  }",
    ]
    # pass 2: per 16 columns, every group of four tokens: the 16 rows of Xu^T it writes (2 KB at N = 128)
    # stay in L1 while all groups fill them (group-outer swept all of Xu^T per group: 4x slower)
    # four 16-column chunks per group visit: 256 contiguous bytes of each token row (one chunk: 1.2x slower)
    wide = k - k % (4 * LANES)
    lines += [f"  %wide = arith.constant {wide} : index",
              "  %c64 = arith.constant 64 : index",
              "  scf.for %cw = %c0 to %wide step %c64 {",
              "    scf.for %g = %c0 to %groups step %c1 {"]
    body = _group(n)
    for j in range(4):
        body += [f"%cwo{j} = arith.constant {LANES * j} : index", f"%cw{j} = arith.addi %cw, %cwo{j} : index"]
        body += _chunk(x_t, xt_t, f"%cw{j}", None, f"w{j}")
    lines += ["      " + ln for ln in body]
    lines += ["    }", "  }",
              "  scf.for %c = %wide to %full step %c16 {",
              "    scf.for %g = %c0 to %groups step %c1 {"]
    lines += ["      " + ln for ln in [*_group(n), *_chunk(x_t, xt_t, "%c", None)]]
    lines += ["    }", "  }"]
    if rem:
        lines.append("  scf.for %g = %c0 to %groups step %c1 {")
        lines += ["    " + ln for ln in [*_group(n), *_chunk(x_t, xt_t, "%full", "%tailm", width=rem)]]
        lines.append("  }")
    lines += ["  return", "}"]
    head = f"// int8 VNNI input pass: per-token quantize to u8, Xu^T in the VNNI kernel's lane order, N={n}\n"
    return head + "module {\n" + "\n".join(lines) + "\n}\n"


def _group(n: int) -> list[str]:
    """Group %g's i32 column ``%slot`` (as ``%slotv``), its four tokens ``%tt0..3`` (past N: the last one)
    and their inverse scales ``%sv0..3``."""
    ln = ["%inperm = arith.cmpi ult, %g, %permg : index",
          "%gb = arith.divui %g, %c16 : index",  # the 64-block
          "%gm = arith.remui %g, %c16 : index",
          "%gl = arith.remui %gm, %c4 : index",
          "%gk = arith.divui %gm, %c4 : index",
          "%g16 = arith.muli %gb, %c16 : index",
          "%gl4 = arith.muli %gl, %c4 : index",
          "%gsw = arith.addi %gl4, %gk : index",
          "%gp = arith.addi %g16, %gsw : index",
          "%slot = arith.select %inperm, %gp, %g : index",  # the i32 column of this group's 4 positions
          "%slot32 = arith.index_cast %slot : index to i32",
          "%slotv = vector.broadcast %slot32 : i32 to vector<16xi32>",
          "%t0 = arith.muli %g, %c4 : index"]
    for d in range(4):
        ln += [f"%d{d} = arith.constant {d} : index",
               f"%tr{d} = arith.addi %t0, %d{d} : index",
               f"%tt{d} = arith.minui %tr{d}, %nlast : index",
               f"%iv{d} = memref.load %inv[%tt{d}] : memref<{n}xf32>",
               f"%sv{d} = vector.broadcast %iv{d} : f32 to vector<16xf32>"]
    return ln


def _chunk(x_t: str, xt_t: str, col: str, mask: str | None, tag: str = "", width: int = LANES) -> list[str]:
    """Quantize 16 columns (the first ``width``, those of ``mask``: all when None) of the group's 4 tokens;
    store one i32 per column (names prefixed by ``tag``)."""
    vt = "vector<16xf32>"
    ln, rows = [], []
    for d in range(4):
        if mask is None:
            ln.append(f"%{tag}x{d} = vector.load %x[%tt{d}, {col}] : {x_t}, {vt}")
        else:
            ln.append(f"%{tag}x{d} = vector.maskedload %x[%tt{d}, {col}], {mask}, %fz : {x_t}, vector<16xi1>, {vt} "
                      f"into {vt}")
        ln += [f"%{tag}y{d} = arith.mulf %{tag}x{d}, %sv{d} : {vt}",
               f"%{tag}r{d} = math.roundeven %{tag}y{d} : {vt}",
               f"%{tag}i{d} = arith.fptosi %{tag}r{d} : {vt} to vector<16xi32>",
               f"%{tag}h{d} = arith.minsi %{tag}i{d}, %hi : vector<16xi32>",  # integer clamps: one op each (the
               f"%{tag}l{d} = arith.maxsi %{tag}h{d}, %lo : vector<16xi32>",  # float ones carry NaN fix-ups)
               f"%{tag}u{d} = arith.addi %{tag}l{d}, %off : vector<16xi32>",
               f"%{tag}b{d} = arith.trunci %{tag}u{d} : vector<16xi32> to vector<16xi8>"]
        rows.append(f"%{tag}b{d}")
    ln += _operand16(f"{tag}q", rows)
    ln.append(f"%{tag}qw = vector.bitcast %{tag}q_o0 : vector<64xi8> to vector<16xi32>")
    for j in range(width):  # one i32 store per column: a vpscatterdd of 16 measured slower
        ln += [f"%{tag}e{j} = vector.extract %{tag}qw[{j}] : i32 from vector<16xi32>",
               f"%{tag}cj{j} = arith.constant {j} : index",
               f"%{tag}cc{j} = arith.addi {col}, %{tag}cj{j} : index",
               f"%{tag}ro{j} = arith.muli %{tag}cc{j}, %rowlen : index",
               f"%{tag}at{j} = arith.addi %{tag}ro{j}, %slot : index",
               f"memref.store %{tag}e{j}, %xt[%{tag}at{j}] : {xt_t}"]
    return ln
