"""The int8 CSR kernel (Y^T = W X^T): int8 weights and activations, exact int32 sums, a fused f32 epilogue.

``out[i, n] = act(acc[i, n] * sx[n] * sw[i] + bias[i]) + res[i, n]`` where ``acc = Wq Xq^T`` is summed
exactly in int32 (Wq int8 per-output-channel quantized, scale ``sw``; Xq^T the per-token quantized
activation [cols, n], scale ``sx``). Buffers: pos, crd, val (i8), sw, x (i8), sx, [bias], [residual], out,
all f32 but the integer ones. Every call walks all rows once per pass of at most four N-segments of
16/8/4/1 lanes (the segments of the f32 kernel, emit_rowvec), keeping the sums in registers.

The multiply runs in 16-bit lanes: each product fits (|q| <= 127, so |w x| <= 16129), and so does the sum of
two products, so a pass multiplies two nonzeros in i16 (``vpmullw``), adds them, and widens that sum once
into the i32 accumulator. It is the kernel of hosts without AVX512-VNNI (and of N = 1): AVX2 has no
instruction that multiplies int8 and accumulates into int32 in one step, and ``vpmaddubsw`` / ``vpmaddwd``
pair adjacent *input columns*, which an unstructured row's scattered columns do not have (docs/kernels.md).
Hosts with AVX512-VNNI run emit_int8_vnni.py (``vpdpbusd``) from knob ``int8_vnni_min_n`` rows.
"""

from __future__ import annotations

from sparsec.codegen.mlir.emit_rowvec import CSR_MAP, segments
from sparsec.codegen.mlir.mathfn import Builder, activation
from sparsec.codegen.spec import KernelSpec


def supports(spec: KernelSpec) -> bool:
    """This emitter handles int8 CSR in the scatter form."""
    return spec.dtype == "i8" and spec.level_map.replace(" ", "") == CSR_MAP.replace(" ", "")


def kernel_args(spec: KernelSpec) -> list[str]:
    """The argument list, in the order Int8SparseLinear passes it."""
    r, c, n = spec.rows, spec.cols, spec.n
    args = ["%pos: memref<?xi32>", f"%crd: memref<?xi{spec.index_bits}>", "%val: memref<?xi8>",
            f"%sw: memref<{r}xf32>", f"%x: memref<{c}x{n}xi8>", f"%sx: memref<{n}xf32>"]
    if spec.bias:
        args.append(f"%bias: memref<{r}xf32>")
    if spec.residual:
        args.append(f"%res: memref<{r}x{n}xf32>")
    args.append(f"%out: memref<{r}x{n}xf32>")
    return args


def _ty(width: int, elem: str) -> str:
    return elem if width == 1 else f"vector<{width}x{elem}>"


def emit_int8_kernel(spec: KernelSpec) -> str:
    """MLIR text of the int8 CSR kernel for ``spec``."""
    if not supports(spec):
        raise ValueError(f"the int8 kernel handles int8 CSR, not {spec.format} in {spec.dtype}")
    if spec.form != "scatter" or spec.k_tile:
        raise ValueError("the int8 kernel runs the untiled scatter form (Y^T = W X^T)")
    lines = [
        f"func.func @{spec.name}({', '.join(kernel_args(spec))}) attributes {{ llvm.emit_c_interface }} {{",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        "  %c2 = arith.constant 2 : index",
        f"  %rows = arith.constant {spec.rows} : index",
    ]
    for k, segs in enumerate(segments(spec.n)):
        lines += _walk(spec, k, segs)
    lines += ["  return", "}"]
    return f"// int8 CSR ({CSR_MAP}) Y^T = W X^T, int32 sums, f32 epilogue\nmodule {{\n" + "\n".join(lines) + "\n}\n"


