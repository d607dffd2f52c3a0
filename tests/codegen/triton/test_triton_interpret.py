"""Compiled and interpreted variants of one kernel coexist in a process (see _dual.py)."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import textwrap

import torch
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from sparsec.codegen.triton import _dual, bsr, csr, epilogue, nm
from sparsec.codegen.triton.compile_target import _KERNELS, kernel_source

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_kernels_are_jit_functions_with_interpreted_twins():
    for k in (bsr.bsr_kernel, csr.csr_kernel, nm.nm_kernel, epilogue.epilogue_kernel):
        assert type(k) is JITFunction
        twin = _dual.interpreted(k)
        assert isinstance(twin, InterpretedFunction)
        assert _dual.interpreted(k) is twin
        # The twin resolves helpers to twins, while the module keeps the compiled helpers.
        twin_globals = twin.fn.__globals__
        assert isinstance(twin_globals["epilogue_store"], InterpretedFunction)
        assert type(k.fn.__globals__["epilogue_store"]) is JITFunction
        assert "interpreter_semantic" not in vars(sys.modules[k.fn.__module__])


def test_kernels_avoid_triton_library_jit_functions():
    # tl.sum, tl.zeros, tl.cdiv... are JITFunctions when TRITON_INTERPRET was unset at import and
    # cannot run inside an interpreted kernel; only builtins and sparsec helpers are allowed.
    banned = {n for n in dir(tl) if isinstance(getattr(tl, n), JITFunction)}
    for name in _KERNELS:
        tree = ast.parse(textwrap.dedent(kernel_source(name)))
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "tl"}
        assert not used & banned, f"{name} uses {sorted(used & banned)}"


def test_kernel_source_lists_helpers():
    src = kernel_source("bsr")
    assert "def _bsr_kernel" in src and "def _epilogue_store" in src and "def _activation" in src
    assert "def _dot_acc" in src


def test_env_interpret_set_at_import_still_compiles_and_interprets():
    # With TRITON_INTERPRET=1 before triton is imported, @triton.jit would give InterpretedFunctions
    # only; sparsec still builds JITFunctions, so it both interprets and compiles for a GPUTarget.
    script = inspect.cleandoc("""
        import torch
        from sparsec.codegen.triton import csr_linear, compile_for_target
        from sparsec.codegen.triton.layouts import dense_to_csr
        from sparsec.codegen.triton.testing import assert_linear_close
        w = torch.randn(20, 30) * (torch.rand(20, 30) < 0.4)
        x = torch.randn(5, 30)
        assert_linear_close(csr_linear(x, *dense_to_csr(w), 20, activation="relu"), x, w, activation="relu")
        stages = compile_for_target("epilogue", arch=80)
        assert stages["cubin"][:4] == b"\\x7fELF"
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_interpreted_launch_leaves_triton_language_unpatched():
    before = tl.sum
    w = torch.randn(8, 16)
    x = torch.randn(3, 16)
    from sparsec.codegen.triton.layouts import dense_to_csr

    csr.csr_linear(x, *dense_to_csr(w), 8)
    assert tl.sum is before


def test_aot_signature_matches_jit_specialization():
    # compile_for_target must compile what a GPU launch compiles: compare with the JIT's own rules.
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    from sparsec.codegen.triton.compile_target import KernelVariant, plan_variant

    launch = plan_variant(KernelVariant("csr", torch.float16, n_rows=2048))
    sig, consts, attrs = _dual.signature(launch)
    for i, name in enumerate(launch.kernel.arg_names):
        if name in launch.constexprs:
            continue
        kind, spec = native_specialize_impl(BaseBackend, launch.args[name], False, True, True)[:2]
        assert sig[name] == kind, name
        if kind == "constexpr":
            assert consts[name] == spec
        else:
            assert ((i,) in attrs) == (spec == "D"), name
