"""The captured-graph cache: ``sparse_compile`` of a model compiled before (in any process) loads that compile.

A compile's result depends on the model's code and structure, its weights (the sparsity pattern is read off
them), the example inputs' structure, dtypes and shapes, the options, the knobs, the machine and the package
versions. The key hashes all of these; on a hit the saved lowered graph is restored bound to the user's own
module (sparsec/compiler/artifact.py, ``restore``), skipping torch.export, calibration, the passes, packing
and kernel compiles. On a miss the compile runs and its result is stored (without the weights or the
program: the entry is only ever loaded bound to a module whose weights hashed the same).

What the key holds (and so what invalidates an entry):

- every submodule's name and class, each class's source file (content hash) for every class in its MRO outside
  torch, the version of the package that defines it, and each module's plain attributes (numbers, strings,
  flags, dtypes, and ``to_dict()`` of config objects);
- every parameter, buffer and tensor attribute: name, dtype, shape, strides, requires_grad, which ones share
  storage, and a digest of its bytes: XXH3-128 (the ``xxhash`` package; ~0.045 s of CPU time per 440 MB on one
  core, memory speed) or, without that package, CRC-32 (~0.15 s);
- the example inputs' pytree structure, and each leaf's dtype, shape, device (tensors) or value;
- the compile options, the target, the thread count, every knob's value, the sparsec source files (size and
  mtime), the kernel environment (CPU, code generator, torch-mlir), torch, Python.

What it does not see: code a forward calls outside its modules' class files (helper functions in other files
of the same package count only through that package's version), global state (torch flags, monkeypatches),
and a weight change that leaves a tensor's digest equal (about 2^-128 for a random change with XXH3-128, 2^-32
with CRC-32; neither is a cryptographic hash, so a deliberately crafted weight edit can collide). Both digests
are position-sensitive: unlike a sum or xor of the words, they see swapped values, sign flips and transposes. Turn it off with knob
``graph_cache`` (``SPARSEC_GRAPH_CACHE=0``); entries live in ``$SPARSEC_CACHE_DIR/graphs`` and the oldest are
evicted above knob ``graph_cache_mb``. Only a CompiledModel's first compile uses it (a recompile after a weight
change does not). The lookup runs with Python's cyclic collector paused (``graph_io.no_gc``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from sparsec import knobs

log = logging.getLogger("sparsec")
STATS = {"hits": 0, "misses": 0, "stored": 0, "key_s": 0.0}
_FILE_HASH: dict[tuple, str] = {}
_SOURCE_STAMP: list[str] = []


def enabled() -> bool:
    """Knob ``graph_cache`` and the disk cache both on."""
    from sparsec.runtime.cache import cache_enabled

    return bool(knobs.get("graph_cache")) and cache_enabled()


def _file_hash(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    key = (path, st.st_size, st.st_mtime_ns)
    h = _FILE_HASH.get(key)
    if h is None:
        with open(path, "rb") as f:
            h = _FILE_HASH[key] = hashlib.sha256(f.read()).hexdigest()
    return h


def _sparsec_stamp() -> str:
    """sparsec's own source: every .py file's path, size and mtime (a change to any pass invalidates)."""
    if not _SOURCE_STAMP:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for p in sorted(root.rglob("*.py")):
            st = p.stat()
            h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
        _SOURCE_STAMP.append(h.hexdigest())
    return _SOURCE_STAMP[0]


_PLAIN = (int, float, str, bool, type(None), torch.dtype, torch.device, torch.memory_format)


def _plain(value, depth: int = 0):
    """A deterministic description of a module attribute, or None when it has none (then only its type counts)."""
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, (tuple, list)) and depth < 2 and len(value) <= 64:
        parts = [_plain(v, depth + 1) for v in value]
        return None if None in parts else "[" + ",".join(parts) + "]"
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and depth == 0:  # transformers' configs
        try:
            return json.dumps(to_dict(), sort_keys=True, default=repr)
        except Exception:  # noqa: BLE001 - an object whose to_dict fails: only its type counts
            return None
    return None


def _class_stamp(cls: type, seen: dict) -> str:
    stamp = seen.get(cls)
    if stamp is None:
        parts = []
        for c in cls.__mro__:
            mod = c.__module__
            if mod.startswith("torch") or mod == "builtins":
                continue
            try:
                src = inspect.getsourcefile(c) or ""
            except TypeError:
                src = ""
            top = sys.modules.get(mod.split(".")[0])
            parts.append(f"{mod}.{c.__qualname__}@{_file_hash(src) if src else '-'}"
                         f"v{getattr(top, '__version__', '')}")
        stamp = seen[cls] = ";".join(parts)
    return stamp


def _structure(model: torch.nn.Module, h) -> list[tuple[str, torch.Tensor]]:
    """Hash the module tree into ``h``; the tensors to fingerprint, by name (each storage once)."""
    classes: dict = {}
    tensors = []
    for name, mod in model.named_modules(remove_duplicate=False):
        h.update(f"M{name}:{_class_stamp(type(mod), classes)}:{mod.training};".encode())
        for attr, value in sorted(vars(mod).items()):
            if attr.startswith("_") or isinstance(value, torch.Tensor | torch.nn.Module):
                continue
            desc = _plain(value)
            h.update(f"A{attr}={desc if desc is not None else type(value).__qualname__};".encode())
        stores = [(mod._parameters, "P"), (mod._buffers, "B")]
        stores.append(({k: v for k, v in vars(mod).items() if isinstance(v, torch.Tensor) and not k.startswith("_")},
                       "T"))
        for store, kind in stores:
            for attr, t in sorted(store.items(), key=lambda kv: kv[0]):  # pruning re-adds `weight` after `bias`
                if t is None:
                    h.update(f"{kind}{attr}=None;".encode())
                    continue
                tensors.append((f"{name}.{attr}", t))
                h.update(f"{kind}{attr}:{t.dtype}:{tuple(t.shape)}:{t.stride()}:{t.requires_grad}:"
                         f"{t.device};".encode())
    return tensors


def _digest_fn():
    """(name, bytes -> int): xxHash's XXH3-128 when the ``xxhash`` package is installed, else zlib's CRC-32.

    XXH3-128 runs at memory speed (~10 GB/s on one core, vs ~3 GB/s for CRC-32): BERT-base's 440 MB hash in
    ~0.045 s of CPU time. The name enters the key, so entries stored under one never match the other."""
    try:
        import xxhash
    except ImportError:  # a partial install: the slower CRC-32 still covers every byte
        return "crc32", zlib.crc32
    return "xxh3_128", xxhash.xxh3_128_intdigest


def _digest(t: torch.Tensor, fn) -> int:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.numel() == 0:
        return 0
    flat = t.contiguous().reshape(-1)  # a view (no copy) for the contiguous weights models hold
    return fn(memoryview(flat.view(torch.uint8).numpy()))


def _fingerprint(tensors: list[tuple[str, torch.Tensor]], h) -> None:
    """A digest of every distinct storage's tensor bytes, plus which names share one (tied weights)."""
    first: dict[tuple, str] = {}
    name_, fn = _digest_fn()
    h.update(f"D{name_};".encode())
    for name, t in tensors:
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if ident in first:
            h.update(f"S{name}={first[ident]};".encode())
        else:
            first[ident] = name
            # one thread: XXH3 holds the GIL and is memory-bound, a second thread gains nothing
            h.update(f"C{name}={_digest(t, fn):x};".encode())


