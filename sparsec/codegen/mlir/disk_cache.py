"""On-disk cache of compiled kernels: the JIT's object code linked into a shared library.

Key: the KernelSpec, the source of every module that generates or lowers kernel code, the torch-mlir
version, the CPU (the JIT targets the host's instruction set) and the optimization level: everything
that affects the machine code. Each entry is ``<key>.so`` plus ``<key>.json`` holding the library's
SHA-256 and the stage texts for ``ir()``. Writes go through a temp file and a rename, so two processes
compiling the same kernel both leave a complete entry; an entry whose hash does not match (truncated,
corrupted) or that fails to load is deleted with a warning and the kernel is recompiled.

Linking needs a C compiler driver (``cc``); without one, or with ``SPARSEC_CACHE=0``, kernels are
compiled in every process (30-80 ms each) and nothing is written.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from sparsec import knobs
from sparsec.codegen.spec import KernelSpec
from sparsec.host import cpu_name
from sparsec.runtime.cache import atomic_write, cache_dir, cache_enabled, read_json, write_json

log = logging.getLogger("sparsec")
_CODEGEN_FILES = ("emit.py", "emit_bitmap.py", "emit_rowvec.py", "emit_bsrvec.py", "emit_csrnat.py", "emit_sddmm.py",
                  "emit_refresh.py", "emit_int8.py", "emit_int8_vnni.py",
                  "emit_int8_quant.py", "emit_int8_quant_t.py",
                  "emit_int8_quant_rows.py", "mathfn.py", "pipeline.py", "jit.py",
                  "disk_cache.py")


@lru_cache(maxsize=1)
def _code_version() -> str:
    """Hash of the code generator's own source: a change to it invalidates every entry."""
    from importlib.metadata import version

    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODEGEN_FILES:
        h.update((here / name).read_bytes())
    h.update((here.parent / "spec.py").read_bytes())
    try:
        h.update(version("torch-mlir").encode())
    except Exception:  # metadata missing (source install): the code hash still separates versions
        h.update(b"torch-mlir-unknown")
    h.update(cpu_name().encode())
    return h.hexdigest()


def _key(spec: KernelSpec, opt_level: int) -> str:
    # the spec's class too: two kernel families whose specs have the same fields (the int8 input passes)
    # must not share an entry
    text = f"{type(spec).__name__}|{sorted(asdict(spec).items())}|{opt_level}|{_code_version()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _paths(spec: KernelSpec, opt_level: int) -> tuple[Path, Path]:
    base = cache_dir() / "kernels"
    key = _key(spec, opt_level)
    return base / f"{key}.so", base / f"{key}.json"


def _symbol(spec: KernelSpec) -> str:
    # the engine's packed wrapper of the C interface: one void** argument, as the JIT'd call uses
    return f"_mlir__mlir_ciface_{spec.name}"


def _drop(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


def load(spec: KernelSpec, opt_level: int):
    """(function, library, mlir, llvm) from the cache, or None."""
    if not cache_enabled():
        return None
    so, meta_path = _paths(spec, opt_level)
    if not so.exists():
        return None
    meta = read_json(meta_path)
    try:
        data = so.read_bytes()
        if meta is None or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise OSError("library hash does not match its record (truncated or corrupted)")
        lib = ctypes.CDLL(str(so))
        fn = getattr(lib, _symbol(spec))
        fn.argtypes, fn.restype = [ctypes.c_void_p], None
    except (OSError, AttributeError) as exc:
        log.warning("sparsec: cached kernel %s is unusable (%s); recompiling", so.name, exc)
        _drop(so, meta_path)
        return None
    return fn, lib, meta.get("mlir", ""), meta.get("llvm", "")


def store(spec: KernelSpec, opt_level: int, engine, mlir_text: str, llvm_text: str) -> None:
    """Write the engine's object code as a shared library, with its record; never raises."""
    if not cache_enabled():
        return
    cc = shutil.which(knobs.get("cc"))
    if cc is None:
        return
    so, meta_path = _paths(spec, opt_level)
    try:
        so.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
            obj, lib = os.path.join(tmp, "k.o"), os.path.join(tmp, "k.so")
            engine.dump_to_object_file(obj)
            # The JIT emits non-PIC code: allow text relocations instead of failing the link.
            proc = subprocess.run(
                [cc, "-shared", "-Wl,-z,notext", "-o", lib, obj], capture_output=True, text=True, timeout=60
            )
            if proc.returncode != 0:
                log.info("sparsec: kernel not cached (link failed: %s)", proc.stderr.strip()[:300])
                return
            data = Path(lib).read_bytes()
        atomic_write(so, data)
        write_json(meta_path, {"sha256": hashlib.sha256(data).hexdigest(), "mlir": mlir_text, "llvm": llvm_text,
                               "name": spec.name})
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("sparsec: kernel not cached (%s)", exc)
