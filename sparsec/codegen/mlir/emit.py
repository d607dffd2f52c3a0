"""Emit the MLIR of one fused sparse linear kernel (linalg on tensors, sparse_tensor encoding on W).

The function writes into a caller-owned ``memref`` (no allocation, no copy per call): the output
is viewed as a writable tensor, zero-filled, accumulated into by the sparse ``linalg.generic``, and
materialized back in place. The epilogue (bias, activation, residual) follows in the same function as
explicit vector loops, because the sparsifier vectorizes only sparse loops and a scalar epilogue cost
as much as the matmul itself.

Layouts (the runtime prepares them): scatter form: x is X^T [cols, n], out is Y^T [rows, n],
residual is R^T [rows, n]; dot form (n == 1): x is [cols], out and residual are [rows].
"""

from __future__ import annotations

from sparsec.codegen.mlir.mathfn import Builder, activation
from sparsec.codegen.spec import KernelSpec


def _step(spec: KernelSpec, ftype: str, load_out: str, load_res: str, store: str, bias: str | None) -> str:
    """One epilogue step on a value of type ``ftype``: ``out = act(out + bias) + res``."""
    b = Builder(ftype)
    v = b.op(load_out.split(" ", 1)[0], load_out.split(" ", 1)[1].rsplit(" : ", 1)[0], ty=load_out.rsplit(" : ", 1)[1])
    if bias is not None:
        v = b.op("arith.addf", v, bias)
    v = activation(b, spec.activation, v)
    if spec.residual:
        r = b.op(load_res.split(" ", 1)[0], load_res.split(" ", 1)[1].rsplit(" : ", 1)[0], ty=load_res.rsplit(" : ", 1)[1])
        v = b.op("arith.addf", v, r)
    return b.text() + f"      {store.format(v=v)}\n"


def _epilogue(spec: KernelSpec) -> str:
    """Explicit loops applying bias, activation and residual to the output memref in place.

    The main loop runs on vectors of ``vl`` lanes along the contiguous dimension (N for the scatter
    form, rows for the dot form); a scalar loop finishes the remainder.
    """
    if not (spec.bias or spec.activation or spec.residual):
        return ""
    r, n = spec.rows, spec.n
    if spec.form == "dot":
        vl = 16
        length, main = r, (r // vl) * vl
        ty = f"memref<{r}xf32>"
        at = "%i"
    else:
        vl = max(spec.vl, 1)
        length, main = n, ((n // vl) * vl if spec.vl else 0)
        ty = f"memref<{r}x{n}xf32>"
        at = "%i, %j"
    vt = f"vector<{vl}xf32>"
    loops = []
    for ftype, lo, hi, step in ((vt, "%c0", "%e_main", "%e_vl"), ("f32", "%e_main", "%e_end", "%c1")):
        vec = ftype != "f32"
        load = (lambda m: f"vector.load {m}[{at}] : {ty}, {vt}") if vec else (lambda m: f"memref.load {m}[{at}] : {ty}")
        store = f"vector.store {{v}}, %outm[{at}] : {ty}, {vt}" if vec else f"memref.store {{v}}, %outm[{at}] : {ty}"
        bias_line, bias = "", None
        if spec.bias and spec.form == "dot":
            bias_line = (f"      %bv = vector.load %biasm[%i] : memref<{r}xf32>, {vt}\n" if vec
                         else f"      %bv = memref.load %biasm[%i] : memref<{r}xf32>\n")
            bias = "%bv"
        elif spec.bias:
            bias = "%bvec" if vec else "%bs"
        body = bias_line + _step(spec, ftype, load("%outm"), load("%resm"), store, bias)
        iv = "%i" if spec.form == "dot" else "%j"
        loops.append(f"    scf.for {iv} = {lo} to {hi} step {step} {{\n{body}    }}\n")
    head = (f"  %e_main = arith.constant {main} : index\n  %e_end = arith.constant {length} : index\n"
            f"  %e_vl = arith.constant {vl} : index\n")
    if spec.form == "dot":
        return head + "".join(loops).replace("\n    ", "\n  ").replace("    scf.for", "  scf.for", 1)
    row_bias = ""
    if spec.bias:
        row_bias = (f"    %bs = memref.load %biasm[%i] : memref<{r}xf32>\n"
                    f"    %bvec = vector.broadcast %bs : f32 to {vt}\n")
    return (head + f"  %e_rows = arith.constant {r} : index\n  scf.for %i = %c0 to %e_rows step %c1 {{\n"
            + row_bias + "".join(loops) + "  }\n")


def emit_kernel(spec: KernelSpec) -> str:
    """The MLIR module text of the kernel ``spec`` (public function ``spec.name``, C interface)."""
    r, c, n = spec.rows, spec.cols, spec.n
    enc = f"#sparse_tensor.encoding<{{ map = {spec.level_map}, posWidth = 32, crdWidth = 32 }}>"
    if spec.form == "dot":
        x_ty, out_ty = f"tensor<{c}xf32>", f"tensor<{r}xf32>"
        out_mref, res_mref = f"memref<{r}xf32>", f"memref<{r}xf32>"
        maps = "[affine_map<(i, k) -> (i, k)>, affine_map<(i, k) -> (k)>, affine_map<(i, k) -> (i)>]"
        iters = '["parallel", "reduction"]'
    else:
        x_ty, out_ty = f"tensor<{c}x{n}xf32>", f"tensor<{r}x{n}xf32>"
        out_mref = res_mref = f"memref<{r}x{n}xf32>"
        maps = (
            "[affine_map<(i, j, k) -> (i, k)>, affine_map<(i, j, k) -> (k, j)>, affine_map<(i, j, k) -> (i, j)>]"
        )
        iters = '["parallel", "parallel", "reduction"]'
    w_ty = f"tensor<{r}x{c}xf32, #W>"
    args = [f"%w: {w_ty}", f"%x: {x_ty}"]
    if spec.bias:
        args.append(f"%biasm: memref<{r}xf32>")
    if spec.residual:
        args.append(f"%resm: {res_mref}")
    args.append(f"%outm: {out_mref}")
    return f"""#W = {enc}
module {{
func.func @{spec.name}({", ".join(args)}) attributes {{ llvm.emit_c_interface }} {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %zero = arith.constant 0.0 : f32
  %out = bufferization.to_tensor %outm restrict writable : {out_mref} to {out_ty}
  %z = linalg.fill ins(%zero : f32) outs(%out : {out_ty}) -> {out_ty}
  %acc = linalg.generic {{ indexing_maps = {maps}, iterator_types = {iters} }}
      ins(%w, %x : {w_ty}, {x_ty}) outs(%z : {out_ty}) {{
    ^bb0(%a: f32, %b: f32, %s: f32):
      %p = arith.mulf %a, %b : f32
      %q = arith.addf %s, %p : f32
      linalg.yield %q : f32
  }} -> {out_ty}
  bufferization.materialize_in_destination %acc in restrict writable %outm : ({out_ty}, {out_mref}) -> ()
{_epilogue(spec)}  return
}}
}}
"""
