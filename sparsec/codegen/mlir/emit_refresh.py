"""The O(nnz) value refresh of a CSR slab after an optimizer step, as one MLIR kernel (vector dialect).

After ``optimizer.step()`` the packed values must follow the parameter, and the pattern must be checked
unchanged (no nonzero outside the stored positions). Both need W: the gather touches most of W's cache
lines anyway at 90% sparsity (16 floats a line), so the kernel reads each row of the dense ``W`` slab
once, counts its nonzeros (a float compare: ``-0.0`` is zero) with a 16-lane vector accumulator, and
gathers the row's stored columns into the packed values while the row is in L1 (16 at a time by a vector
gather, the row's last < 16 one by one), counting the nonzero gathered values. ``out[0]`` gets the number of nonzeros *outside* the stored positions: 0 means the
pattern held and the packed values are W's. Two separate passes (a gather, then a count) read W twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

_PIPELINE = "builtin.module(convert-scf-to-cf, convert-vector-to-llvm, convert-to-llvm, reconcile-unrealized-casts)"
_LANES = 16


@dataclass(frozen=True)
class RefreshSpec:
    """The refresh kernel of one CSR slab: ``rows`` x ``cols`` of a float32 W, coordinates of ``index_bits``."""

    rows: int
    cols: int
    index_bits: int = 32
    kind: str = "refresh"

    def __post_init__(self) -> None:
        if self.index_bits not in (16, 32):
            raise ValueError(f"index_bits must be 16 or 32, got {self.index_bits}")
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"bad slab shape {self.rows}x{self.cols}")

    @property
    def name(self) -> str:
        """A readable, unique symbol name for the kernel."""
        digest = hashlib.sha1(repr(asdict(self)).encode()).hexdigest()[:10]
        return f"sparsec_refresh_{self.rows}x{self.cols}_{digest}"

    def emit_mlir(self) -> tuple[str, str]:
        """(MLIR source, lowering pipeline) for this kernel (jit.compile_kernel calls this)."""
        return emit_refresh_kernel(self), _PIPELINE


def emit_refresh_kernel(spec: RefreshSpec) -> str:
    """MLIR text: ``val[p] = w[i, crd[p]]`` for every stored ``p`` of row ``i``; ``out[0]`` = nonzeros outside.

    Arguments: ``pos`` (i32, rows + 1), ``crd`` (i16/i32), ``w`` [rows, cols] f32 (row-major), ``val`` f32,
    ``out`` [1] i64."""
    r, c = spec.rows, spec.cols
    it = f"i{spec.index_bits}"
    wt = f"memref<{r}x{c}xf32>"
    full = c - c % _LANES
    vf, vi = f"vector<{_LANES}xf32>", f"vector<{_LANES}xi32>"
    # coordinates are unsigned (16-bit columns reach 65535)
    widen = (f"%k = arith.extui %kn : vector<{_LANES}xi16> to {vi}" if it == "i16"
             else f"%k = arith.addi %kn, %iz : {vi}")
    lines = [
        "// CSR refresh: gather W's stored values into the packed values; count nonzeros outside them.",
        "module {",
        f"func.func @{spec.name}(%pos: memref<?xi32>, %crd: memref<?x{it}>, %w: {wt}, %val: memref<?xf32>, "
        "%out: memref<1xi64>) attributes { llvm.emit_c_interface } {",
        "  %c0 = arith.constant 0 : index",
        "  %c1 = arith.constant 1 : index",
        f"  %cl = arith.constant {_LANES} : index",
        f"  %rows = arith.constant {r} : index",
        f"  %full = arith.constant {full} : index",
        f"  %cols = arith.constant {c} : index",
        "  %fz = arith.constant 0.0 : f32",
        f"  %vz = arith.constant dense<0.0> : {vf}",
        f"  %iz = arith.constant dense<0> : {vi}",
        "  %i0 = arith.constant 0 : i64",
        f"  %all = arith.constant dense<true> : vector<{_LANES}xi1>",
        f"  %wf = memref.reinterpret_cast %w to offset: [0], sizes: [{r * c}], strides: [1] : {wt} to memref<?xf32>",
        # per row: the dense count into a vector accumulator, the stored count subtracted from a scalar
        f"  %acc, %sc = scf.for %i = %c0 to %rows step %c1 iter_args(%a = %iz, %s = %i0) -> ({vi}, i64) {{",
        f"    %a1 = scf.for %j = %c0 to %full step %cl iter_args(%b = %a) -> ({vi}) {{",
        f"      %x = vector.load %w[%i, %j] : {wt}, {vf}",
        f"      %m = arith.cmpf une, %x, %vz : {vf}",
        f"      %e = arith.extui %m : vector<{_LANES}xi1> to {vi}",
        f"      %b1 = arith.addi %b, %e : {vi}",
        f"      scf.yield %b1 : {vi}",
        "    }",
        "    %s1 = scf.for %j = %full to %cols step %c1 iter_args(%t = %s) -> (i64) {",
        f"      %x = memref.load %w[%i, %j] : {wt}",
        "      %m = arith.cmpf une, %x, %fz : f32",
        "      %e = arith.extui %m : i1 to i64",
        "      %t1 = arith.addi %t, %e : i64",
        "      scf.yield %t1 : i64",
        "    }",
        "    %p0i = memref.load %pos[%i] : memref<?xi32>",
        "    %i1 = arith.addi %i, %c1 : index",
        "    %p1i = memref.load %pos[%i1] : memref<?xi32>",
        "    %p0 = arith.index_cast %p0i : i32 to index",
        "    %p1 = arith.index_cast %p1i : i32 to index",
        # the row's stored values 16 at a time by a vector gather from the row (vpgatherdps), the rest
        # one by one: the scalar loop over every stored value ran the kernel at ~4x W's read time
        "    %len = arith.subi %p1, %p0 : index",
        "    %nv = arith.divui %len, %cl : index",
        "    %vlen = arith.muli %nv, %cl : index",
        "    %pv = arith.addi %p0, %vlen : index",
        "    %roff = arith.muli %i, %cols : index",
        f"    %g1 = scf.for %p = %p0 to %pv step %cl iter_args(%b = %a1) -> ({vi}) {{",
        f"      %kn = vector.load %crd[%p] : memref<?x{it}>, vector<{_LANES}x{it}>",
        f"      {widen}",
        f"      %x = vector.gather %wf[%roff][%k], %all, %vz : memref<?xf32>, {vi}, "
        f"vector<{_LANES}xi1>, {vf} into {vf}",
        f"      vector.store %x, %val[%p] : memref<?xf32>, {vf}",
        f"      %m = arith.cmpf une, %x, %vz : {vf}",
        f"      %e = arith.extui %m : vector<{_LANES}xi1> to {vi}",
        f"      %b1 = arith.subi %b, %e : {vi}",
        f"      scf.yield %b1 : {vi}",
        "    }",
        "    %s2 = scf.for %p = %pv to %p1 step %c1 iter_args(%t = %s1) -> (i64) {",
        f"      %ki = memref.load %crd[%p] : memref<?x{it}>",
        f"      %k = arith.index_castui %ki : {it} to index",
        f"      %x = memref.load %w[%i, %k] : {wt}",
        "      memref.store %x, %val[%p] : memref<?xf32>",
        "      %m = arith.cmpf une, %x, %fz : f32",
        "      %e = arith.extui %m : i1 to i64",
        "      %t1 = arith.subi %t, %e : i64",
        "      scf.yield %t1 : i64",
        "    }",
        f"    scf.yield %g1, %s2 : {vi}, i64",
        "  }",
        f"  %red = vector.reduction <add>, %acc : {vi} into i32",
        "  %red64 = arith.extsi %red : i32 to i64",  # signed: the vector part subtracts gathered tail columns too
        "  %tot = arith.addi %red64, %sc : i64",
        "  memref.store %tot, %out[%c0] : memref<1xi64>",
        "  return",
        "}",
        "}",
    ]
    return "\n".join(lines) + "\n"
