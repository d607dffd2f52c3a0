"""The AVX512-VNNI int8 CSR kernel (Y^T = W X^T): ``vpdpbusd`` sums four u8 x s8 products per i32 lane.

``out[i, n] = act((acc[i, n] - wsum[i]) * sx[n] * sw[i] + bias[i]) + res[i, n]``, where ``acc`` is the
int32 sum ``sum_p wq[p] * xu[crd[p], n]`` over row i's stored values, ``xu = xq + 128`` the per-token
quantized activation offset to u8 (``vpdpbusd`` multiplies unsigned by signed bytes), and ``wsum[i] = 128 *
sum_p wq[p]`` removes the offset (a per-row constant computed at pack time).

Layout: every row stores a multiple of four values (``pad_quads`` adds zero weights), so the row's values
are i32 *quads* of four weight bytes; one quad is broadcast to all 16 lanes (``vpbroadcastd``). The
activation operand of lane n holds ``xu[c0, n], xu[c1, n], xu[c2, n], xu[c3, n]`` for the quad's columns:
for a block of 64 n the four 64-byte rows are byte-interleaved in two rounds of in-lane unpacks (bw, then
wd; LLVM lowers the ``vector.shuffle`` masks to ``vpunpck[lh]bw`` / ``vpunpck[lh]wd``), 8 shuffles per 4
``vpdpbusd``. Those unpacks leave lane order permuted (register k, i32 lane 4L + d holds column position
16L + 4k + d); the runtime writes Xu^T with its N positions in that order (``block_order``), so the sums
come out in natural order and the epilogue's loads and stores stay contiguous. N is padded to a multiple
of 16 or 64 (``padded_n``; a trailing 16-block uses a natural-order interleave of 16-byte loads), and the
epilogue masks the lanes past N.

Sums wrap modulo 2**32 (``vpdpbusd`` does not saturate), so ``acc - wsum`` is exact whenever the true sum
fits in int32 (``|sum| <= 127 * 127 * cols``: any cols below 133,000). Buffers: pos (i32, value offsets,
multiples of 4), crd (i16/i32), quads (i32), wsum (i32), sw, x (u8 as i8) [cols, n], sx [n], [bias],
[res] [rows, n], out [rows, n], all f32 but the integer ones.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from sparsec.codegen.mlir.mathfn import Builder, activation
from sparsec.codegen.mlir.pipeline import vector_pipeline_text
from sparsec.codegen.spec import ACTIVATIONS

_DPBUSD = "llvm.x86.avx512.vpdpbusd.512"
#: lanes of one vpdpbusd (i32) and of the wide activation block (bytes of one 512-bit row load)
LANES, BLOCK = 16, 64
#: at most this many i32 accumulators (16 lanes each) per pass over the rows: 8 accumulators, 8 loaded
#: rows and 8 interleaved operands fit the 32 zmm registers
MAX_ACC = 8


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether this host runs the kernel: x86-64 with AVX512-VNNI and AVX512-BW (/proc/cpuinfo flags)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return {"avx512f", "avx512bw", "avx512_vnni"} <= set(line.split(":", 1)[1].split())
    except OSError:
        return False
    return False


def padded_n(n: int) -> int:
    """The N of the kernel's activation for ``n`` input rows: whole 64-blocks, and a trailing 16-block when
    at most 16 rows remain (a 16-block's interleave costs about what a 64-block's does: a 32-row remainder
    ran 2.4x slower as two 16-blocks than as one padded 64-block, 768x3072 90%)."""
    full, rem = n - n % BLOCK, n % BLOCK
    return full if rem == 0 else full + (LANES if rem <= LANES else BLOCK)


@lru_cache(maxsize=64)
def block_order(n_pad: int) -> np.ndarray:
    """``order[p]``: the token whose activation the runtime writes at N position p of Xu^T, so that the
    kernel's sums come out in natural order (the 64-blocks' unpack permutation, an involution; a trailing
    16-block keeps its order)."""
    order = np.arange(n_pad, dtype=np.int64)
    for base in range(0, n_pad - n_pad % BLOCK, BLOCK):
        for L in range(4):
            for k in range(4):
                for d in range(4):
                    order[base + 16 * L + 4 * k + d] = base + 16 * k + 4 * L + d
    return order


def pad_quads(pos: np.ndarray, crd: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR with every row's stored count padded to a multiple of 4 by zero weights (at the row's last
    column, or column 0 in an empty row; any valid column works: the weight is zero)."""
    pos = np.asarray(pos, dtype=np.int64)
    counts = np.diff(pos)
    padded = -(-counts // 4) * 4
    new_pos = np.zeros(len(pos), dtype=np.int64)
    np.cumsum(padded, out=new_pos[1:])
    total = int(new_pos[-1])
    new_crd = np.zeros(total, dtype=crd.dtype)
    new_vals = np.zeros(total, dtype=vals.dtype)
    rows = np.repeat(np.arange(len(counts)), counts)
    at = new_pos[rows] + (np.arange(int(pos[-1])) - pos[rows])  # each stored value's slot in the padded row
    new_crd[at] = crd[: int(pos[-1])]
    new_vals[at] = vals[: int(pos[-1])]
    for r in np.nonzero(padded != counts)[0]:  # pad slots repeat the row's last column (stays in cache)
        lo, hi = new_pos[r] + counts[r], new_pos[r + 1]
        new_crd[lo:hi] = crd[pos[r + 1] - 1] if counts[r] else 0
    return new_pos.astype(np.int32), new_crd, new_vals


@dataclass(frozen=True)
class VnniSpec:
    """The VNNI kernel of one row slab: ``rows`` x ``cols`` at ``n`` input rows (the activation padded to
    ``padded_n(n)``)."""

    rows: int
    cols: int
    n: int
    bias: bool = False
    activation: str | None = None
    residual: bool = False
    index_bits: int = 32

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.rows <= 0 or self.cols <= 0 or self.n <= 0:
            raise ValueError(f"bad VNNI kernel shape {self.rows}x{self.cols}, n={self.n}")
        if self.index_bits not in (16, 32):
            raise ValueError(f"index_bits must be 16 or 32, not {self.index_bits}")

    @property
    def format(self) -> str:
        """The format family, for reports."""
        return "csr"

    @property
    def dtype(self) -> str:
        """The weights' element type, for reports."""
        return "i8"

    @property
    def name(self) -> str:
        """A readable, unique symbol name for the kernel."""
        digest = hashlib.sha1(repr(asdict(self)).encode()).hexdigest()[:10]
        return f"sparsec_int8vnni_{self.rows}x{self.cols}_n{self.n}_{digest}"

    def emit_mlir(self) -> tuple[str, str]:
        """(MLIR source, lowering pipeline); jit.compile_kernel calls this."""
        return emit_vnni_kernel(self), vector_pipeline_text()


def kernel_args(spec: VnniSpec) -> list[str]:
    """The argument list, in the order Int8SparseLinear passes it."""
    r, c, n = spec.rows, spec.cols, spec.n
    args = ["%pos: memref<?xi32>", f"%crd: memref<?xi{spec.index_bits}>", "%quads: memref<?xi32>",
            f"%wsum: memref<{r}xi32>", f"%sw: memref<{r}xf32>", f"%x: memref<{c}x{padded_n(n)}xi8>",
            f"%sx: memref<{n}xf32>"]
    if spec.bias:
        args.append(f"%bias: memref<{r}xf32>")
    if spec.residual:
        args.append(f"%res: memref<{r}x{n}xf32>")
    args.append(f"%out: memref<{r}x{n}xf32>")
    return args


def passes(n: int) -> list[list[tuple[int, int]]]:
    """The N blocks ``(offset, width)`` of each pass over the rows: 64-blocks (4 accumulators), then a
    16-block, at most ``MAX_ACC`` accumulators a pass."""
    blocks = [(o, BLOCK) for o in range(0, n - n % BLOCK, BLOCK)]
    blocks += [(o, LANES) for o in range(n - n % BLOCK, n, LANES)]
    out: list[list[tuple[int, int]]] = [[]]
    for off, w in blocks:
        if sum(bw // LANES for _, bw in out[-1]) + w // LANES > MAX_ACC:
            out.append([])
        out[-1].append((off, w))
    return out


def emit_vnni_kernel(spec: VnniSpec) -> str:
    """MLIR text of the VNNI kernel for ``spec``."""
    lines = [
        f"llvm.func @{_DPBUSD}(vector<16xi32>, vector<64xi8>, vector<64xi8>) -> vector<16xi32>",
        f"func.func @{spec.name}({', '.join(kernel_args(spec))}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        "  %c2 = arith.constant 2 : index",
        "  %c3 = arith.constant 3 : index",
        "  %c4 = arith.constant 4 : index",
        f"  %rows = arith.constant {spec.rows} : index",
        "  %zero = arith.constant dense<0> : vector<16xi32>",
        "  %fz = arith.constant dense<0.0> : vector<16xf32>",
    ]
    for k, blocks in enumerate(passes(padded_n(spec.n))):
        lines += _pass(spec, k, blocks)
    lines += ["  return", "}"]
    head = f"// int8 CSR Y^T = W X^T by AVX512-VNNI vpdpbusd (u8 activations, s8 weight quads), N={spec.n}\n"
    return head + "module {\n" + "\n".join(lines) + "\n}\n"


def _unpack(a: str, b: str, width: int, high: bool, out: str) -> str:
    """``vpunpck[lh]*`` of two vector<64x...> values as a vector.shuffle: per 128-bit lane, the low (or high)
    halves of ``a`` and ``b`` interleaved element by element (``width`` elements per value: 64 bytes or 32
    words)."""
    per = width // 4  # elements per 128-bit lane
    half = per // 2
    mask = []
    for lane in range(4):
        for i in range(half):
            e = lane * per + i + (half if high else 0)
            mask += [e, width + e]
    ty = f"vector<{width}x{'i8' if width == 64 else 'i16'}>"
    return f"{out} = vector.shuffle {a}, {b} [{', '.join(map(str, mask))}] : {ty}, {ty}"


def _operands64(tag: str, rows: list[str]) -> list[str]:
    """Lines turning four vector<64xi8> rows into ``%{tag}_o0..3`` (vector<64xi8>: 16 lanes of 4 bytes): unpacks bw then wd."""
    r0, r1, r2, r3 = rows
    ln = [_unpack(r0, r1, 64, False, f"%{tag}_al"), _unpack(r0, r1, 64, True, f"%{tag}_ah"),
          _unpack(r2, r3, 64, False, f"%{tag}_bl"), _unpack(r2, r3, 64, True, f"%{tag}_bh")]
    for v in ("al", "ah", "bl", "bh"):
        ln.append(f"%{tag}_{v}w = vector.bitcast %{tag}_{v} : vector<64xi8> to vector<32xi16>")
    for k, (a, b, high) in enumerate([("al", "bl", False), ("al", "bl", True), ("ah", "bh", False),
                                      ("ah", "bh", True)]):
        ln.append(_unpack(f"%{tag}_{a}w", f"%{tag}_{b}w", 32, high, f"%{tag}_c{k}"))
        ln.append(f"%{tag}_o{k} = vector.bitcast %{tag}_c{k} : vector<32xi16> to vector<64xi8>")
    return ln


def _operand16(tag: str, rows: list[str]) -> list[str]:
    """Lines turning four vector<16xi8> rows into ``%{tag}_o0`` (vector<64xi8>) in natural lane order."""
    inter = ", ".join(f"{i}, {16 + i}" for i in range(16))
    return [f"%{tag}_a = vector.shuffle {rows[0]}, {rows[1]} [{inter}] : vector<16xi8>, vector<16xi8>",
            f"%{tag}_b = vector.shuffle {rows[2]}, {rows[3]} [{inter}] : vector<16xi8>, vector<16xi8>",
            f"%{tag}_aw = vector.bitcast %{tag}_a : vector<32xi8> to vector<16xi16>",
            f"%{tag}_bw = vector.bitcast %{tag}_b : vector<32xi8> to vector<16xi16>",
            f"%{tag}_c = vector.shuffle %{tag}_aw, %{tag}_bw [{inter}] : vector<16xi16>, vector<16xi16>",
            f"%{tag}_o0 = vector.bitcast %{tag}_c : vector<32xi16> to vector<64xi8>"]


def _pass(spec: VnniSpec, k: int, blocks: list[tuple[int, int]]) -> list[str]:
    """One loop over all rows accumulating ``blocks``, then the epilogue of each accumulator."""
    it, xt = f"i{spec.index_bits}", f"memref<{spec.cols}x{padded_n(spec.n)}xi8>"
    accs = [(off + LANES * j) for off, w in blocks for j in range(w // LANES)]  # each accumulator's first lane
    vt, bt = "vector<16xi32>", "vector<64xi8>"
    types = ", ".join([vt] * len(accs))
    lines = [
        "  scf.for %i = %c0 to %rows step %c1 {",
        "    %i1 = arith.addi %i, %c1 : index",
        "    %p0i = memref.load %pos[%i] : memref<?xi32>",
        "    %p1i = memref.load %pos[%i1] : memref<?xi32>",
        "    %p0 = arith.index_cast %p0i : i32 to index",
        "    %p1 = arith.index_cast %p1i : i32 to index",
        "    %q0 = arith.divui %p0, %c4 : index",
        "    %q1 = arith.divui %p1, %c4 : index",
    ]
    for q, lane in enumerate(accs):
        lines.append(f"    %o{k}_{q} = arith.constant {lane} : index")
    inits = ", ".join(f"%a{q} = %zero" for q in range(len(accs)))
    lines.append(f"    %acc{k}:{len(accs)} = scf.for %q = %q0 to %q1 step %c1 iter_args({inits}) -> ({types}) {{")
    body = ["%p = arith.muli %q, %c4 : index"]
    for j in range(4):
        pj = "%p" if j == 0 else f"%pp{j}"
        if j:
            body.append(f"{pj} = arith.addi %p, %c{j} : index")
        body += [f"%ki{j} = memref.load %crd[{pj}] : memref<?x{it}>",
                 f"%kk{j} = arith.index_castui %ki{j} : {it} to index"]
    body += ["%wq = memref.load %quads[%q] : memref<?xi32>",
             f"%wbd = vector.broadcast %wq : i32 to {vt}",
             f"%wb = vector.bitcast %wbd : {vt} to vector<64xi8>"]
    news, q = [], 0
    for b, (off, w) in enumerate(blocks):
        tag = f"b{b}"
        body.append(f"%{tag}_off = arith.constant {off} : index")
        rows = []
        for j in range(4):
            body.append(f"%{tag}_r{j} = vector.load %x[%kk{j}, %{tag}_off] : {xt}, vector<{w}xi8>")
            rows.append(f"%{tag}_r{j}")
        body += _operands64(tag, rows) if w == BLOCK else _operand16(tag, rows)
        for j in range(w // LANES):
            body.append(f"%n{q} = llvm.call @{_DPBUSD}(%a{q}, %{tag}_o{j}, %wb) : ({vt}, {bt}, {bt}) -> {vt}")
            news.append(f"%n{q}")
            q += 1
    body.append(f"scf.yield {', '.join(news)} : {types}")
    lines += ["      " + ln for ln in body]
    lines.append("    }")
    lines += [f"    %sws = memref.load %sw[%i] : memref<{spec.rows}xf32>",
              f"    %ws = memref.load %wsum[%i] : memref<{spec.rows}xi32>",
              f"    %wsv = vector.broadcast %ws : i32 to {vt}",
              "    %swv = vector.broadcast %sws : f32 to vector<16xf32>"]
    if spec.bias:
        lines += [f"    %bs = memref.load %bias[%i] : memref<{spec.rows}xf32>",
                  "    %bsv = vector.broadcast %bs : f32 to vector<16xf32>"]
    for q, lane in enumerate(accs):
        lines += _epilogue(spec, k, q, lane)
    lines.append("  }")
    return lines


def _epilogue(spec: VnniSpec, k: int, q: int, lane: int) -> list[str]:
    """Remove the u8 offset, dequantize (sum * sx[n] * sw[i]), bias, activation, residual; one store of the
    accumulator's lanes below N (masked when fewer than 16, nothing when none)."""
    valid = min(LANES, spec.n - lane)
    if valid <= 0:
        return []
    ft, ot = "vector<16xf32>", f"memref<{spec.rows}x{spec.n}xf32>"
    at = f"%i, %o{k}_{q}"
    b = Builder(ft, indent="    ", prefix=f"e{k}_{q}_")
    mask = None
    if valid < LANES:
        mask = f"%m{k}_{q}"
        b.lines.append(f"    {mask} = vector.constant_mask [{valid}] : vector<16xi1>")

    def load(ref: str, mt: str) -> str:
        if mask is None:
            return b.op("vector.load", ref, ty=f"{mt}, {ft}")
        return b.op("vector.maskedload", ref, mask, "%fz", ty=f"{mt}, vector<16xi1>, {ft} into {ft}")

    exact = b.op("arith.subi", f"%acc{k}#{q}", "%wsv", ty="vector<16xi32>")
    acc = b.cast("arith.sitofp", exact, "vector<16xi32>", ft)
    sx = load(f"%sx[%o{k}_{q}]", f"memref<{spec.n}xf32>")
    v = b.op("arith.mulf", acc, b.op("arith.mulf", sx, "%swv"))
    if spec.bias:
        v = b.op("arith.addf", v, "%bsv")
    v = activation(b, spec.activation, v)
    if spec.residual:
        v = b.op("arith.addf", v, load(f"%res[{at}]", ot))
    if mask is None:
        return [*b.lines, f"    vector.store {v}, %out[{at}] : {ot}, {ft}"]
    return [*b.lines, f"    vector.maskedstore %out[{at}], {mask}, {v} : {ot}, vector<16xi1>, {ft}"]
