"""The CSR kernel in the natural layout: reads X as [N, in], writes Y as [N, out] (no transposes around it).

It is the register-blocked walk of ``emit_rowvec`` (up to 4 x 16 output lanes of N in registers per walk
over a row's nonzeros), run on scratch panels instead of on caller-made transposes: for each block of up
to 64 input rows the kernel transposes X[n-block, :] into a [in, 64] panel (8x8 tiles, 24 vector
shuffles each); then for each block of ``ROW_BLOCK`` weight rows it walks the input tiles of ``k_tile``
columns (each walk reads a 32 KB slice of the panel: L1) keeping the row block's partial sums in an
accumulator panel (64 KB: L2); the last tile applies bias and activation in registers, and the row
block's sums go back to Y[n-block, row block] in 8x8 transposed tiles, adding the residual (read in its
natural layout) on the way. Edges that are not multiples of 8
(N, input columns, rows) are moved by scalar loops. X, the residual and Y may be row-strided views, so a
thread's slab writes its columns of the full [N, out] result directly.

Buffers: the CSR level map's (positions, coordinates, values), the tile positions when tiled (see
``emit_rowvec.tile_positions``), then x, bias, residual, out.
"""

from __future__ import annotations

from sparsec import knobs
from sparsec.codegen.mlir import emit_rowvec
from sparsec.codegen.spec import KernelSpec

#: input rows per block (the accumulator panel's width): 4 segments of 16 lanes, like the scatter kernel
N_BLOCK = 64
#: weight rows per walk: their partial sums (ROW_BLOCK x 64 lanes x 4 B = 64 KB) stay in L2 across tiles
ROW_BLOCK = 256


def supports(spec: KernelSpec) -> bool:
    """f32 CSR in the natural form (16-bit CSR keeps the Y^T kernel)."""
    return spec.form == "natural" and spec.dtype == "f32" and emit_rowvec.supports(spec)


def tile_width(spec: KernelSpec) -> int:
    """Input columns per panel: the spec's tile, or all columns when untiled."""
    return spec.k_tile if 0 < spec.k_tile < spec.cols else spec.cols


def _masks(b: int) -> tuple[str, str]:
    """Shuffle masks of one butterfly stage of an 8x8 transpose: swap the off-diagonal b x b blocks."""
    lo = [j if not j & b else 8 + j - b for j in range(8)]
    hi = [j + b if not j & b else 8 + j for j in range(8)]
    return ", ".join(map(str, lo)), ", ".join(map(str, hi))


def _transpose8(rows: list[str], tag: str, ind: str) -> tuple[list[str], list[str]]:
    """24 ``vector.shuffle`` ops turning 8 row vectors (vector<8xf32>) into the 8 columns."""
    lines, cur = [], list(rows)
    for b in (4, 2, 1):
        lo, hi = _masks(b)
        new = list(cur)
        for r in range(8):
            if r & b:
                continue
            for dst, mask in ((r, lo), (r + b, hi)):
                name = f"%t{tag}{b}_{dst}"
                lines.append(f"{ind}{name} = vector.shuffle {cur[r]}, {cur[r + b]} [{mask}] "
                             ": vector<8xf32>, vector<8xf32>")
                new[dst] = name
        cur = new
    return lines, cur