def _walk(spec: KernelSpec, k: int, segs: list[tuple[int, int]]) -> list[str]:
    """One loop over all rows accumulating the N-segments ``segs``, then the epilogue of each."""
    c, n = spec.cols, spec.n
    it = f"i{spec.index_bits}"
    xt = f"memref<{c}x{n}xi8>"
    acc_t = [_ty(w, "i32") for _, w in segs]
    lines = [
        "  scf.for %i = %c0 to %rows step %c1 {",
        "    %i1 = arith.addi %i, %c1 : index",
        "    %p0i = memref.load %pos[%i] : memref<?xi32>",
        "    %p1i = memref.load %pos[%i1] : memref<?xi32>",
        "    %p0 = arith.index_cast %p0i : i32 to index",
        "    %p1 = arith.index_cast %p1i : i32 to index",
        "    %len = arith.subi %p1, %p0 : index",
        "    %npair = arith.divui %len, %c2 : index",
        "    %plen = arith.muli %npair, %c2 : index",
        "    %pm = arith.addi %p0, %plen : index",
    ]
    for q, (off, w) in enumerate(segs):
        lines.append(f"    %o{k}_{q} = arith.constant {off} : index")
        lines.append(f"    %z{k}_{q} = arith.constant {'0 : i32' if w == 1 else f'dense<0> : {acc_t[q]}'}")

    def loop(tag: str, lo: str, hi: str, step: str, init: list[str], nz: int) -> list[str]:
        """A loop over nonzeros ``nz`` at a time (2: pairs summed in i16 before widening; 1: the tail)."""
        iters = ", ".join(f"%a{tag}{q} = {init[q]}" for q in range(len(segs)))
        body = [f"    %acc{tag}:{len(segs)} = scf.for %p = {lo} to {hi} step {step} iter_args({iters}) -> "
                f"({', '.join(acc_t)}) {{"]
        for j in range(nz):
            pj = "%p" if j == 0 else f"%pp{j}"
            if j:
                body.append(f"      {pj} = arith.addi %p, %c1 : index")
            body += [f"      %ki{j} = memref.load %crd[{pj}] : memref<?x{it}>",
                     f"      %kk{j} = arith.index_castui %ki{j} : {it} to index",
                     f"      %v8{j} = memref.load %val[{pj}] : memref<?xi8>",
                     f"      %v{j} = arith.extsi %v8{j} : i8 to i16"]
        news = []
        for q, (_, w) in enumerate(segs):
            h16 = _ty(w, "i16")
            prods = []
            for j in range(nz):
                load = (f"memref.load %x[%kk{j}, %o{k}_{q}] : {xt}" if w == 1
                        else f"vector.load %x[%kk{j}, %o{k}_{q}] : {xt}, {_ty(w, 'i8')}")
                vb = f"%v{j}" if w == 1 else f"%vb{j}_{q}"
                body += [f"      %x8{j}_{q} = {load}",
                         f"      %x16{j}_{q} = arith.extsi %x8{j}_{q} : {_ty(w, 'i8')} to {h16}"]
                if w > 1:
                    body.append(f"      {vb} = vector.broadcast %v{j} : i16 to {h16}")
                body.append(f"      %m{j}_{q} = arith.muli {vb}, %x16{j}_{q} : {h16}")
                prods.append(f"%m{j}_{q}")
            s = prods[0]
            if nz == 2:
                body.append(f"      %s_{q} = arith.addi {prods[0]}, {prods[1]} : {h16}")
                s = f"%s_{q}"
            body += [f"      %w_{q} = arith.extsi {s} : {h16} to {acc_t[q]}",
                     f"      %n_{q} = arith.addi %a{tag}{q}, %w_{q} : {acc_t[q]}"]
            news.append(f"%n_{q}")
        body += [f"      scf.yield {', '.join(news)} : {', '.join(acc_t)}", "    }"]
        return body

    lines += loop(f"P{k}_", "%p0", "%pm", "%c2", [f"%z{k}_{q}" for q in range(len(segs))], 2)
    lines += loop(f"T{k}_", "%pm", "%p1", "%c1", [f"%accP{k}_#{q}" for q in range(len(segs))], 1)
    lines.append("    %sws = memref.load %sw[%i] : memref<" + f"{spec.rows}xf32>")
    if spec.bias:
        lines.append(f"    %bs = memref.load %bias[%i] : memref<{spec.rows}xf32>")
    for q, (_, w) in enumerate(segs):
        lines += _epilogue(spec, k, q, w)
    lines.append("  }")
    return lines


def _epilogue(spec: KernelSpec, k: int, q: int, width: int) -> list[str]:
    """Dequantize (sum * sx[n] * sw[i]), bias, activation, residual on one segment's sums; one store."""
    r, n = spec.rows, spec.n
    ft = _ty(width, "f32")
    ot = f"memref<{r}x{n}xf32>"
    at = f"%i, %o{k}_{q}"
    b = Builder(ft, indent="    ", prefix=f"e{k}_{q}_")
    acc = b.cast("arith.sitofp", f"%accT{k}_#{q}", _ty(width, "i32"), ft)
    if width == 1:
        sx = b.op("memref.load", f"%sx[%o{k}_{q}]", ty=f"memref<{n}xf32>")
        sw = "%sws"
    else:
        sx = b.op("vector.load", f"%sx[%o{k}_{q}]", ty=f"memref<{n}xf32>, {ft}")
        sw = b.cast("vector.broadcast", "%sws", "f32", ft)
    v = b.op("arith.mulf", acc, b.op("arith.mulf", sx, sw))
    if spec.bias:
        v = b.op("arith.addf", v, "%bs" if width == 1 else b.cast("vector.broadcast", "%bs", "f32", ft))
    v = activation(b, spec.activation, v)
    if spec.residual:
        rv = b.op("memref.load" if width == 1 else "vector.load", f"%res[{at}]",
                  ty=ot if width == 1 else f"{ot}, {ft}")
        v = b.op("arith.addf", v, rv)
    store = f"memref.store {v}, %out[{at}] : {ot}" if width == 1 else f"vector.store {v}, %out[{at}] : {ot}, {ft}"
    return [*b.lines, f"    {store}"]
