"""Vectorizable activations written in arith ops (exp by range reduction, erf by Abramowitz-Stegun).

MLIR's math.erf/exp/tanh lower to scalar libm calls on this toolchain (its polynomial-approximation
pass is not in torch-mlir's pass registry), which made the epilogue cost as much as the matmul. These
expansions stay vector code. Accuracy: exp ~2e-7 relative, erf 1.5e-7 absolute (A-S 7.1.26), enough
for fp32 outputs within 1e-6 of torch.
"""

from __future__ import annotations


class Builder:
    """Emits SSA lines with fresh value names for one element type (``f32`` or ``vector<VLxf32>``)."""

    def __init__(self, ftype: str, indent: str = "      ", prefix: str = "t") -> None:
        self.ftype = ftype
        self.prefix = prefix
        self.itype = ftype.replace("f32", "i32")
        self.indent = indent
        self.lines: list[str] = []
        self._n = 0
        self._consts: dict[tuple[str, str], str] = {}

    def _fresh(self) -> str:
        self._n += 1
        return f"%{self.prefix}{self._n}"

    def const(self, value: float | int, integer: bool = False) -> str:
        """A constant (a splat for vector types), emitted once per value."""
        ty = self.itype if integer else self.ftype
        key = (ty, repr(value))
        if key not in self._consts:
            name = self._fresh()
            lit = str(int(value)) if integer else repr(float(value))
            if ty.startswith("vector"):
                self.lines.append(f"{self.indent}{name} = arith.constant dense<{lit}> : {ty}")
            else:
                self.lines.append(f"{self.indent}{name} = arith.constant {lit} : {ty}")
            self._consts[key] = name
        return self._consts[key]

    def op(self, opname: str, *args: str, ty: str | None = None) -> str:
        """``%new = opname args : ty``."""
        name = self._fresh()
        self.lines.append(f"{self.indent}{name} = {opname} {', '.join(args)} : {ty or self.ftype}")
        return name

    def cast(self, opname: str, arg: str, src: str, dst: str) -> str:
        """A conversion op ``%new = opname arg : src to dst``."""
        name = self._fresh()
        self.lines.append(f"{self.indent}{name} = {opname} {arg} : {src} to {dst}")
        return name

    def text(self) -> str:
        """The emitted lines."""
        return "\n".join(self.lines) + ("\n" if self.lines else "")


def exp(b: Builder, x: str) -> str:
    """e**x: x = k ln2 + r, |r| <= ln2/2; e**r by a degree-6 polynomial; 2**k built in the exponent bits."""
    xc = b.op("arith.minimumf", x, b.const(88.0))
    xc = b.op("arith.maximumf", xc, b.const(-87.0))
    kf = b.op("arith.mulf", xc, b.const(1.4426950408889634))
    kf = b.op("arith.addf", kf, b.const(0.5))
    kf = b.op("math.floor", kf)
    r = b.op("arith.subf", xc, b.op("arith.mulf", kf, b.const(0.693145751953125)))
    r = b.op("arith.subf", r, b.op("arith.mulf", kf, b.const(1.428606765330187e-06)))
    p = b.const(1.0 / 720)
    for c in (1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0):
        p = b.op("arith.addf", b.op("arith.mulf", p, r), b.const(c))
    ki = b.cast("arith.fptosi", kf, b.ftype, b.itype)
    ki = b.op("arith.addi", ki, b.const(127, True), ty=b.itype)
    ki = b.op("arith.shli", ki, b.const(23, True), ty=b.itype)
    scale = b.cast("arith.bitcast", ki, b.itype, b.ftype)
    return b.op("arith.mulf", p, scale)


def erf(b: Builder, x: str) -> str:
    """erf(x) = sign(x) (1 - poly(t) e**(-x^2)), t = 1 / (1 + p|x|)."""
    ax = b.op("math.absf", x)
    t = b.op("arith.divf", b.const(1.0), b.op("arith.addf", b.const(1.0), b.op("arith.mulf", ax, b.const(0.3275911))))
    poly = b.const(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly = b.op("arith.addf", b.op("arith.mulf", poly, t), b.const(c))
    poly = b.op("arith.mulf", poly, t)
    e = exp(b, b.op("arith.negf", b.op("arith.mulf", ax, ax)))
    y = b.op("arith.subf", b.const(1.0), b.op("arith.mulf", poly, e))
    return b.op("math.copysign", y, x)


def activation(b: Builder, name: str | None, x: str) -> str:
    """Apply relu/gelu/silu/tanh (exact-erf gelu, as torch's default) to ``x``."""
    if name is None:
        return x
    if name == "relu":
        return b.op("arith.maximumf", x, b.const(0.0))
    if name == "gelu":
        e = erf(b, b.op("arith.mulf", x, b.const(0.7071067811865476)))
        return b.op("arith.mulf", b.op("arith.mulf", x, b.const(0.5)), b.op("arith.addf", e, b.const(1.0)))
    if name == "silu":
        d = b.op("arith.addf", b.const(1.0), exp(b, b.op("arith.negf", x)))
        return b.op("arith.divf", x, d)
    if name == "tanh":
        # tanh(x) = sign(x) (1 - 2 / (e**(2|x|) + 1)): no cancellation for large |x|, exact limits.
        ax = b.op("math.absf", x)
        e = exp(b, b.op("arith.mulf", ax, b.const(2.0)))
        y = b.op("arith.subf", b.const(1.0), b.op("arith.divf", b.const(2.0), b.op("arith.addf", e, b.const(1.0))))
        return b.op("math.copysign", y, x)
    raise ValueError(f"unknown activation {name!r}")
