"""A register-blocked CSR kernel written directly in MLIR's vector dialect (Y^T = W X^T form).

The sparsifier's CSR loop reloads and re-stores the output vector for every nonzero (it cannot prove
the output and X do not alias, and its masked vectors defeat LLVM's promotion). This kernel keeps up
to four output vectors in registers while it walks a row's nonzeros, then applies the epilogue (bias,
activation, residual) to the registers and stores once: 1.4-2x faster than the sparsifier's loop on
BERT shapes (benchmarks/RESULTS.md). The buffer interface is the sparse-assembler's for the CSR level
map (positions, coordinates, values, then the dense operands), so the runtime calls both alike.
"""

from __future__ import annotations

import numpy as np

from sparsec import knobs
from sparsec.codegen.mlir.mathfn import Builder, activation
from sparsec.codegen.spec import KernelSpec

CSR_MAP = "(i, j) -> (i : dense, j : compressed)"
#: accumulator registers per pass over a row's nonzeros (4 x 16 lanes; more spills on AVX-512)
MAX_ACCUMULATORS = 4


def segments(n: int) -> list[list[tuple[int, int]]]:
    """Split the N columns into passes of at most four (offset, width) vector segments.

    Widths are 16, 8, 4 or 1 lanes, so no segment ever needs a mask (masked vectors ran 13x slower).
    """
    segs, off = [], 0
    for width in (16, 8, 4, 1):
        while n - off >= width:
            segs.append((off, width))
            off += width
    return [segs[i : i + MAX_ACCUMULATORS] for i in range(0, len(segs), MAX_ACCUMULATORS)]


def choose_k_tile(cols: int) -> int:
    """Input columns per tile for a weight of ``cols`` columns (0: untiled), from knob ``csr_k_tile``.

    The default 128 columns x 64 lanes x 4 B = 32 KB of X^T per walk (L1). The tile is part of the
    KernelSpec, so the kernel cache never mixes kernels of different tiles."""
    k = knobs.get("csr_k_tile")
    return 0 if k <= 0 or k >= cols else k