def _inputs(args: tuple, kwargs: dict, h) -> None:
    flat, spec = pytree.tree_flatten((args, kwargs))
    h.update(f"I{spec};".encode())
    for x in flat:
        if isinstance(x, torch.Tensor):
            h.update(f"t{x.dtype}:{tuple(x.shape)}:{x.device}:{x.requires_grad};".encode())
        else:
            h.update(f"v{type(x).__qualname__}:{x!r};".encode())


def key(cm, model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: bool | None) -> str:
    """The cache key of compiling ``model`` for these inputs with ``cm``'s options (see the module docstring)."""
    from sparsec.compiler.artifact import environment
    from sparsec.targets.cpu.threads import default_threads

    t0 = time.perf_counter()
    h = hashlib.sha256()
    env = environment()
    h.update(json.dumps(env, sort_keys=True).encode())
    h.update(_sparsec_stamp().encode())
    opts = {k: repr(v) for k, v in asdict(cm.options).items()}
    h.update(json.dumps(opts, sort_keys=True).encode())
    h.update(f"target={cm.target};threads={cm.options.threads or default_threads()};dynamic={dynamic};".encode())
    h.update(json.dumps({k.name: repr(knobs.get(k.name)) for k in knobs.KNOBS.values()}, sort_keys=True).encode())
    _inputs(args, kwargs, h)
    tensors = _structure(model, h)
    _fingerprint(tensors, h)
    STATS["key_s"] = time.perf_counter() - t0
    return h.hexdigest()[:32]