def _copy_t(tag: str, src: str, st: str, dst: str, dt: str, s0: tuple[str, str], d0: tuple[str, str],
            n_src_rows: int, n_src_cols: int, ind: str, add: tuple[str, str] | None = None) -> list[str]:
    """dst[d0 + (c, r)] = src[s0 + (r, c)] for r < n_src_rows, c < n_src_cols (static sizes).

    ``add`` = (buffer, type): also add that buffer at the destination index (the residual)."""
    r8, c8 = n_src_rows - n_src_rows % 8, n_src_cols - n_src_cols % 8
    sr, sc = s0
    dr, dc = d0
    lines = []
    if r8 and c8:
        lines += [f"{ind}%{tag}r8 = arith.constant {r8} : index", f"{ind}%{tag}c8 = arith.constant {c8} : index",
                  f"{ind}scf.for %{tag}a = %c0 to %{tag}r8 step %c8 {{",
                  f"{ind}  scf.for %{tag}b = %c0 to %{tag}c8 step %c8 {{",
                  f"{ind}    %{tag}sc = arith.addi {sc}, %{tag}b : index",
                  f"{ind}    %{tag}dr = arith.addi {dr}, %{tag}b : index"]
        rows = []
        for j in range(8):
            lines += [f"{ind}    %{tag}sr{j} = arith.addi {sr}, %{tag}a : index" if j == 0 else
                      f"{ind}    %{tag}sr{j} = arith.addi %{tag}sr0, %c{j}n : index",
                      f"{ind}    %{tag}v{j} = vector.load {src}[%{tag}sr{j}, %{tag}sc] : {st}, vector<8xf32>"]
            rows.append(f"%{tag}v{j}")
        body, cols = _transpose8(rows, tag, ind + "    ")
        lines += body
        lines.append(f"{ind}    %{tag}dc = arith.addi {dc}, %{tag}a : index")
        for j in range(8):
            lines.append(f"{ind}    %{tag}d{j} = arith.addi %{tag}dr, %c{j}n : index" if j else
                         f"{ind}    %{tag}d0 = arith.addi %{tag}dr, %c0 : index")
            v = cols[j]
            if add is not None:
                lines += [f"{ind}    %{tag}q{j} = vector.load {add[0]}[%{tag}d{j}, %{tag}dc] : {add[1]}, vector<8xf32>",
                          f"{ind}    %{tag}s{j} = arith.addf {v}, %{tag}q{j} : vector<8xf32>"]
                v = f"%{tag}s{j}"
            lines.append(f"{ind}    vector.store {v}, {dst}[%{tag}d{j}, %{tag}dc] : {dt}, vector<8xf32>")
        lines += [f"{ind}  }}", f"{ind}}}"]
    # scalar edges: the rows past r8 (all columns), and the columns past c8 of the first r8 rows
    for name, (ra, rb, ca, cb) in (("e", (r8, n_src_rows, 0, n_src_cols)), ("f", (0, r8, c8, n_src_cols))):
        if ra >= rb or ca >= cb:
            continue
        t = f"{tag}{name}"
        lines += [f"{ind}%{t}ra = arith.constant {ra} : index", f"{ind}%{t}rb = arith.constant {rb} : index",
                  f"{ind}%{t}ca = arith.constant {ca} : index", f"{ind}%{t}cb = arith.constant {cb} : index",
                  f"{ind}scf.for %{t}r = %{t}ra to %{t}rb step %c1 {{",
                  f"{ind}  scf.for %{t}c = %{t}ca to %{t}cb step %c1 {{",
                  f"{ind}    %{t}i = arith.addi {sr}, %{t}r : index", f"{ind}    %{t}j = arith.addi {sc}, %{t}c : index",
                  f"{ind}    %{t}k = arith.addi {dr}, %{t}c : index", f"{ind}    %{t}l = arith.addi {dc}, %{t}r : index",
                  f"{ind}    %{t}v = memref.load {src}[%{t}i, %{t}j] : {st}"]
        v = f"%{t}v"
        if add is not None:
            lines += [f"{ind}    %{t}q = memref.load {add[0]}[%{t}k, %{t}l] : {add[1]}",
                      f"{ind}    %{t}s = arith.addf {v}, %{t}q : f32"]
            v = f"%{t}s"
        lines += [f"{ind}    memref.store {v}, {dst}[%{t}k, %{t}l] : {dt}", f"{ind}  }}", f"{ind}}}"]
    return lines


