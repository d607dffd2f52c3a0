"""A register-blocked BSR kernel in MLIR's vector dialect that reads X as [N, in] and writes Y as [N, out].

Y[n, r0:r0+bh] = sum over the stored blocks (r0, c0) of sum_c X[n, c0+c] * W[r0:r0+bh, c0+c]. The kernel
vectorizes along the block's rows: one vector load of a block column (the values are stored with each
block transposed, so W[r0:r0+bh, c] is contiguous) feeds one broadcast-FMA per input row of an N-tile,
so a weight vector is loaded once per N-tile and an x value once per block row: the sgemm micro-kernel's
register blocking, inside each stored block. Accumulators for a tile of N rows stay in registers over the
whole block row, then bias (a vector load), activation and residual (a contiguous row segment) are applied
to the registers and each output row segment is stored once. No layout copies around the call; the output
and residual may be strided views (each thread's slab writes its columns of the full [N, out] result).

Buffers (sparse-assembler order of the BSR level map): positions, block-column coordinates, values (each
block transposed, [blocks, bw, bh]), then x, bias, residual, out.

16-bit kernels (``KernelSpec.dtype`` bf16/f16): the values, X, the residual and the output are 16-bit in
memory; each load is widened in registers (bf16 by a 16-bit shift, exact; f16 by ``arith.extf``, F16C),
the accumulators, the bias (f32) and the epilogue are f32, and the store rounds once (bf16: integer
round-to-nearest-even, the same bits as torch). The widening helpers are the CSR kernel's
(``emit_rowvec._load_f32`` / ``_to_dtype``), so the two kernels round alike.
"""

from __future__ import annotations

import platform
import re
from functools import lru_cache

import numpy as np

from sparsec.codegen.mlir.emit_rowvec import _load_f32, _to_dtype
from sparsec.codegen.mlir.mathfn import Builder, activation
from sparsec.codegen.spec import KernelSpec

_BSR_RE = re.compile(
    r"^\(i,j\)->\(ifloordiv(\d+):dense,jfloordiv(\d+):compressed,imod(\d+):dense,jmod(\d+):dense\)$"
)
#: vector lanes of accumulators per N-tile: 96 f32 = 12 AVX2 registers (of 16), leaving room for the
#: weight vector and the broadcast; bh x tile <= this. Measured at 16x16, N=128 (1 thread, Zen 2):
#: 96 lanes (6 rows) 41-53 GFLOP/s; 64 lanes 37-51; 112 and 128 lanes spill (27-38).
#: Prefetching the next block's x lines gave nothing (the reorder window covers it).
ACC_LANES = 96
MAX_TILE = 12
#: block widths whose 16-bit X row segment the widened-FMA kernel converts once per block (see ``_tile``)
ROW_WIDEN = (8, 16, 32)
#: fully unrolled block columns up to this width (bigger blocks loop over their columns)
UNROLL_BW = 32


#: vdpbf16ps (AVX512-BF16): per f32 lane, the sum of the products of one pair of adjacent bf16 elements
_DPBF16 = {16: "llvm.x86.avx512bf16.dpbf16ps.512", 8: "llvm.x86.avx512bf16.dpbf16ps.256"}


@lru_cache(maxsize=1)
def host_has_bf16_dot() -> bool:
    """Whether this host has AVX512-BF16 with AVX512VL (vdpbf16ps on 256- and 512-bit registers)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return {"avx512_bf16", "avx512vl", "avx512f"} <= set(line.split(":", 1)[1].split())
    except OSError:
        return False
    return False


def pairs_fit(dtype: str, bh: int, bw: int) -> bool:
    """Whether blocks of this dtype and shape suit vdpbf16ps: bf16, an even block width (column pairs),
    a block height that fills 8- or 16-lane f32 registers."""
    return dtype == "bf16" and bw % 2 == 0 and (bh == 8 or bh % 16 == 0)


def pairs_layout(dtype: str, bh: int, bw: int) -> bool:
    """Whether a layer of this dtype and block runs the vdpbf16ps kernel here (``KernelSpec.block_pairs``):
    the blocks fit (``pairs_fit``) and this host has AVX512-BF16; its values are then stored
    pair-interleaved (``pair_blocks``), else each block transposed (widened FMAs, any x86 host)."""
    return pairs_fit(dtype, bh, bw) and host_has_bf16_dot()


def block_shape(level_map: str | None) -> tuple[int, int] | None:
    """(bh, bw) when ``level_map`` is BSR's, else None."""
    if level_map is None:
        return None
    m = _BSR_RE.match(level_map.replace(" ", ""))
    if not m or m.group(1) != m.group(3) or m.group(2) != m.group(4):
        return None
    return int(m.group(1)), int(m.group(2))


