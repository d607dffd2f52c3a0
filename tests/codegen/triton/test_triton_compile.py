"""Every kernel variant compiles for sm_80 and sm_90 on this GPU-less machine, down to a cubin.

The tl.dot kernels must use the tensor cores: ``mma.sync`` on sm_80; on sm_90 ``wgmma`` for the
batched regime (N-tile >= 64 rows, 4+ warps) and ``mma.sync`` for the 16-row decode tiles, which
are below wgmma's 64-row minimum.
"""

from __future__ import annotations

import pytest
import torch

from sparsec.codegen.triton import compile_for_target
from sparsec.codegen.triton.compile_target import STAGES, compile_variant, kernel_variants, resource_usage

VARIANTS = kernel_variants()
MMA_TYPES = {torch.float16: ".f16.f16", torch.bfloat16: ".bf16.bf16", torch.float32: ".tf32.tf32"}


def _mma_lines(ptx: str) -> list[str]:
    return [line.strip() for line in ptx.splitlines() if "mma.sync.aligned" in line or "wgmma.mma_async" in line]


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_variant_compiles_for_gpu_target(variant, arch):
    stages = compile_variant(variant, arch)
    assert list(stages) == list(STAGES)
    assert "tt.func" in stages["ttir"]
    assert "ttg.num-warps" in stages["ttgir"]
    assert "define" in stages["llir"]
    target = "sm_80" if arch == 80 else "sm_90a"
    assert f".target {target}" in stages["ptx"]
    assert isinstance(stages["cubin"], bytes) and stages["cubin"][:4] == b"\x7fELF"
    mma = _mma_lines(stages["ptx"])
    if not variant.uses_mma:
        assert not mma, f"{variant.name}: unexpected MMA {mma[:1]}"
    else:
        assert mma, f"{variant.name}: no tensor-core instruction in the PTX for sm_{arch}"
        assert all(MMA_TYPES[variant.dtype] in line for line in mma), mma[0]
        if arch == 80:
            assert all(line.startswith("mma.sync") for line in mma)
        elif variant.n_rows >= 64:
            assert all(line.startswith("wgmma.mma_async") for line in mma), f"{variant.name}: {mma[0]}"
        else:
            assert all(line.startswith("mma.sync") for line in mma), f"{variant.name}: {mma[0]}"
    usage = resource_usage(stages["cubin"])
    if usage:
        assert usage["LOCAL"] == 0 and usage["STACK"] == 0, f"{variant.name} spills registers on sm_{arch}: {usage}"


def test_compile_for_target_api():
    stages = compile_for_target("nm", arch=90, dtype=torch.bfloat16, pattern=(1, 4), n_rows=16, activation="relu",
                                residual=False)
    assert set(stages) == set(STAGES)
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in stages["ptx"]
    with pytest.raises(ValueError, match="unknown kernel"):
        compile_for_target("coo")
    with pytest.raises(ValueError, match="arch must be"):
        compile_for_target("csr", arch=50)