def _root() -> Path:
    from sparsec.runtime.cache import cache_dir

    return cache_dir() / "graphs"


def lookup(cm, model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: bool | None):
    """(the restored variant or None, the key to store under or None)."""
    if not enabled() or not isinstance(model, torch.nn.Module):
        return None, None
    from sparsec.compiler.frozen import Frozen

    if isinstance(model, Frozen):
        return None, None
    from sparsec.compiler.graph_io import no_gc

    with no_gc():
        return _lookup(cm, model, args, kwargs, dynamic)


def _lookup(cm, model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: bool | None):
    try:
        k = key(cm, model, args, kwargs, dynamic)
    except Exception as exc:  # noqa: BLE001 - a model the key cannot describe: compile it, uncached
        log.info("sparsec: graph cache skipped (%s: %s)", type(exc).__name__, exc)
        return None, None
    entry = _root() / k
    if not (entry / "manifest.json").exists():
        STATS["misses"] += 1
        return None, k
    try:
        variant = _restore(entry, cm, model)
    except Exception as exc:  # noqa: BLE001 - a stale or corrupt entry: drop it and compile
        log.warning("sparsec: graph cache entry %s unusable (%s: %s); compiling", entry, type(exc).__name__, exc)
        shutil.rmtree(entry, ignore_errors=True)
        STATS["misses"] += 1
        return None, k
    _recapture_on_demand(variant, model, args, kwargs, dynamic)
    os.utime(entry / "manifest.json")  # recently used: evicted last
    STATS["hits"] += 1
    log.info("sparsec: graph cache hit (%s)", k)
    return variant, None


def _recapture_on_demand(variant, model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: bool | None) -> None:
    """An entry holds no captured program (it is bound to the user's module): saving, pickling or deepcopying
    the hit needs one, so it is captured from the module then, as the missed compile would have."""
    from sparsec.compiler.capture import capture
    from sparsec.compiler.frozen import SavedProgram

    cap = variant.captured
    if isinstance(cap, SavedProgram) and cap.source is None:
        cap.recapture = lambda: capture(model, args, kwargs, dynamic=bool(dynamic)).program


def _restore(entry: Path, cm, model: torch.nn.Module):
    from sparsec.compiler import artifact, graph_io

    manifest = artifact.read_manifest(entry)
    why = artifact._fast_path(manifest)
    if why is not None:
        raise ValueError(why)
    _, arrays = graph_io.read_weights(entry)
    payload = graph_io.read(entry, graph_io.tensor_names(model), arrays)
    # the entry's payload carries the compile's example inputs; this compile's are the caller's
    payload["example_flat"] = list(pytree.tree_leaves(cm._example_flat))
    return artifact.restore(entry, manifest, model, cm.options, cm.target, payload, {})


def store(cm, k: str) -> None:
    """Save ``cm``'s compile under key ``k`` (atomically: a temporary directory renamed into place)."""
    from sparsec.compiler import artifact

    root = _root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{k}.", dir=root))
    try:
        artifact.save(cm, tmp / "a", weights=False, program=False, kernels=False)
        try:
            os.replace(tmp / "a", root / k)
        except OSError:  # another process stored it first
            pass
        STATS["stored"] += 1
    except Exception as exc:  # noqa: BLE001 - the compile succeeded; only its caching failed
        log.info("sparsec: graph cache store skipped (%s: %s)", type(exc).__name__, exc, exc_info=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _evict(root, knobs.get("graph_cache_mb") * 1e6)


def _evict(root: Path, limit: float) -> None:
    """Remove the least recently used entries until the cache is below ``limit`` bytes."""
    entries = []
    for d in root.iterdir():
        m = d / "manifest.json"
        if d.name.startswith(".") or not m.exists():
            continue
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        entries.append((m.stat().st_mtime, size, d))
    total = sum(s for _, s, _ in entries)
    for _, size, d in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        shutil.rmtree(d, ignore_errors=True)
        total -= size


__all__ = ["lookup", "store", "key", "enabled", "STATS"]
