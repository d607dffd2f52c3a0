"""Threads two ways: MLIR's OpenMP lowering of the CSR kernel's row loop vs sparsec's row-slab thread pool.

Usage: python benchmarks/omp_vs_pool.py OUT IN N   (e.g. 3072 768 64); prints kernel times and torch dense.
The OpenMP variant loads Intel's OpenMP runtime (intel-openmp wheel) next to torch's libgomp.
"""

import ctypes
import glob
import os
import re
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from torch_mlir import execution_engine, ir, passmanager  # noqa: E402

from sparsec.codegen.mlir.emit_rowvec import emit_rowvec_kernel  # noqa: E402
from sparsec.codegen.mlir.jit import ArgRef, numpy_descriptor, torch_descriptor  # noqa: E402
from sparsec.codegen.spec import KernelSpec, vector_length  # noqa: E402
from sparsec.demo import median_seconds  # noqa: E402
from sparsec.formats.registry import get_format  # noqa: E402
from sparsec.targets.cpu.sparse_linear import SparseLinear  # noqa: E402
from tests.conftest import random_weight  # noqa: E402

R, C, N = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
IOMP = next(iter(glob.glob(os.path.join(sys.prefix, "lib", "libiomp5.so"))), None)
if IOMP is None:
    sys.exit("libiomp5.so not found: pip install intel-openmp")
fmt = get_format("csr")
w = random_weight(R, C, 0.1, 0)
x = torch.randn(N, C)
spec = KernelSpec("csr", fmt.level_map, R, C, N, vl=vector_length(N), index_bits=32)
src = emit_rowvec_kernel(spec)
# make the row loop parallel
src = src.replace("  scf.for %i = %c0 to %rows step %c1 {", "  scf.parallel (%i) = (%c0) to (%rows) step (%c1) {", 1)
src = re.sub(r"\n  \}\n  return", "\n    scf.reduce\n  }\n  return", src, count=1)
PIPE = ("builtin.module(convert-scf-to-openmp{num-threads=2}, canonicalize, func.func(convert-scf-to-cf), convert-vector-to-llvm, "
        "convert-openmp-to-llvm, convert-to-llvm, reconcile-unrealized-casts)")
packed = fmt.pack(w)
with ir.Context(), ir.Location.unknown():
    m = ir.Module.parse(src)
    passmanager.PassManager.parse(PIPE).run(m.operation)
    ee = execution_engine.ExecutionEngine(m, opt_level=3, shared_libs=[IOMP])
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(ee.lookup(spec.name))
    bufs = [packed.buffers[b] for b in ("pos1", "crd1", "values")]
    out = torch.full((R, N), float("nan"))
    xt = x.t().contiguous()
    refs = [ArgRef(numpy_descriptor(b)) for b in bufs] + [ArgRef(torch_descriptor(xt)), ArgRef(torch_descriptor(out))]
    arr = (ctypes.c_void_p * len(refs))(*[r.address for r in refs])
    def call():
        fn(arr)
    call()
    print("omp err", (out.t() - x @ w.t()).abs().max().item())
    t_omp = median_seconds(call, repeats=30)
l1 = SparseLinear("t", fmt, w, None, None, False, threads=1)
l2 = SparseLinear("t", fmt, w, None, None, False, threads=2)
t1, t2 = median_seconds(l1, x, repeats=30), median_seconds(l2, x, repeats=30)
td = median_seconds(torch.nn.functional.linear, x, w, repeats=30)
print(f"{R}x{C} N={N}: omp(2) kernel-only {t_omp*1e6:.0f}us | sparsec 1 thread {t1*1e6:.0f}us, pool 2 threads {t2*1e6:.0f}us | torch dense {td*1e6:.0f}us")