def _block(spec: KernelSpec, tag: str, n0: str, width: int, xt_t: str, pt: str, at: str, ot: str,
           it: str) -> list[str]:
    """One block of ``width`` input rows from ``n0``: transpose X into the panel, then per row block walk
    the input tiles and move the row block's sums to Y."""
    c = spec.cols
    lines = _copy_t(f"x{tag}", "%x", xt_t, "%pan", pt, (n0, "%c0"), ("%c0", "%c0"), width, c, "  ")
    full, rem = divmod(spec.rows, ROW_BLOCK)
    if full:
        lines += [f"  %rbn{tag} = arith.constant {full * ROW_BLOCK} : index",
                  f"  scf.for %rb{tag} = %c0 to %rbn{tag} step %crb {{",
                  f"    %rh{tag} = arith.addi %rb{tag}, %crb : index"]
        lines += ["  " + ln for ln in _row_block(spec, f"{tag}b", n0, width, f"%rb{tag}", f"%rh{tag}",
                                                 ROW_BLOCK, pt, at, ot, it)]
        lines.append("  }")
    if rem:
        lines += [f"  %rr{tag} = arith.constant {full * ROW_BLOCK} : index"]
        lines += _row_block(spec, f"{tag}r", n0, width, f"%rr{tag}", "%rows", rem, pt, at, ot, it)
    return lines


def _block_tiles_outer(spec: KernelSpec, tag: str, n0: str, width: int, xt_t: str, pt: str, at: str, ot: str,
                       it: str) -> list[str]:
    """One block of ``width`` input rows, input tiles outermost: per tile, transpose that tile of X into
    the (tile-sized, L1) panel and walk every row's nonzeros in it, the partial sums of all rows in the
    accumulator panel; then all rows' sums go to Y. The X panel never exists whole (see ``tiles_outer``)."""
    r, c = spec.rows, spec.cols
    kt, nt = tile_width(spec), emit_rowvec.num_tiles(spec)
    passes = emit_rowvec.segments(width)

    def tile(t: str, base: str, col0: str, init: str, final: bool, ncols: int) -> list[str]:
        out = _copy_t(f"x{tag}{t}", "%x", xt_t, "%pan", pt, (n0, col0), ("%c0", "%c0"), width, ncols, "  ")
        for k, segs in enumerate(passes):
            out += emit_rowvec._walk(spec, f"{tag}{t}{k}", segs, pt, at, it, "%tpos", base, init, final,
                                     xbuf="%pan", obuf="%acc", residual=False, kshift=col0)
        return out

    lines = tile("f", "%c0", "%c0", "zero", False, kt)
    if nt > 2:
        lines += [f"  %mlo{tag} = arith.constant {r} : index", f"  %mhi{tag} = arith.constant {(nt - 1) * r} : index",
                  f"  %mkt{tag} = arith.constant {kt} : index",
                  f"  scf.for %mb{tag} = %mlo{tag} to %mhi{tag} step %rows {{",
                  f"    %mt{tag} = arith.divui %mb{tag}, %rows : index",
                  f"    %mc{tag} = arith.muli %mt{tag}, %mkt{tag} : index"]
        lines += ["  " + ln for ln in tile("m", f"%mb{tag}", f"%mc{tag}", "load", False, kt)]
        lines.append("  }")
    lines += [f"  %lb{tag} = arith.constant {(nt - 1) * r} : index",
              f"  %lc{tag} = arith.constant {(nt - 1) * kt} : index"]
    lines += tile("l", f"%lb{tag}", f"%lc{tag}", "load", True, c - (nt - 1) * kt)
    add = ("%res", ot) if spec.residual else None
    lines += _copy_t(f"y{tag}", "%acc", at, "%out", ot, ("%c0", "%c0"), (n0, "%c0"), r, width, "  ", add)
    return lines


def choose_tiles_outer(rows: int, cols: int, n: int, k_tile: int) -> bool:
    """The natural CSR kernel's loop order for a slab (``KernelSpec.tiles_outer``), from knob
    ``csr_tiles_outer_kb``: input tiles outermost when the whole [in, 64] X panel would exceed that many KB
    (not stay in L2) but the accumulators of all rows would not (768x3072 at BERT-base shapes: a 768 KB
    panel, 192 KB of sums); 0: whenever the weight has two or more input tiles."""
    if k_tile <= 0 or k_tile >= cols or n < 2:
        return False
    limit = knobs.get("csr_tiles_outer_kb") * 1024
    nb = min(N_BLOCK, n)
    return limit == 0 or (cols * nb * 4 > limit and rows * nb * 4 <= limit)


