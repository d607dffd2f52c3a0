"""Backward kernels of a CSR sparse linear, written in MLIR's vector dialect (the layout of emit_rowvec).

For ``y = act(x W^T + b)`` computed as ``Y^T = W X^T``, the weight gradient restricted to W's stored
positions is an SDDMM: ``dW[i, j] = dz[:, i] . x[:, j]`` for each stored ``(i, j)``, with
``dz = dy * act'(.)``. In the transposed layout both operands are rows of row-major matrices
(``dz^T`` [rows, N], ``X^T`` [cols, N]), so each stored value is one contiguous N-long dot product.

The kernel walks W's rows in CSR order, so it writes the gradient in the packed value order: the result
*is* the packed gradient, no index map. Per row it loads ``dy^T[i]`` once into registers, folds the
epilogue's backward there (relu: zero where the output is not positive; tanh: ``1 - y^2``; both read
the layer's output, so nothing is recomputed), stores ``dz^T[i]`` for the ``dx`` kernel and reduces
it into the bias gradient, then for every stored column ``j`` loads ``X^T[j]`` and reduces the product.
The N lanes are split into passes of at most ``pass_lanes`` (register pressure: one pass keeps its
``dz`` lanes in registers); the inner loop keeps four independent FMA chains.

``emit_scatter_kernel`` is the other way to get ``dx``: ``dX^T[j] += w_ij dz^T[i]`` walking W's rows
(no transposed copy of W, but a read-modify-write of the output per stored value); benchmarks/
backward_kernels.py measures it against the forward kernel run on a CSR copy of ``W^T``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

#: one pass over a row's stored values keeps this many lanes of dz in registers (16 zmm of 32)
PASS_LANES = 256
#: independent FMA chains in the SDDMM inner loop (hides the 4-cycle FMA latency)
CHAINS = 4
DERIVATIVES = (None, "relu", "tanh")
_PIPELINE = ("builtin.module(convert-scf-to-cf, convert-vector-to-llvm{reassociate-fp-reductions=true}, "
             "convert-to-llvm, reconcile-unrealized-casts)")


@dataclass(frozen=True)
class SddmmSpec:
    """The SDDMM (and fused epilogue backward) of one CSR slab for ``n`` rows of input.

    ``deriv`` is the activation whose derivative is folded in (read off the layer's output), ``bias``
    whether the kernel also writes the bias gradient; ``kind`` is ``"sddmm"`` or ``"scatter"`` (dx by
    scattering, see the module docstring)."""

    rows: int
    cols: int
    n: int
    deriv: str | None = None
    bias: bool = False
    index_bits: int = 32
    pass_lanes: int = PASS_LANES
    kind: str = "sddmm"
    #: write the gradient dense-shaped (rows x cols, zeros at unstored positions: the parameter's .grad)
    #: instead of the packed values
    dense_out: bool = False

    def __post_init__(self) -> None:
        if self.deriv not in DERIVATIVES:
            raise ValueError(f"deriv {self.deriv!r} is not one of {DERIVATIVES}")
        if self.index_bits not in (16, 32):
            raise ValueError(f"index_bits must be 16 or 32, got {self.index_bits}")
        if self.kind not in ("sddmm", "scatter"):
            raise ValueError(f"kind {self.kind!r} is not 'sddmm' or 'scatter'")
        if self.n < 1 or self.rows < 1 or self.cols < 1 or self.pass_lanes < 1:
            raise ValueError(f"bad kernel shape {self.rows}x{self.cols}, n={self.n}, lanes={self.pass_lanes}")

    @property
    def name(self) -> str:
        """A readable, unique symbol name for the kernel."""
        digest = hashlib.sha1(repr(asdict(self)).encode()).hexdigest()[:10]
        return f"sparsec_{self.kind}_{self.rows}x{self.cols}_n{self.n}_{digest}"

    def emit_mlir(self) -> tuple[str, str]:
        """(MLIR source, lowering pipeline) for this kernel (jit.compile_kernel calls this)."""
        text = emit_sddmm_kernel(self) if self.kind == "sddmm" else emit_scatter_kernel(self)
        return text, _PIPELINE


def passes(n: int, lanes: int) -> list[list[tuple[int, int]]]:
    """The N lanes as passes of (offset, width) segments, widths 16/8/4/1 (never a masked vector)."""
    segs, off = [], 0
    for width in (16, 8, 4, 1):
        while n - off >= width:
            segs.append((off, width))
            off += width
    out, cur, used = [], [], 0
    for s in segs:
        if cur and used + s[1] > lanes:
            out.append(cur)
            cur, used = [], 0
        cur.append(s)
        used += s[1]
    out.append(cur)
    return out


def _ty(width: int) -> str:
    return "f32" if width == 1 else f"vector<{width}xf32>"


class _Lines:
    """SSA lines with fresh names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._n = 0

    def fresh(self, stem: str = "t") -> str:
        self._n += 1
        return f"%{stem}{self._n}"

    def emit(self, indent: str, text: str) -> None:
        self.lines.append(indent + text)

    def op(self, indent: str, text: str, stem: str = "t") -> str:
        name = self.fresh(stem)
        self.lines.append(f"{indent}{name} = {text}")
        return name


def _load(b: _Lines, ind: str, mem: str, mt: str, row: str, off: str, width: int) -> str:
    if width == 1:
        return b.op(ind, f"memref.load {mem}[{row}, {off}] : {mt}")
    return b.op(ind, f"vector.load {mem}[{row}, {off}] : {mt}, {_ty(width)}")


def _store(b: _Lines, ind: str, val: str, mem: str, mt: str, row: str, off: str, width: int) -> None:
    if width == 1:
        b.emit(ind, f"memref.store {val}, {mem}[{row}, {off}] : {mt}")
    else:
        b.emit(ind, f"vector.store {val}, {mem}[{row}, {off}] : {mt}, {_ty(width)}")


def _reduce(b: _Lines, ind: str, v: str, width: int) -> str:
    if width == 1:
        return v
    return b.op(ind, f"vector.reduction <add>, {v} : {_ty(width)} into f32")


def _header(spec: SddmmSpec, args: list[str]) -> list[str]:
    return [
        f"func.func @{spec.name}({', '.join(args)}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        f"  %rows = arith.constant {spec.rows} : index",
        "  %fz = arith.constant 0.0 : f32",
        "  %fone = arith.constant 1.0 : f32",
        "  scf.for %i = %c0 to %rows step %c1 {",
        "    %p0i = memref.load %pos[%i] : memref<?xi32>",
        "    %i1 = arith.addi %i, %c1 : index",
        "    %p1i = memref.load %pos[%i1] : memref<?xi32>",
        "    %p0 = arith.index_cast %p0i : i32 to index",
        "    %p1 = arith.index_cast %p1i : i32 to index",
    ]


def emit_sddmm_kernel(spec: SddmmSpec) -> str:
    """MLIR text of the SDDMM kernel: packed dW values (+ dz^T and db when the spec folds them)."""
    r, c, n = spec.rows, spec.cols, spec.n
    xt, gt = f"memref<{c}x{n}xf32>", f"memref<{r}x{n}xf32>"
    it = f"i{spec.index_bits}"
    args = ["%pos: memref<?xi32>", f"%crd: memref<?x{it}>", f"%x: {xt}", f"%g: {gt}"]
    if spec.deriv:
        args.append(f"%a: {gt}")
    dvt = f"memref<{r}x{c}xf32>" if spec.dense_out else "memref<?xf32>"
    args.append(f"%dv: {dvt}")
    if spec.deriv:
        args.append(f"%dz: {gt}")
    if spec.bias:
        args.append(f"%db: memref<{r}xf32>")
    b = _Lines()
    lines = _header(spec, args)
    ind, ind2 = "    ", "      "
    row_sum = None
    if spec.dense_out:
        lines += _zero_row(r, c)
    at = "%i, %kk" if spec.dense_out else "%p"
    for k, segs in enumerate(passes(n, spec.pass_lanes)):
        gs = []
        for off, w in segs:
            o = b.op(ind, f"arith.constant {off} : index", "o")
            g = _load(b, ind, "%g", gt, "%i", o, w)
            if spec.deriv:
                a = _load(b, ind, "%a", gt, "%i", o, w)
                zero = "%fz" if w == 1 else b.op(ind, f"vector.broadcast %fz : f32 to {_ty(w)}")
                if spec.deriv == "relu":  # torch's threshold_backward: grad where output > 0
                    m = b.op(ind, f"arith.cmpf ogt, {a}, {zero} : {_ty(w)}")
                    g = b.op(ind, f"arith.select {m}, {g}, {zero} : {'i1' if w == 1 else f'vector<{w}xi1>'}, {_ty(w)}")
                else:  # tanh_backward: grad * (1 - y^2)
                    one = "%fone" if w == 1 else b.op(ind, f"vector.broadcast %fone : f32 to {_ty(w)}")
                    sq = b.op(ind, f"arith.mulf {a}, {a} : {_ty(w)}")
                    g = b.op(ind, f"arith.mulf {g}, {b.op(ind, f'arith.subf {one}, {sq} : {_ty(w)}')} : {_ty(w)}")
                _store(b, ind, g, "%dz", gt, "%i", o, w)
            if spec.bias:
                s = _reduce(b, ind, g, w)
                row_sum = s if row_sum is None else b.op(ind, f"arith.addf {row_sum}, {s} : f32")
            gs.append((o, w, g))
        b.emit(ind, "scf.for %p = %p0 to %p1 step %c1 {")
        ki = b.op(ind2, f"memref.load %crd[%p] : memref<?x{it}>")
        kk = b.op(ind2, f"arith.index_castui {ki} : {it} to index")
        where = at.replace("%kk", kk)
        # FMA chains per width (chains of 16 lanes rotate so consecutive segments do not wait on each other)
        chains: dict[tuple[int, int], str] = {}
        for q, (o, w, g) in enumerate(gs):
            if w == 1:
                continue  # scalar lanes: _combine
            x = _load(b, ind2, "%x", xt, kk, o, w)
            key = (w, q % CHAINS if w == 16 else 0)
            prev = chains.get(key)
            chains[key] = (b.op(ind2, f"arith.mulf {g}, {x} : {_ty(w)}") if prev is None
                           else b.op(ind2, f"vector.fma {g}, {x}, {prev} : {_ty(w)}"))
        total = _combine(b, ind2, gs, chains, kk, xt)
        if k == 0:
            b.emit(ind2, f"memref.store {total}, %dv[{where}] : {dvt}")
        else:
            old = b.op(ind2, f"memref.load %dv[{where}] : {dvt}")
            b.emit(ind2, f"memref.store {b.op(ind2, f'arith.addf {old}, {total} : f32')}, %dv[{where}] : {dvt}")
        b.emit(ind, "}")
    if spec.bias:
        b.emit(ind, f"memref.store {row_sum}, %db[%i] : memref<{r}xf32>")
    lines += b.lines + ["  }", "  return", "}"]
    head = "// CSR SDDMM: dW values (CSR order) = rows of dz^T . rows of X^T at W's stored positions.\n"
    return head + "module {\n" + "\n".join(lines) + "\n}\n"


def _zero_row(rows: int, cols: int) -> list[str]:
    """Zero row %i of the dense gradient (16 lanes at a time, then the tail): written once, in L1."""
    full = cols - cols % 16
    out = ["    %zr = arith.constant dense<0.0> : vector<16xf32>"]
    if full:
        out += [f"    %zc = arith.constant {full} : index",
                "    %c16 = arith.constant 16 : index",
                "    scf.for %j = %c0 to %zc step %c16 {",
                f"      vector.store %zr, %dv[%i, %j] : memref<{rows}x{cols}xf32>, vector<16xf32>",
                "    }"]
    for j in range(full, cols):
        out += [f"    %zt{j} = arith.constant {j} : index",
                f"    memref.store %fz, %dv[%i, %zt{j}] : memref<{rows}x{cols}xf32>"]
    return out


def _combine(b: _Lines, ind: str, gs, chains: dict, kk: str, xt: str) -> str:
    """Sum the vector chains of each width, reduce each to a scalar, add the scalar lanes."""
    total = None

    def add(v: str) -> None:
        nonlocal total
        total = v if total is None else b.op(ind, f"arith.addf {total}, {v} : f32")

    for w in (16, 8, 4):
        vs = [v for (cw, _), v in sorted(chains.items()) if cw == w]
        while len(vs) > 1:  # pairwise: a tree, not a chain
            vs = [b.op(ind, f"arith.addf {vs[i]}, {vs[i + 1]} : {_ty(w)}") if i + 1 < len(vs) else vs[i]
                  for i in range(0, len(vs), 2)]
        if vs:
            add(_reduce(b, ind, vs[0], w))
    for o, w, g in gs:  # scalar lanes (N not a multiple of 4): one product each
        if w == 1:
            x = _load(b, ind, "%x", xt, kk, o, 1)
            add(b.op(ind, f"arith.mulf {g}, {x} : f32"))
    return total


def emit_scatter_kernel(spec: SddmmSpec) -> str:
    """MLIR text of ``dX^T[j] += w_ij dz^T[i]`` over W's rows (the caller zeroes ``%out`` first)."""
    r, c, n = spec.rows, spec.cols, spec.n
    gt, ot = f"memref<{r}x{n}xf32>", f"memref<{c}x{n}xf32>"
    it = f"i{spec.index_bits}"
    args = ["%pos: memref<?xi32>", f"%crd: memref<?x{it}>", "%val: memref<?xf32>", f"%g: {gt}", f"%out: {ot}"]
    b = _Lines()
    lines = _header(spec, args)
    ind, ind2 = "    ", "      "
    for segs in passes(n, spec.pass_lanes):
        gs = []
        for off, w in segs:
            o = b.op(ind, f"arith.constant {off} : index", "o")
            gs.append((o, w, _load(b, ind, "%g", gt, "%i", o, w)))
        b.emit(ind, "scf.for %p = %p0 to %p1 step %c1 {")
        kk = b.op(ind2, f"arith.index_castui {b.op(ind2, f'memref.load %crd[%p] : memref<?x{it}>')} : {it} to index")
        v = b.op(ind2, "memref.load %val[%p] : memref<?xf32>")
        bcast = {}
        for o, w, g in gs:
            if w not in bcast:
                bcast[w] = v if w == 1 else b.op(ind2, f"vector.broadcast {v} : f32 to {_ty(w)}")
            old = _load(b, ind2, "%out", ot, kk, o, w)
            new = (b.op(ind2, f"arith.addf {old}, {b.op(ind2, f'arith.mulf {v}, {g} : f32')} : f32") if w == 1
                   else b.op(ind2, f"vector.fma {bcast[w]}, {g}, {old} : {_ty(w)}"))
            _store(b, ind2, new, "%out", ot, kk, o, w)
        b.emit(ind, "}")
    lines += b.lines + ["  }", "  return", "}"]
    head = "// CSR dx by scatter: dX^T[j] += w_ij dz^T[i] for each stored (i, j).\n"
    return head + "module {\n" + "\n".join(lines) + "\n}\n"
