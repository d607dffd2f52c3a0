"""KernelSpec: everything that decides a kernel's code, and nothing else (no weight values).

Two layers whose specs are equal share one compiled kernel; the spec is the key of the kernel cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

ACTIVATIONS = (None, "relu", "gelu", "silu", "tanh")
#: kernel element types (MLIR spelling)
DTYPES = ("f32", "bf16", "f16", "i8")


@dataclass(frozen=True)
class KernelSpec:
    """A fused sparse linear: ``out = act(W @ x + bias) + residual`` for one static shape.

    ``form`` is the loop order: ``"scatter"`` computes Y^T = W X^T with the dense N dimension
    innermost (vectorized over N; the choice for N >= 2), ``"dot"`` gathers x at the stored columns
    of each row (the choice for N == 1), ``"natural"`` computes Y = X W^T on X [N, in] and Y [N, out]
    as they are (the hand BSR kernel, any N). Shapes are the padded weight shape the format packs.
    """

    format: str
    level_map: str
    rows: int
    cols: int
    n: int
    form: str = "scatter"
    bias: bool = False
    activation: str | None = None
    residual: bool = False
    vl: int = 16
    #: width of the stored column indices the kernel reads (16 halves index traffic when cols <= 32767;
    #: only the hand-written CSR kernels take 16)
    index_bits: int = 32
    #: input-dimension tile of the hand CSR kernel (0: untiled): each walk over the rows touches only
    #: ``k_tile`` rows of X^T, so they stay in L1; the runtime passes each tile's row positions
    k_tile: int = 0
    #: element type of the weight values, the activation, the residual and the output (MLIR spelling:
    #: ``f32``, ``bf16``, ``f16``); 16-bit kernels extend to f32, accumulate in f32 and round once at
    #: the store. The bias is always f32. ``i8``: int8 weight values and activation, int32 sums, f32
    #: scales, residual and output (sparsec/codegen/mlir/emit_int8.py)
    dtype: str = "f32"
    #: the natural CSR kernel's loop order: input tiles outermost (one X tile transposed into an L1 panel at
    #: a time, every row's partial sums kept in the accumulator panel) instead of row blocks outermost
    #: (the whole [in, 64] X panel built first); see ``emit_csrnat.choose_tiles_outer``
    tiles_outer: bool = False
    #: the bf16 BSR kernel multiplies pairs of adjacent block columns with vdpbf16ps (AVX512-BF16), its
    #: values stored pair-interleaved (``emit_bsrvec.pair_blocks``); False: each block transposed, widened
    #: FMAs. Part of the spec, so the two layouts' kernels never share a cache entry
    block_pairs: bool = False

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.form not in ("scatter", "dot", "natural"):
            raise ValueError(f"form {self.form!r} is not 'scatter', 'dot' or 'natural'")
        if self.index_bits not in (16, 32):
            raise ValueError(f"index_bits must be 16 or 32, got {self.index_bits}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        if self.k_tile < 0:
            raise ValueError(f"k_tile must be >= 0, got {self.k_tile}")
        if self.tiles_outer and (self.form != "natural" or self.k_tile <= 0):
            raise ValueError("tiles_outer is a loop order of the tiled natural CSR kernel (form 'natural', k_tile > 0)")
        if self.block_pairs and (self.form != "natural" or self.dtype != "bf16"):
            raise ValueError("block_pairs is a layout of the natural bf16 BSR kernel (form 'natural', dtype bf16)")
        if self.form == "dot" and self.n != 1:
            raise ValueError("the dot form computes one row (n == 1)")

    @property
    def name(self) -> str:
        """A readable, unique symbol name for the kernel."""
        digest = hashlib.sha1(repr(asdict(self)).encode()).hexdigest()[:10]
        fmt = "".join(c if c.isalnum() else "_" for c in self.format)
        return f"sparsec_{fmt}_{self.rows}x{self.cols}_n{self.n}_{digest}"


def vector_length(n: int) -> int:
    """Vector length for the scatter form: never longer than N (masked vectors ran 13x slower)."""
    if n >= 16:
        return 16
    if n >= 8:
        return 8
    if n >= 4:
        return 4
    return 0
