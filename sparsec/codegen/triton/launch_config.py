"""Launch parameters per shape, from a small analytic cost model (no ``triton.autotune``).

Why a cost model rather than autotuning:

* autotuning times every candidate on the GPU at the first call of each shape (hundreds of ms per
  shape in a compiler that sees many shapes) and cannot run at all in the interpreter or in CI
  without a GPU;
* the compiler must be able to enumerate the exact variants it will launch, to compile them ahead
  of time for a ``GPUTarget`` (``compile_target.py``) and to report them (``ir("triton")``);
* choices stay deterministic, so a test failure reproduces.

The model: tiles are as large as the dense dimension N needs (the weight tile is re-read once per
N-tile, so fewer N-tiles means less weight traffic) but small enough that the grid still has about
two programs per SM; warps grow with the accumulator size; pipeline stages fill ~96 KiB of shared
memory, which keeps two CTAs per SM on A100/H100. Exact-fp32 dots (no TF32) run on the FMA units,
where a 128-row tile only inflates code size and registers, so they stop at 64 rows and 32-wide
reduction steps. ``benchmarks/bench_gpu.py --sweep`` times the
neighbouring configurations on a real GPU to check the model's picks.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparsec import knobs

# Streaming multiprocessors of the reference card (knob gpu_num_sms; H100 SXM: 132, A100: 108; only the
# order of magnitude matters to the model) and the shared memory the stages may fill (knob gpu_smem_budget).


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and compiler options of one launch.

    ``block_n``: rows of X (the dense dimension N) per program. ``block_o``: output features per
    program (BSR: fixed to the block height; CSR: weight rows per program). ``block_k``: reduction
    step (BSR: the block width; CSR: nonzeros per iteration; N:M: dense input columns per iteration).
    """

    block_n: int
    block_o: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block_n", "block_o", "block_k"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"LaunchConfig.{name} must be a power of two, got {v}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"LaunchConfig.num_warps must be 1, 2, 4, 8 or 16, got {self.num_warps}")
        if self.num_stages < 1:
            raise ValueError(f"LaunchConfig.num_stages must be >= 1, got {self.num_stages}")


def next_pow2(v: int) -> int:
    """Smallest power of two >= v (1 for v <= 1)."""
    return 1 if v <= 1 else 1 << (v - 1).bit_length()


def _block_n(n_rows: int, o_tiles: int, cap: int = 128) -> int:
    # tl.dot needs >= 16 rows; shrink from the cap while the grid would leave SMs idle.
    bn = min(max(next_pow2(n_rows), 16), cap)
    while bn > 16 and o_tiles * -(-n_rows // bn) < 2 * knobs.get("gpu_num_sms"):
        bn //= 2
    return bn


def _stages(bytes_per_stage: int) -> int:
    return max(2, min(4, knobs.get("gpu_smem_budget") // max(bytes_per_stage, 1)))


def _warps(acc_elems: int, elem_bytes: int) -> int:
    # 4 warps hold a 128x64 fp32 accumulator in 64 registers per thread next to 16-bit operand
    # fragments; 32-bit operands (fp32 / tf32) double the fragments, so they spill (ptxas stack
    # frames, checked by the compile test) unless 8 warps share tiles of 64x64 and up.
    if acc_elems > 128 * 64 or (elem_bytes >= 4 and acc_elems >= 64 * 64):
        return 8
    return 4


def bsr_config(n_rows: int, out_blocks: int, bh: int, bw: int, elem_bytes: int,
               tensor_cores: bool = True) -> LaunchConfig:
    """Config for the BSR kernel: ``out_blocks`` block rows of a (bh, bw) blocked weight."""
    bh_p, bw_p = max(16, next_pow2(bh)), next_pow2(bw)
    bn = _block_n(n_rows, out_blocks, 128 if tensor_cores else 64)
    stage = (bh_p * bw_p + bn * bw_p) * elem_bytes
    return LaunchConfig(block_n=bn, block_o=bh_p, block_k=bw_p, num_warps=_warps(bn * bh_p, elem_bytes),
                        num_stages=_stages(stage))


def csr_config(n_rows: int, out_features: int, elem_bytes: int, tensor_cores: bool = True) -> LaunchConfig:
    """Config for the CSR kernel: 16 weight rows per program, 32 (16 without tensor cores) nonzeros per step."""
    block_o, block_k = 16, 32 if tensor_cores else 16
    bn = _block_n(n_rows, -(-out_features // block_o), 128 if tensor_cores else 64)
    stage = (bn * block_k + block_k * block_o) * elem_bytes
    return LaunchConfig(block_n=bn, block_o=block_o, block_k=block_k, num_warps=_warps(bn * block_o, elem_bytes),
                        num_stages=_stages(stage))


def nm_config(n_rows: int, out_features: int, m: int, elem_bytes: int, tensor_cores: bool = True) -> LaunchConfig:
    """Config for the N:M kernel: 64 (32 on narrow grids) outputs x 64 (16 without tensor cores) inputs per step."""
    block_k = max(64 if tensor_cores else 16, next_pow2(m))
    block_o = 64 if -(-out_features // 64) * -(-n_rows // 64) >= 2 * knobs.get("gpu_num_sms") else 32
    bn = _block_n(n_rows, -(-out_features // block_o), 128 if tensor_cores else 64)
    stage = (bn * block_k + block_k * block_o) * elem_bytes
    return LaunchConfig(block_n=bn, block_o=block_o, block_k=block_k, num_warps=_warps(bn * block_o, elem_bytes),
                        num_stages=_stages(stage))