def tile_positions(pos: np.ndarray, crd: np.ndarray, cols: int, k_tile: int) -> np.ndarray:
    """``tpos[t * rows + i]``: the first nonzero of row ``i`` at column >= ``t * k_tile`` (int32).

    Columns are sorted within a row, so tile ``t`` of row ``i`` is ``tpos[t*rows+i] .. tpos[(t+1)*rows+i]``.
    """
    rows = len(pos) - 1
    nt = -(-cols // k_tile)
    counts = np.diff(pos.astype(np.int64))
    key = np.repeat(np.arange(rows, dtype=np.int64), counts) * cols + crd.astype(np.int64)
    starts = np.arange(rows, dtype=np.int64)[None, :] * cols + np.minimum(
        np.arange(nt + 1, dtype=np.int64) * k_tile, cols)[:, None]
    return np.searchsorted(key, starts.reshape(-1), side="left").astype(np.int32)


def supports(spec: KernelSpec) -> bool:
    """This emitter handles CSR, in both forms."""
    return spec.level_map.replace(" ", "") == CSR_MAP.replace(" ", "")


def kernel_args(spec: KernelSpec, x_type: str, out_type: str) -> list[str]:
    """The argument list every hand-written CSR kernel takes, in the order SparseLinear passes them:
    pos, crd, val, [tpos when X is tiled], x, [bias], [residual], out."""
    args = ["%pos: memref<?xi32>", f"%crd: memref<?xi{spec.index_bits}>", f"%val: memref<?x{spec.dtype}>"]
    if num_tiles(spec) > 1:  # tpos[t * rows + i]: the first nonzero of row i at column >= t * k_tile
        args.append("%tpos: memref<?xi32>")
    args.append(f"%x: {x_type}")
    if spec.bias:
        args.append(f"%bias: memref<{spec.rows}xf32>")
    if spec.residual:
        args.append(f"%res: {out_type}")
    args.append(f"%out: {out_type}")
    return args


def num_tiles(spec: KernelSpec) -> int:
    """How many input-dimension tiles the scatter kernel walks (1 when untiled)."""
    if spec.form == "dot" or spec.k_tile <= 0 or spec.k_tile >= spec.cols:
        return 1
    return -(-spec.cols // spec.k_tile)


def emit_rowvec_kernel(spec: KernelSpec) -> str:
    """MLIR text of the register-blocked CSR kernel for ``spec``."""
    if not supports(spec):
        raise ValueError(f"the row-vector kernel handles CSR, not {spec.format}")
    if spec.form == "dot":
        return _emit_dot(spec)
    r, c, n, ft = spec.rows, spec.cols, spec.n, spec.dtype
    xt, ot = f"memref<{c}x{n}x{ft}>", f"memref<{r}x{n}x{ft}>"
    it = f"i{spec.index_bits}"
    nt = num_tiles(spec)
    args = kernel_args(spec, xt, ot)
    lines = [
        f"func.func @{spec.name}({', '.join(args)}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        f"  %rows = arith.constant {r} : index",
    ]
    # One walk over all rows per pass (not all passes per row): a pass reads only its N-segment of X^T.
    # With input tiles, one walk per (pass, tile): a walk then reads k_tile x 64 lanes of X^T (L1-sized)
    # and keeps the partial sums in the output between tiles.
    for k, passes in enumerate(segments(n)):
        if nt == 1:
            lines += _walk(spec, f"{k}", passes, xt, ot, it, "%pos", "%c0", "zero", True)
            continue
        lines.append(f"  %tb{k}_last = arith.constant {(nt - 1) * r} : index")
        lines += _walk(spec, f"{k}f", passes, xt, ot, it, "%tpos", "%c0", "zero", nt == 1)
        if nt > 2:
            lines += [f"  %tlo{k} = arith.constant {r} : index",
                      f"  %thi{k} = arith.constant {(nt - 1) * r} : index",
                      f"  scf.for %tb{k} = %tlo{k} to %thi{k} step %rows {{"]
            lines += ["  " + ln for ln in _walk(spec, f"{k}m", passes, xt, ot, it, "%tpos", f"%tb{k}", "load", False)]
            lines.append("  }")
        lines += _walk(spec, f"{k}l", passes, xt, ot, it, "%tpos", f"%tb{k}_last", "load", True)
    lines += ["  return", "}"]
    head = (f"// CSR ({CSR_MAP}) Y^T = W X^T, register-blocked by hand: the sparsifier's loop for this\n"
            "// level map stores the output once per nonzero; this one once per row segment.\n")
    return head + "module {\n" + "\n".join(lines) + "\n}\n"


def _walk(spec: KernelSpec, k: str, segs: list[tuple[int, int]], xt: str, ot: str, it: str,
          positions: str, base: str, init: str, final: bool, lo: str = "%c0", hi: str = "%rows",
          **where: str | bool | None) -> list[str]:
    """One loop over all rows: row i walks nonzeros ``positions[base + i] .. positions[base + i + 1]``
    (``base`` steps by ``rows`` per tile in ``tpos``), starting from zeros or the partial sums in out.
    ``lo``/``hi`` bound the rows walked; ``where`` renames the buffers for kernels that walk scratch
    panels (see ``_pass``)."""
    lines = [
        f"  scf.for %i = {lo} to {hi} step %c1 {{",
        f"    %q0 = arith.addi {base}, %i : index",
        "    %q1 = arith.addi %q0, %c1 : index" if positions == "%pos" else "    %q1 = arith.addi %q0, %rows : index",
        f"    %p0i = memref.load {positions}[%q0] : memref<?xi32>",
        f"    %p1i = memref.load {positions}[%q1] : memref<?xi32>",
        "    %p0 = arith.index_cast %p0i : i32 to index",
        "    %p1 = arith.index_cast %p1i : i32 to index",
    ]
    if spec.bias and final:
        lines.append(f"    %bs = memref.load %bias[%i] : memref<{spec.rows}xf32>")
    lines += _pass(spec, k, segs, xt, ot, it, init, final, **where)
    lines.append("  }")
    return lines


def _vtype(width: int, elem: str = "f32") -> str:
    return elem if width == 1 else f"vector<{width}x{elem}>"


def _load_f32(spec: KernelSpec, name: str, load: str, width: int) -> list[str]:
    """``name = load`` (a value of the kernel's dtype), extended to f32 for 16-bit dtypes.

    bf16 widens by bit shifts (exact): LLVM's fpext of bfloat needs AVX512-BF16 or a libcall the JIT
    does not resolve. f16 uses arith.extf (F16C's vcvtph2ps)."""
    if spec.dtype == "f32":
        return [f"{name} = {load}"]
    h, f = _vtype(width, spec.dtype), _vtype(width)
    if spec.dtype == "f16":
        return [f"{name}_h = {load}", f"{name} = arith.extf {name}_h : {h} to {f}"]
    i16, i32 = _vtype(width, "i16"), _vtype(width, "i32")
    sixteen = "16 : i32" if width == 1 else f"dense<16> : {i32}"
    return [f"{name}_h = {load}",
            f"{name}_b = arith.bitcast {name}_h : {h} to {i16}",
            f"{name}_e = arith.extui {name}_b : {i16} to {i32}",
            f"{name}_s16 = arith.constant {sixteen}",
            f"{name}_u = arith.shli {name}_e, {name}_s16 : {i32}",
            f"{name} = arith.bitcast {name}_u : {i32} to {f}"]


def _to_dtype(spec: KernelSpec, name: str, value: str, width: int) -> tuple[list[str], str]:
    """Lines rounding the f32 ``value`` to the kernel's dtype (nearest-even), and the rounded value's name.

    bf16 rounds by integer ops (add 0x7fff plus the kept lowest bit, keep the high half; NaN stays a
    quiet NaN), the same result as torch's float->bfloat16."""
    if spec.dtype == "f32":
        return [], value
    h, f = _vtype(width, spec.dtype), _vtype(width)
    if spec.dtype == "f16":
        return [f"{name} = arith.truncf {value} : {f} to {h}"], name
    i1, i16, i32 = _vtype(width, "i1"), _vtype(width, "i16"), _vtype(width, "i32")

    def c(v: int, ty: str) -> str:
        return f"{v} : {ty}" if width == 1 else f"dense<{v}> : {_vtype(width, ty)}"
    return [f"{name}_i = arith.bitcast {value} : {f} to {i32}",
            f"{name}_c16 = arith.constant {c(16, 'i32')}",
            f"{name}_c1 = arith.constant {c(1, 'i32')}",
            f"{name}_cr = arith.constant {c(0x7FFF, 'i32')}",
            f"{name}_cn = arith.constant {c(0x7FC0, 'i16')}",
            f"{name}_sh = arith.shrui {name}_i, {name}_c16 : {i32}",
            f"{name}_lsb = arith.andi {name}_sh, {name}_c1 : {i32}",
            f"{name}_bias = arith.addi {name}_cr, {name}_lsb : {i32}",
            f"{name}_rd = arith.addi {name}_i, {name}_bias : {i32}",
            f"{name}_hi = arith.shrui {name}_rd, {name}_c16 : {i32}",
            f"{name}_t = arith.trunci {name}_hi : {i32} to {i16}",
            f"{name}_nan = arith.cmpf uno, {value}, {value} : {f}",
            f"{name}_q = arith.select {name}_nan, {name}_cn, {name}_t : {i1}, {i16}",
            f"{name} = arith.bitcast {name}_q : {i16} to {h}"], name


def _pass(spec: KernelSpec, k: str, segs: list[tuple[int, int]], xt: str, ot: str, it: str,
          init: str = "zero", final: bool = True, xbuf: str = "%x", obuf: str = "%out",
          kshift: str | None = None, residual: bool = True) -> list[str]:
    """One walk over the row's nonzeros accumulating ``segs`` in registers, then the epilogue.

    ``xbuf``/``obuf`` name the X^T panel and the output read/written; ``kshift`` (an index value) is
    subtracted from each stored column (a panel holding only one input tile); ``residual=False`` leaves
    the residual to the caller."""
    types = [_vtype(w) for _, w in segs]
    if spec.dtype != "f32" and not (init == "zero" and final):
        raise ValueError("16-bit CSR kernels are untiled (partial sums between tiles would be rounded)")
    lines = []
    for q, (off, w) in enumerate(segs):
        lines.append(f"    %o{k}_{q} = arith.constant {off} : index")
        if init == "zero":
            zero = "0.0 : f32" if w == 1 else f"dense<0.0> : {types[q]}"
            lines.append(f"    %z{k}_{q} = arith.constant {zero}")
        elif w == 1:
            lines.append(f"    %z{k}_{q} = memref.load {obuf}[%i, %o{k}_{q}] : {ot}")
        else:
            lines.append(f"    %z{k}_{q} = vector.load {obuf}[%i, %o{k}_{q}] : {ot}, {types[q]}")
    iters = ", ".join(f"%a{k}_{q} = %z{k}_{q}" for q in range(len(segs)))
    lines.append(
        f"    %acc{k}:{len(segs)} = scf.for %p = %p0 to %p1 step %c1 iter_args({iters}) -> ({', '.join(types)}) {{"
    )
    lines += [
        f"      %ki = memref.load %crd[%p] : memref<?x{it}>",
        f"      %{'kc' if kshift else 'kk'} = arith.index_castui %ki : {it} to index",
        *([f"      %kk = arith.subi %kc, {kshift} : index"] if kshift else []),
    ]
    lines += ["      " + ln for ln in _load_f32(spec, "%v", f"memref.load %val[%p] : memref<?x{spec.dtype}>", 1)]
    news = []
    for q, (_, w) in enumerate(segs):
        if w == 1:
            lines += ["      " + ln for ln in _load_f32(spec, f"%x{q}", f"memref.load {xbuf}[%kk, %o{k}_{q}] : {xt}", 1)]
            lines.append(f"      %m{q} = arith.mulf %v, %x{q} : f32")
            lines.append(f"      %n{q} = arith.addf %a{k}_{q}, %m{q} : f32")
        else:
            lines.append(f"      %vb{q} = vector.broadcast %v : f32 to {types[q]}")
            lines += ["      " + ln for ln in _load_f32(
                spec, f"%x{q}", f"vector.load {xbuf}[%kk, %o{k}_{q}] : {xt}, {_vtype(w, spec.dtype)}", w)]
            lines.append(f"      %n{q} = vector.fma %vb{q}, %x{q}, %a{k}_{q} : {types[q]}")
        news.append(f"%n{q}")
    lines.append(f"      scf.yield {', '.join(news)} : {', '.join(types)}")
    lines.append("    }")
    for q, (_, w) in enumerate(segs):
        if final:
            lines += _epilogue(spec, k, q, w, types[q], ot, obuf, residual)
        elif w == 1:
            lines.append(f"    memref.store %acc{k}#{q}, {obuf}[%i, %o{k}_{q}] : {ot}")
        else:
            lines.append(f"    vector.store %acc{k}#{q}, {obuf}[%i, %o{k}_{q}] : {ot}, {types[q]}")
    return lines


def _epilogue(spec: KernelSpec, k: int, q: int, width: int, ty: str, ot: str, obuf: str = "%out",
              residual: bool = True) -> list[str]:
    """bias, activation and residual on the accumulator register, then one store."""
    b = Builder(ty, indent="    ", prefix=f"e{k}_{q}_")  # a prefix per segment keeps SSA names unique
    v = f"%acc{k}#{q}"
    if spec.bias:
        bv = "%bs" if width == 1 else b.op("vector.broadcast", "%bs", ty=f"f32 to {ty}")
        v = b.op("arith.addf", v, bv)
    v = activation(b, spec.activation, v)
    at = f"%i, %o{k}_{q}"
    text = b.text().rstrip("\n").split("\n") if b.lines else []
    if spec.residual and residual:
        name = f"%rs{k}_{q}"
        hty = _vtype(width, spec.dtype)
        load = f"memref.load %res[{at}] : {ot}" if width == 1 else f"vector.load %res[{at}] : {ot}, {hty}"
        text += ["    " + ln for ln in _load_f32(spec, name, load, width)]
        b2 = Builder(ty, indent="    ", prefix=f"r{k}_{q}_")
        v = b2.op("arith.addf", v, name)
        text += b2.text().rstrip("\n").split("\n")
    cast, v = _to_dtype(spec, f"%h{k}_{q}", v, width)
    text += ["    " + ln for ln in cast]
    hty = _vtype(width, spec.dtype)
    store = (f"memref.store {v}, {obuf}[{at}] : {ot}" if width == 1
             else f"vector.store {v}, {obuf}[{at}] : {ot}, {hty}")
    text.append(f"    {store}")
    return text


def _emit_dot(spec: KernelSpec) -> str:
    """N == 1: each row gathers x at 16 stored columns at a time (AVX-512 gather), then reduces."""
    r, c, ft = spec.rows, spec.cols, spec.dtype
    it = f"i{spec.index_bits}"
    args = ["%pos: memref<?xi32>", f"%crd: memref<?x{it}>", f"%val: memref<?x{ft}>", f"%x: memref<{c}x{ft}>"]
    if spec.bias:
        args.append(f"%bias: memref<{r}xf32>")
    if spec.residual:
        args.append(f"%res: memref<{r}x{ft}>")
    args.append(f"%out: memref<{r}x{ft}>")
    b = Builder("f32", indent="    ", prefix="d")
    v = "%sum"
    if spec.bias:
        v = b.op("arith.addf", v, "%bs")
    v = activation(b, spec.activation, v)
    if spec.residual:
        v = b.op("arith.addf", v, "%rv")
    epilogue = b.text()
    cast, v = _to_dtype(spec, "%vh", v, 1)
    epilogue += "".join(f"    {ln}\n" for ln in cast)
    ind = "\n      "
    vals = ind.join(_load_f32(spec, "%vals", f"vector.load %val[%p] : memref<?x{ft}>, vector<16x{ft}>", 16))
    gather = ind.join(_load_f32(
        spec, "%xs", f"vector.gather %xf[%c0][%cols], %all, %zh : memref<?x{ft}>, vector<16xi32>, vector<16xi1>, "
        f"vector<16x{ft}> into vector<16x{ft}>", 16))
    w_load = ind.join(_load_f32(spec, "%w", f"memref.load %val[%p] : memref<?x{ft}>", 1))
    x_load = ind.join(_load_f32(spec, "%xv", f"memref.load %x[%k] : memref<{c}x{ft}>", 1))
    res_load = "".join(f"    {ln}\n" for ln in _load_f32(spec, "%rv", f"memref.load %res[%i] : memref<{r}x{ft}>", 1))
    return f"""module {{
func.func @{spec.name}({', '.join(args)}) attributes {{ llvm.emit_c_interface }} {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c16 = arith.constant 16 : index
  %rows = arith.constant {r} : index
  %zv = arith.constant dense<0.0> : vector<16xf32>
  %zh = arith.constant dense<0.0> : vector<16x{ft}>
  %zs = arith.constant 0.0 : f32
  %all = arith.constant dense<true> : vector<16xi1>
  %zi = arith.constant dense<0> : vector<16xi32>
  %xf = memref.reinterpret_cast %x to offset: [0], sizes: [{c}], strides: [1] : memref<{c}x{ft}> to memref<?x{ft}>
  scf.for %i = %c0 to %rows step %c1 {{
    %p0i = memref.load %pos[%i] : memref<?xi32>
    %i1 = arith.addi %i, %c1 : index
    %p1i = memref.load %pos[%i1] : memref<?xi32>
    %p0 = arith.index_cast %p0i : i32 to index
    %p1 = arith.index_cast %p1i : i32 to index
    %len = arith.subi %p1, %p0 : index
    %nv = arith.divui %len, %c16 : index
    %vlen = arith.muli %nv, %c16 : index
    %pv = arith.addi %p0, %vlen : index
    %acc = scf.for %p = %p0 to %pv step %c16 iter_args(%a = %zv) -> (vector<16xf32>) {{
      {vals}
      %colsn = vector.load %crd[%p] : memref<?x{it}>, vector<16x{it}>
      {"%cols = arith.extui %colsn : vector<16xi16> to vector<16xi32>" if it == "i16" else "%cols = arith.addi %colsn, %zi : vector<16xi32>"}
      {gather}
      %an = vector.fma %vals, %xs, %a : vector<16xf32>
      scf.yield %an : vector<16xf32>
    }}
    %part = vector.reduction <add>, %acc : vector<16xf32> into f32
    %sum = scf.for %p = %pv to %p1 step %c1 iter_args(%s = %part) -> (f32) {{
      %ki = memref.load %crd[%p] : memref<?x{it}>
      %k = arith.index_castui %ki : {it} to index
      {w_load}
      {x_load}
      %m = arith.mulf %w, %xv : f32
      %sn = arith.addf %s, %m : f32
      scf.yield %sn : f32
    }}
{"    %bs = memref.load %bias[%i] : memref<" + str(r) + "xf32>" + chr(10) if spec.bias else ""}{res_load if spec.residual else ""}{epilogue}    memref.store {v}, %out[%i] : memref<{r}x{ft}>
  }}
  return
}}
}}
"""