def _row_block(spec: KernelSpec, tag: str, n0: str, width: int, lo: str, hi: str, nrows: int, pt: str,
               at: str, ot: str, it: str) -> list[str]:
    """Rows ``lo`` .. ``hi`` (``nrows``) of one input block: every tile's walk, then the transposed store."""
    r = spec.rows
    nt = emit_rowvec.num_tiles(spec)
    passes = emit_rowvec.segments(width)

    def tile(t: str, base: str, init: str, final: bool) -> list[str]:
        out = []
        for k, segs in enumerate(passes):
            out += emit_rowvec._walk(spec, f"{tag}{t}{k}", segs, pt, at, it, "%tpos" if nt > 1 else "%pos",
                                     base, init, final, lo, hi, xbuf="%pan", obuf="%acc", residual=False)
        return out

    if nt == 1:
        lines = tile("o", "%c0", "zero", True)
    else:
        lines = tile("f", "%c0", "zero", False)
        if nt > 2:
            lines += [f"  %mlo{tag} = arith.constant {r} : index", f"  %mhi{tag} = arith.constant {(nt - 1) * r} : index",
                      f"  scf.for %mb{tag} = %mlo{tag} to %mhi{tag} step %rows {{"]
            lines += ["  " + ln for ln in tile("m", f"%mb{tag}", "load", False)]
            lines.append("  }")
        lines.append(f"  %lb{tag} = arith.constant {(nt - 1) * r} : index")
        lines += tile("l", f"%lb{tag}", "load", True)
    add = ("%res", ot) if spec.residual else None
    lines += _copy_t(f"y{tag}", "%acc", at, "%out", ot, (lo, "%c0"), (n0, lo), nrows, width, "  ", add)
    return lines


def emit_csrnat_kernel(spec: KernelSpec) -> str:
    """MLIR text of the natural-layout CSR kernel for ``spec``."""
    if not supports(spec):
        raise ValueError(f"the natural CSR kernel handles CSR in the natural form, not {spec.format}/{spec.form}")
    r, c, n = spec.rows, spec.cols, spec.n
    it = f"i{spec.index_bits}"
    nb = min(N_BLOCK, n)
    xt_t = f"memref<{n}x{c}xf32, strided<[?, 1]>>"
    ot = f"memref<{n}x{r}xf32, strided<[?, 1]>>"
    outer = spec.tiles_outer and emit_rowvec.num_tiles(spec) > 1
    block = _block_tiles_outer if outer else _block
    pt, at = f"memref<{tile_width(spec) if outer else c}x{nb}xf32>", f"memref<{r}x{nb}xf32>"
    args = emit_rowvec.kernel_args(spec, xt_t, ot)
    lines = [
        f"func.func @{spec.name}({', '.join(args)}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        "  %c8 = arith.constant 8 : index",
        *[f"  %c{j}n = arith.constant {j} : index" for j in range(1, 8)],
        f"  %rows = arith.constant {r} : index",
        f"  %crb = arith.constant {ROW_BLOCK} : index",
        f"  %pan = memref.alloc() {{alignment = 64 : i64}} : {pt}",
        f"  %acc = memref.alloc() {{alignment = 64 : i64}} : {at}",
    ]
    full, rem = divmod(n, nb)
    if full:
        lines += [f"  %nfull = arith.constant {full * nb} : index", f"  %cnb = arith.constant {nb} : index",
                  "  scf.for %nb0 = %c0 to %nfull step %cnb {"]
        lines += ["  " + ln for ln in block(spec, "B", "%nb0", nb, xt_t, pt, at, ot, it)]
        lines.append("  }")
    if rem:
        # the tail block uses the left columns of the same panels (their static width is nb)
        lines.append(f"  %nrem = arith.constant {full * nb} : index")
        lines += block(spec, "R", "%nrem", rem, xt_t, pt, at, ot, it)
    lines += [f"  memref.dealloc %pan : {pt}", f"  memref.dealloc %acc : {at}", "  return", "}"]
    head = (f"// CSR ({emit_rowvec.CSR_MAP}) Y = X W^T in the natural layout, hand-scheduled: X tiles "
            "transposed into an L1 panel, register-blocked walk, Y tiles transposed back.\n")
    return head + "module {\n" + "\n".join(lines) + "\n}\n"