def supports(spec: KernelSpec) -> bool:
    """BSR blocks whose height is a power of two up to 64 (a whole number of vector registers)."""
    bs = block_shape(spec.level_map)
    return bs is not None and spec.form == "natural" and bs[0] in (1, 2, 4, 8, 16, 32, 64)


def supports_map(level_map: str | None) -> bool:
    """Whether a layer of this level map runs on this kernel (the runtime asks before choosing the layout)."""
    bs = block_shape(level_map)
    return bs is not None and bs[0] in (1, 2, 4, 8, 16, 32, 64)


def n_tile(bh: int) -> int:
    """Input rows per register tile for blocks ``bh`` high."""
    return max(1, min(MAX_TILE, ACC_LANES // bh))


def transpose_blocks(values: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """The BSR values with each bh x bw block transposed (what this kernel reads)."""
    return np.ascontiguousarray(values.reshape(-1, bh, bw).transpose(0, 2, 1)).reshape(-1)


def pair_blocks(values: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """The BSR values of each bh x bw block as [bw/2, bh, 2]: element (c2, r, k) is W[r, 2 c2 + k], so one
    load of 2 bh values holds, per output row, the two weights a vdpbf16ps lane multiplies with the
    adjacent pair X[n, 2 c2], X[n, 2 c2 + 1] (one 32-bit broadcast)."""
    return np.ascontiguousarray(values.reshape(-1, bh, bw // 2, 2).transpose(0, 2, 1, 3)).reshape(-1)


def emit_bsrvec_kernel(spec: KernelSpec) -> str:
    """MLIR text of the natural-layout BSR kernel for ``spec`` (memory element type ``spec.dtype``;
    accumulation and epilogue in f32)."""
    if not supports(spec):
        raise ValueError(f"the BSR vector kernel handles BSR in the natural form, not {spec.format}/{spec.form}")
    if spec.dtype not in ("f32", "bf16", "f16"):
        raise ValueError(f"the BSR vector kernel takes f32, bf16 or f16 values, not {spec.dtype}")
    bh, bw = block_shape(spec.level_map)  # type: ignore[misc]
    if spec.block_pairs and not pairs_fit(spec.dtype, bh, bw):
        raise ValueError(f"vdpbf16ps pairs need bf16 blocks of even width and height 8 or 16k, not {bh}x{bw}")
    if spec.block_pairs and not host_has_bf16_dot():
        raise NotImplementedError("the paired bf16 BSR kernel needs AVX512-BF16 and AVX512VL (vdpbf16ps); "
                                  "this CPU has neither: run the layout without pairs (block_pairs=False)")
    r, c, n, ft = spec.rows, spec.cols, spec.n, spec.dtype
    vt = "f32" if bh == 1 else f"vector<{bh}xf32>"  # accumulators and epilogue: f32 for every dtype
    xt = f"memref<{n}x{c}x{ft}, strided<[?, 1]>>"
    ot = f"memref<{n}x{r}x{ft}, strided<[?, 1]>>"
    it = f"i{spec.index_bits}"
    args = ["%pos: memref<?xi32>", f"%crd: memref<?x{it}>", f"%val: memref<?x{ft}>", f"%x: {xt}"]
    if spec.bias:  # the bias stays f32 for 16-bit kernels (as in the CSR kernel)
        args.append(f"%bias: memref<{r}xf32>")
    if spec.residual:
        args.append(f"%res: {ot}")
    args.append(f"%out: {ot}")
    t = n_tile(bh)
    full, rem = divmod(n, t)
    lines = [
        f"func.func @{spec.name}({', '.join(args)}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        f"  %cbw = arith.constant {bw} : index",
        f"  %cbh = arith.constant {bh} : index",
        f"  %cblk = arith.constant {bh * bw} : index",
        f"  %nbr = arith.constant {r // bh} : index",
        f"  %zero = arith.constant {'0.0 : f32' if bh == 1 else f'dense<0.0> : {vt}'}",
        "  scf.for %br = %c0 to %nbr step %c1 {",
        "    %br1 = arith.addi %br, %c1 : index",
        "    %p0i = memref.load %pos[%br] : memref<?xi32>",
        "    %p1i = memref.load %pos[%br1] : memref<?xi32>",
        "    %p0 = arith.index_cast %p0i : i32 to index",
        "    %p1 = arith.index_cast %p1i : i32 to index",
        "    %r0 = arith.muli %br, %cbh : index",
    ]
    if spec.bias:
        load = (f"memref.load %bias[%r0] : memref<{r}xf32>" if bh == 1
                else f"vector.load %bias[%r0] : memref<{r}xf32>, {vt}")
        lines.append(f"    %bv = {load}")
    if full:
        lines += [f"    %nfull = arith.constant {full * t} : index",
                  f"    %ct = arith.constant {t} : index",
                  "    scf.for %n0 = %c0 to %nfull step %ct {"]
        lines += _tile(spec, "m", t, bh, bw, vt, xt, ot, it, "%n0", "      ")
        lines.append("    }")
    if rem:
        lines.append(f"    %nrem = arith.constant {full * t} : index")
        lines += _tile(spec, "r", rem, bh, bw, vt, xt, ot, it, "%nrem", "    ")
    lines += ["  }", "  return", "}"]
    head = (f"// BSR {bh}x{bw}, Y = X W^T in the natural layout, register-blocked by hand "
            f"({t} input rows x {bh} output lanes per tile).\n")
    if spec.block_pairs:
        lane = min(16, bh)
        head += "// bf16 pairs of block columns multiplied by vdpbf16ps (AVX512-BF16), f32 sums.\n"
        lines.insert(0, f"llvm.func @{_DPBF16[lane]}(vector<{lane}xf32>, vector<{2 * lane}xbf16>, "
                        f"vector<{2 * lane}xbf16>) -> vector<{lane}xf32>")
    return head + "module {\n" + "\n".join(lines) + "\n}\n"


def _tile(spec: KernelSpec, tag: str, rows: int, bh: int, bw: int, vt: str, xt: str, ot: str, it: str,
          n0: str, ind: str) -> list[str]:
    """``rows`` input rows from ``n0``: walk the block row's blocks with the accumulators in registers.

    With fewer than 4 rows the FMA chains would wait on each other: block columns then alternate between
    ``split`` accumulator sets (summed before the epilogue)."""
    pairs = spec.block_pairs
    step = 2 if pairs else 1  # block columns per multiply (vdpbf16ps takes two)
    split = max(1, -(-4 // rows)) if bw > step else 1
    split = min(split, bw // step)
    nacc = rows * split
    lines = []
    for j in range(rows):
        lines.append(f"{ind}%n{tag}{j} = arith.addi {n0}, %c{j}_{tag} : index" if j else f"{ind}%n{tag}0 = arith.addi {n0}, %c0 : index")
    consts = [f"{ind}%c{j}_{tag} = arith.constant {j} : index" for j in range(1, max(rows, bw if bw <= UNROLL_BW else 1))]
    lines = consts + lines
    types = ", ".join([vt] * nacc)
    iters = ", ".join(f"%a{tag}{q} = %zero" for q in range(nacc))
    lines += [
        f"{ind}%acc{tag}:{nacc} = scf.for %p = %p0 to %p1 step %c1 iter_args({iters}) -> ({types}) {{",
        f"{ind}  %kbi = memref.load %crd[%p] : memref<?x{it}>",
        f"{ind}  %kb = arith.index_castui %kbi : {it} to index",
        f"{ind}  %col0 = arith.muli %kb, %cbw : index",
        f"{ind}  %vb0 = arith.muli %p, %cblk : index",
    ]
    cur = [f"%a{tag}{q}" for q in range(nacc)]
    column = _pair_column if pairs else _column
    xrow = None
    if spec.dtype != "f32" and not pairs and bw in ROW_WIDEN and bh > 1:
        # 16-bit X, widened FMAs: widen each row's bw inputs once per block (one vector load + convert) and
        # broadcast lanes from the register, instead of a scalar load + convert per column and row
        xrow = []
        for j in range(rows):
            load = f"vector.load %x[%n{tag}{j}, %col0] : {xt}, vector<{bw}x{spec.dtype}>"
            lines += [ind + "  " + ln for ln in _load_f32(spec, f"%xr{tag}{j}", load, bw)]
            xrow.append(f"%xr{tag}{j}")
    if bw <= UNROLL_BW:
        for cc in range(0, bw, step):
            s = (cc // step) % split
            body, new = column(spec, tag, f"{cc}", rows, s, cur, bh, vt, xt, ind + "  ",
                               f"%c{cc}_{tag}" if cc else "%c0", *([(xrow, cc, bw)] if xrow else []))
            lines += body
            cur = new
        lines.append(f"{ind}  scf.yield {', '.join(cur)} : {types}")
    else:  # wide blocks: loop over the block's columns (one accumulator set)
        inner = [f"%b{tag}{q}" for q in range(rows)]
        it_args = ", ".join(f"{inner[q]} = {cur[q]}" for q in range(rows))
        lines.append(f"{ind}  %cstep{tag} = arith.constant {step} : index")
        lines.append(f"{ind}  %in{tag}:{rows} = scf.for %cc = %c0 to %cbw step %cstep{tag} iter_args({it_args}) "
                     f"-> ({', '.join([vt] * rows)}) {{")
        body, new = column(spec, tag, "l", rows, 0, inner + cur[rows:], bh, vt, xt, ind + "    ", "%cc")
        lines += body
        lines.append(f"{ind}    scf.yield {', '.join(new[:rows])} : {', '.join([vt] * rows)}")
        lines.append(f"{ind}  }}")
        outs = [f"%in{tag}#{q}" for q in range(rows)] + cur[rows:]
        lines.append(f"{ind}  scf.yield {', '.join(outs)} : {types}")
    lines.append(f"{ind}}}")
    for j in range(rows):
        lines += _epilogue(spec, tag, j, [f"%acc{tag}#{s * rows + j}" for s in range(split)], vt, ot, bh, ind)
    return lines


def _column(spec: KernelSpec, tag: str, cc: str, rows: int, s: int, cur: list[str], bh: int, vt: str, xt: str,
            ind: str, cidx: str, xrow: tuple[list[str], int, int] | None = None) -> tuple[list[str], list[str]]:
    """One block column: load W[r0:r0+bh, col] once, one broadcast-FMA per input row of the tile (16-bit
    loads widened to f32 in registers). ``xrow``: (each row's widened block inputs, this column's lane,
    the block width) to take x from instead of loading it."""
    ft = spec.dtype
    lines = [
        f"{ind}%wo{cc} = arith.muli {cidx}, %cbh : index",
        f"{ind}%wi{cc} = arith.addi %vb0, %wo{cc} : index",
        f"{ind}%xc{cc} = arith.addi %col0, {cidx} : index",
    ]
    wload = (f"memref.load %val[%wi{cc}] : memref<?x{ft}>" if bh == 1
             else f"vector.load %val[%wi{cc}] : memref<?x{ft}>, vector<{bh}x{ft}>")
    lines += [ind + ln for ln in _load_f32(spec, f"%w{cc}", wload, bh)]
    new = list(cur)
    for j in range(rows):
        q = s * rows + j
        if xrow is not None:
            regs, lane, width = xrow
            lines.append(f"{ind}%x{cc}_{j} = vector.extract {regs[j]}[{lane}] : f32 from vector<{width}xf32>")
        else:
            lines += [ind + ln for ln in _load_f32(spec, f"%x{cc}_{j}", f"memref.load %x[%n{tag}{j}, %xc{cc}] : {xt}", 1)]
        if bh == 1:
            lines.append(f"{ind}%m{cc}_{j} = arith.mulf %x{cc}_{j}, %w{cc} : f32")
            lines.append(f"{ind}%f{cc}_{j} = arith.addf {cur[q]}, %m{cc}_{j} : f32")
        else:
            lines.append(f"{ind}%xb{cc}_{j} = vector.broadcast %x{cc}_{j} : f32 to {vt}")
            lines.append(f"{ind}%f{cc}_{j} = vector.fma %xb{cc}_{j}, %w{cc}, {cur[q]} : {vt}")
        new[q] = f"%f{cc}_{j}"
    return lines, new


def _pair_column(spec: KernelSpec, tag: str, cc: str, rows: int, s: int, cur: list[str], bh: int, vt: str,
                 xt: str, ind: str, cidx: str) -> tuple[list[str], list[str]]:
    """Block columns ``cidx``, ``cidx + 1`` (bf16, pair-interleaved values): per 16 (or 8) output lanes one
    load of their 2 x 16 weights; per input row one 32-bit broadcast of the adjacent X pair and one
    vdpbf16ps per lane group into the f32 accumulators (a 32-row block: two groups, slices of the
    accumulator)."""
    lane = min(16, bh)
    hv, fv = f"vector<{2 * lane}xbf16>", f"vector<{lane}xf32>"
    groups = bh // lane
    lines = [
        f"{ind}%wo{cc} = arith.muli {cidx}, %cbh : index",  # pair cidx/2 starts 2 bh values per pair in
        f"{ind}%wi{cc} = arith.addi %vb0, %wo{cc} : index",
        f"{ind}%xc{cc} = arith.addi %col0, {cidx} : index",
    ]
    for g in range(groups):
        at = f"%wi{cc}"
        if g:
            lines += [f"{ind}%wg{cc}_{g}c = arith.constant {2 * lane * g} : index",
                      f"{ind}%wg{cc}_{g}i = arith.addi %wi{cc}, %wg{cc}_{g}c : index"]
            at = f"%wg{cc}_{g}i"
        lines.append(f"{ind}%w{cc}_{g} = vector.load %val[{at}] : memref<?xbf16>, {hv}")
    new = list(cur)
    for j in range(rows):
        q = s * rows + j
        x = f"%x{cc}_{j}"
        lines += [
            f"{ind}{x}p = vector.load %x[%n{tag}{j}, %xc{cc}] : {xt}, vector<2xbf16>",
            f"{ind}{x}i = vector.bitcast {x}p : vector<2xbf16> to vector<1xi32>",
            f"{ind}{x}s = vector.extract {x}i[0] : i32 from vector<1xi32>",
            f"{ind}{x}b = vector.broadcast {x}s : i32 to vector<{lane}xi32>",
            f"{ind}{x} = vector.bitcast {x}b : vector<{lane}xi32> to {hv}",
        ]
        acc = cur[q]
        for g in range(groups):
            part = acc
            if groups > 1:
                part = f"%f{cc}_{j}_{g}a"
                lines.append(f"{ind}{part} = vector.extract_strided_slice {acc} {{offsets = [{lane * g}], "
                             f"sizes = [{lane}], strides = [1]}} : {vt} to {fv}")
            dot = f"%f{cc}_{j}_{g}d"
            lines.append(f"{ind}{dot} = llvm.call @{_DPBF16[lane]}({part}, %w{cc}_{g}, {x}) : "
                         f"({fv}, {hv}, {hv}) -> {fv}")
            if groups > 1:
                nxt = f"%f{cc}_{j}_{g}"
                lines.append(f"{ind}{nxt} = vector.insert_strided_slice {dot}, {acc} {{offsets = [{lane * g}], "
                             f"strides = [1]}} : {fv} into {vt}")
                acc = nxt
            else:
                acc = dot
        new[q] = acc
    return lines, new


def _epilogue(spec: KernelSpec, tag: str, j: int, parts: list[str], vt: str, ot: str, bh: int,
              ind: str) -> list[str]:
    """Sum the accumulator sets of input row ``j``; bias, activation, residual in registers (f32); one store,
    rounded to the kernel's dtype."""
    b = Builder(vt, indent=ind, prefix=f"e{tag}{j}_")
    v = parts[0]
    for p in parts[1:]:
        v = b.op("arith.addf", v, p)
    if spec.bias:
        v = b.op("arith.addf", v, "%bv")
    v = activation(b, spec.activation, v)
    vec = vt.startswith("vector")
    at = f"%n{tag}{j}, %r0"
    ht = f"vector<{bh}x{spec.dtype}>" if vec else spec.dtype  # the memory type of a row segment
    if spec.residual:
        rv = b._fresh()
        load = f"vector.load %res[{at}] : {ot}, {ht}" if vec else f"memref.load %res[{at}] : {ot}"
        b.lines += [ind + ln for ln in _load_f32(spec, rv, load, bh)]
        v = b.op("arith.addf", v, rv)
    cast, v = _to_dtype(spec, f"%h{tag}{j}", v, bh)
    b.lines += [ind + ln for ln in cast]
    b.lines.append(f"{ind}" + (f"vector.store {v}, %out[{at}] : {ot}, {ht}" if vec else f"memref.store {v}, %out[{at}] : {ot}"))
    return b.lines
