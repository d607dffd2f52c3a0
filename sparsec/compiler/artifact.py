"""Saved compiled models: ``cm.save(path)`` / ``sparsec.load(path)``, and pickling through the same files.

An artifact is one directory:

- ``compiled.pkl`` + ``tensors.bin``: the lowered graph, its runtime modules, packed buffers, layers, report and
  stage texts (sparsec/compiler/graph_io.py); ``tensors.bin`` also holds the source model's weights, each once
  (the dense weight of a layer that runs packed zero-compressed: sparsec/compiler/saved_weights.py), and is
  memory-mapped on load;
- ``program.pt2``: the captured program (``torch.export.save``) without the weights ``tensors.bin`` holds
  (frozen.save_program; put back on load), read only when needed: a new input shape on a frozen model, saving
  a loaded model again, or an artifact whose lowered graph cannot be used here;
- ``kernels/``: the compiled CPU kernels' shared libraries, as the disk cache built them, with their records;
- ``manifest.json``: format version, package versions, Python, CPU, the code generator's hash (what makes the
  kernels valid), the compile options, the target, every layer's selected format and each library's SHA-256.

Loading reads the lowered graph: no torch.export, no passes, no calibration, no packing (BERT-base: ~0.1 s).
Kernels whose hash matches and whose manifest key (CPU + code generator + torch-mlir) equals this machine's are
installed into the kernel cache and loaded in about a millisecond; on any mismatch sparsec warns and compiles
them from their spec (the packed buffers do not depend on the kernels). When the lowered graph cannot be read
(another Python version, an older artifact), the saved program is lowered again with each layer pinned to its
saved format, with a log message.

Weights of a loaded model: ``sparsec.load(path)`` is **frozen**: it computes with the saved weights,
``state_dict()`` returns them and ``load_state_dict`` raises. ``sparsec.load(path, model=m)`` binds it to ``m``:
the graph then reads ``m``'s own tensors, the weight watch tracks ``m`` as for ``sparse_compile`` (changed
weights recompile on the next call), and ``m``'s weights must equal the saved ones at load time (else it is
compiled from ``m`` with a warning).

``pickle`` / ``torch.save(cm)`` store the artifact's files (so ``torch.load(..., weights_only=False)`` returns a
frozen model); ``copy.deepcopy(cm)`` binds the copy to a deep copy of the source model.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import platform
import shutil
import tempfile
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from sparsec.compiler import graph_io
from sparsec.compiler.frozen import Frozen, SavedProgram, Seed, attach_weights, save_program
from sparsec.errors import InputError, UnsupportedError
from sparsec.runtime.module import SparseModule
from sparsec.version import __version__

log = logging.getLogger("sparsec")
FORMAT_VERSION = 3
#: versions this sparsec reads: 1 held only the program and the formats (lowered again on load); 2 stored
#: every weight twice (dense in tensors.bin and again inside program.pt2); 3 stores each once, and the dense
#: weights of layers that run packed zero-compressed (sparsec/compiler/saved_weights.py)
READS = (1, 2, 3)
_OPT_LEVEL = 3  # the opt level every CPU kernel is compiled at (jit.compile_kernel's default)


def environment() -> dict:
    """What the saved kernels and graph depend on: the kernel cache key's parts, package and Python versions."""
    from importlib.metadata import PackageNotFoundError, version

    from sparsec.codegen.mlir.disk_cache import _code_version
    from sparsec.host import cpu_name

    try:
        mlir = version("torch-mlir")
    except PackageNotFoundError:
        mlir = "unknown"
    return {"sparsec": __version__, "torch": torch.__version__, "torch_mlir": mlir, "cpu": cpu_name(),
            "cpu_features": cpu_features(), "codegen": _code_version(), "python": graph_io.python_tag()}


def cpu_features() -> str:
    """A short hash of this CPU's ISA flags (``/proc/cpuinfo``'s first ``flags`` line; the machine type elsewhere).

    The kernels are compiled for the host CPU: a machine with the same model name but other flags (a VM
    hiding AVX-512) must not run them."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                    break
    except OSError:
        pass
    return hashlib.sha256(flags.encode()).hexdigest()[:16]


def _kernel_files(cm) -> list[Path]:
    """The disk-cache library of every CPU kernel the compiled variants use."""
    from sparsec.codegen.mlir import disk_cache
    from sparsec.compiler.pipeline import layers_of

    specs = {}
    for variant in cm._variants:
        for layer in layers_of(variant.module):
            mod = layer.module
            if not isinstance(mod, SparseModule):
                continue  # dense (a Triton layer lists no kernels: Triton caches its own)
            kernels = list(mod.prepare(layer.n))
            for ks in getattr(mod, "_kernels", {}).values():
                kernels.extend(ks if isinstance(ks, list | tuple) else [ks])
            for k in kernels:
                if hasattr(k, "spec"):
                    specs[k.spec] = k
    paths = []
    for spec, k in specs.items():
        so, _ = disk_cache._paths(spec, _OPT_LEVEL)
        # a kernel loaded from another cache directory (SPARSEC_CACHE_DIR changed in this process) is there
        other = Path(getattr(getattr(k, "lib", None), "_name", "") or "")
        if so.exists():
            paths.append(so)
        elif other.suffix == ".so" and other.exists() and other.with_suffix(".json").exists():
            paths.append(other)
    return paths


def _source_tensors(cm) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The source model's tensors by name, and its state_dict's keys."""
    src = cm._model[0]
    if isinstance(src, Frozen):
        return src.tensors(), list(src._keys)
    return graph_io.tensor_names(src), list(src.state_dict().keys())


def _payload(cm) -> dict:
    primary = cm._primary
    ctx = primary.ctx
    return {
        "graph": graph_io.encode_graph(primary.module), "report": primary.report, "stages": dict(ctx.stages),
        "notes": list(ctx.notes), "specs": primary.specs, "out_spec": primary.out_spec, "in_spec": cm._in_spec,
        "example_flat": cm._example_flat, "machine": ctx.machine, "shrunk": ctx.shrunk,
    }


def save(cm, path: str | Path, *, weights: bool = True, program: bool = True, kernels: bool = True) -> Path:
    """Write ``cm`` as an artifact directory at ``path`` (created; an existing artifact there is replaced).

    ``weights=False`` / ``program=False`` / ``kernels=False`` leave out the source weights, the captured
    program and the kernel libraries (the graph cache's entries: they are loaded bound to the user's module,
    with the kernels in the kernel cache already); such an artifact loads only with ``model=``."""
    from sparsec.compiler.pipeline import layers_of

    path = Path(path)
    if path.exists() and not (path / "manifest.json").exists() and any(path.iterdir()):
        raise InputError(f"{path} exists and is not a sparsec artifact; refusing to overwrite it")
    shutil.rmtree(path, ignore_errors=True)
    (path / "kernels").mkdir(parents=True)
    primary = cm._primary
    source, keys = _source_tensors(cm)
    lowered = True
    try:
        graph_io.write(path, _payload(cm), source, weights)
    except Exception as exc:  # noqa: BLE001 - an unpicklable module: the artifact still loads, lowered again
        if not program:
            raise
        log.warning("sparsec: the lowered graph cannot be saved (%s: %s); loading this artifact will lower the "
                    "saved program again", type(exc).__name__, exc)
        lowered = False
        for name in (graph_io.PAYLOAD, graph_io.TENSORS):
            (path / name).unlink(missing_ok=True)
    stripped: list[str] = []
    if program:
        # tensors.bin holds the weights (when it was written with them): the program is saved without them
        stripped = _write_program(primary.captured, path / "program.pt2", source if weights and lowered else {})
    if not program or not lowered:
        torch.save({"flat": cm._example_flat, "spec": pytree.treespec_dumps(cm._in_spec)}, path / "inputs.pt")
    libs = {}
    for so in _kernel_files(cm) if kernels else []:
        shutil.copy2(so, path / "kernels" / so.name)
        meta = so.with_suffix(".json")
        if meta.exists():
            shutil.copy2(meta, path / "kernels" / meta.name)
        libs[so.name] = hashlib.sha256(so.read_bytes()).hexdigest()
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cm.options).items()}
    manifest = {
        "pytree_modules": _pytree_modules(cm._in_spec, primary.out_spec),
        "format_version": FORMAT_VERSION, "environment": environment(), "target": cm.target,
        "options": options, "dynamic": primary.captured.dynamic,
        "formats": {layer.name: layer.format for layer in layers_of(primary.module)}, "kernels": libs,
        "lowered": lowered, "weights": weights, "program": program, "state_dict_keys": keys,
        "program_stripped": stripped,
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return path


def _write_program(captured, dest: Path, source) -> list[str]:
    """Write ``program.pt2`` without the weights ``source`` holds (frozen.save_program); their names."""
    if isinstance(captured, SavedProgram):
        return captured.write(dest, source)
    return save_program(captured.program, dest, source)


def _pytree_modules(*specs) -> list[str]:
    """Modules defining the inputs' and outputs' container types (e.g. transformers' ModelOutput classes).

    Their pytree registration happens on import; a new process must import them before the output
    structure can be rebuilt.
    """
    mods, stack = set(), [s for s in specs if s is not None]
    while stack:
        spec = stack.pop()
        mod = getattr(spec.type, "__module__", None)
        if mod and mod not in ("builtins", "collections") and not mod.startswith("torch"):
            mods.add(mod)
        stack.extend(spec.children())
    return sorted(mods)


def _install_kernels(path: Path, manifest: dict) -> None:
    """Copy the saved libraries into the kernel cache when they fit this machine; warn when they do not."""
    from sparsec.runtime.cache import cache_dir, cache_enabled

    libs = manifest.get("kernels", {})
    if not libs:
        return
    saved, here = manifest["environment"], environment()
    differs = [k for k in ("cpu", "cpu_features", "codegen", "torch_mlir") if saved.get(k) != here[k]]
    if differs or not cache_enabled():
        why = ", ".join(f"{k}: saved {saved.get(k)!r}, here {here[k]!r}" for k in differs) or "SPARSEC_CACHE=0"
        warnings.warn(f"sparsec: the saved kernels do not fit this machine ({why}); recompiling them", stacklevel=3)
        return
    dest = cache_dir() / "kernels"
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in libs.items():
        if (dest / name).exists():
            continue  # the kernel cache checks its own entries' hashes when it loads them
        src = path / "kernels" / name
        data = src.read_bytes() if src.exists() else b""
        if hashlib.sha256(data).hexdigest() != digest:
            warnings.warn(f"sparsec: saved kernel {name} is missing or corrupted; recompiling it", stacklevel=3)
            continue
        shutil.copy2(src.with_suffix(".json"), dest / src.with_suffix(".json").name)
        shutil.copy2(src, dest / name)


def read_manifest(path: Path) -> dict:
    """The artifact's manifest, checked for a format version this sparsec reads."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a sparsec artifact (no readable manifest.json: {exc})") from exc
    if manifest.get("format_version") not in READS:
        raise UnsupportedError(
            f"{path}: artifact format {manifest.get('format_version')}, this sparsec reads {READS}"
        )
    return manifest


def _options(manifest: dict):
    from sparsec.compiler.options import CompileOptions

    known = {f.name for f in fields(CompileOptions)}
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in manifest["options"].items() if k in known}
    return CompileOptions(**opts)


def _import_pytree_modules(path: Path, manifest: dict) -> None:
    for mod in manifest.get("pytree_modules", []):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise UnsupportedError(f"{path}: the model's inputs/outputs use types from {mod}, which cannot be "
                                   f"imported here ({exc})") from exc


def _fast_path(manifest: dict) -> str | None:
    """Why the lowered graph cannot be used here, or None when it can."""
    if manifest.get("format_version", 1) < 2 or not manifest.get("lowered"):
        return "the artifact holds no lowered graph"
    env = manifest["environment"]
    if env.get("python") != graph_io.python_tag():
        return f"it was saved with {env.get('python')}, this is {graph_io.python_tag()}"
    if env.get("torch") != torch.__version__:
        return f"it was saved with torch {env.get('torch')}, this is {torch.__version__}"
    if env.get("sparsec") != _sparsec_version():
        return f"it was saved by sparsec {env.get('sparsec')}, this is {_sparsec_version()}"
    return None


def _sparsec_version() -> str:
    return __version__


def restore(path: Path, manifest: dict, model: torch.nn.Module | None, options, target: str, payload: dict,
            weights):
    """The ``Variant`` the payload describes, its tensors bound to ``model``'s (or to the saved weights).

    ``weights``: the saved weights (``saved_weights.SavedWeights``, or {} for a graph-cache entry), which
    the program (read only if needed) gets back."""
    from sparsec.compiler.context import CompileContext
    from sparsec.compiler.pipeline import layers_of
    from sparsec.compiler.variant import Variant

    gm = graph_io.decode_graph(payload["graph"])
    root = model
    ctx = CompileContext(options=options, root=root, target=target, stages=payload["stages"],
                         notes=payload["notes"], machine=payload["machine"], shrunk=payload["shrunk"])
    ctx.example_inputs = tuple(payload["example_flat"])
    program = None
    if manifest.get("program", True):
        program = path / "program.pt2"
    captured = SavedProgram(program, manifest["dynamic"], weights, manifest.get("program_stripped", ()))
    variant = Variant(captured, gm, ctx, payload["report"], payload["specs"], payload["out_spec"])
    frozen = model is None
    for layer in layers_of(gm):
        mod = layer.module
        if mod is None:
            continue
        if frozen and getattr(mod, "train_refs", None) is not None:
            mod.train_refs = None  # frozen weights take no gradient
        if isinstance(mod, SparseModule):
            mod.prepare(layer.n)  # the example's kernels: from the kernel cache, compiled when they do not fit
    return variant


def load_args(path: str | Path, model: torch.nn.Module | None = None) -> dict:
    """The CompiledModel constructor's arguments for the model saved at ``path``: frozen, or bound to ``model``
    (see the module docstring). ``sparsec.load`` (sparsec/compiler/compiled_model.py) builds the model from
    them, so this module never imports the class that imports it. Runs with Python's cyclic collector paused
    (``graph_io.no_gc``: a full collection of the caller's heap cost more than the load itself)."""
    with graph_io.no_gc():
        return _load_args(Path(path), model)


def _load_args(path: Path, model: torch.nn.Module | None) -> dict:
    manifest = read_manifest(path)
    env = manifest["environment"]
    if env.get("torch") != torch.__version__:
        warnings.warn(f"sparsec: {path} was saved with torch {env.get('torch')}, this is {torch.__version__}",
                      stacklevel=2)
    if model is None and not manifest.get("weights", True):
        raise InputError(f"{path} holds no weights (a graph-cache entry): load it with model=your_model")
    _install_kernels(path, manifest)
    _import_pytree_modules(path, manifest)
    options = _options(manifest)
    why = _fast_path(manifest)
    if why is not None:
        log.info("sparsec: %s: %s; lowering the saved program again", path, why)
        return _load_program(path, manifest, model, options)
    saved, arrays = graph_io.read_weights(path)
    if model is not None and manifest.get("weights", True) and not _same_weights(model, saved):
        warnings.warn("sparsec: the model's weights differ from the saved ones; compiling it afresh", stacklevel=2)
        payload = graph_io.read(path, saved, arrays, frozen=True)
        args, kwargs = pytree.tree_unflatten(payload["example_flat"], payload["in_spec"])
        return _args(model, args, kwargs, options, manifest["target"])
    bind = graph_io.tensor_names(model) if model is not None else saved
    payload = graph_io.read(path, bind, arrays, frozen=model is None)
    source = model
    if model is None:
        program = SavedProgram(path / "program.pt2" if manifest.get("program", True) else None, manifest["dynamic"],
                               saved, manifest.get("program_stripped", ()))
        source = Frozen(saved, manifest.get("state_dict_keys", list(saved)), program)
    variant = restore(path, manifest, model, options, manifest["target"], payload, saved)
    if model is None:
        variant.captured = source._program  # one lazily loaded program for the variant and the source
    args, kwargs = pytree.tree_unflatten(payload["example_flat"], payload["in_spec"])
    return _args(source, args, kwargs, options, manifest["target"], seed=variant)


def _args(model, args, kwargs, options, target: str, seed=None) -> dict:
    """CompiledModel's constructor arguments."""
    return {"model": model, "args": tuple(args), "kwargs": kwargs, "options": options, "target": target, "seed": seed}


def _load_program(path: Path, manifest: dict, model: torch.nn.Module | None, options):
    """Version 1 (and the fallback): lower the saved program again with every layer pinned to its format."""
    from sparsec.compiler.capture import Captured

    if not manifest.get("program", True):
        raise UnsupportedError(f"{path}: its lowered graph cannot be used here and it holds no program")
    stripped = manifest.get("program_stripped", [])
    saved = graph_io.read_weights(path)[0] if stripped else {}
    if (path / "inputs.pt").exists():
        inputs = torch.load(path / "inputs.pt", weights_only=True)
        args, kwargs = pytree.tree_unflatten(inputs["flat"], pytree.treespec_loads(inputs["spec"]))
    else:
        saved, arrays = graph_io.read_weights(path)
        payload = graph_io.read(path, saved, arrays, frozen=True)
        args, kwargs = pytree.tree_unflatten(payload["example_flat"], payload["in_spec"])
    program = torch.export.load(path / "program.pt2")
    attach_weights(program, stripped, saved)  # a version-3 program is saved without them
    gm = program.module()
    if model is not None and not _same_weights(model, gm.state_dict()):
        warnings.warn("sparsec: the model's weights differ from the saved ones; compiling it afresh", stacklevel=2)
        return _args(model, args, kwargs, options, manifest["target"])
    seed = Seed(Captured(program, gm, manifest["dynamic"]), manifest["formats"])
    if model is None:
        saved_program = SavedProgram(path / "program.pt2", manifest["dynamic"], saved, stripped)
        saved_program._program = program
        weights = program.module().state_dict()
        model = Frozen(dict(weights), manifest.get("state_dict_keys", list(weights)), saved_program)
    return _args(model, args, kwargs, options, manifest["target"], seed=seed)


def _same_weights(model: torch.nn.Module, saved) -> bool:
    """True when ``model`` has every saved tensor, with equal shape, dtype and values (a zero-compressed one
    is compared without rebuilding it)."""
    ours = graph_io.tensor_names(model)
    matches = getattr(saved, "matches", None)
    for name in saved:
        o = ours.get(name)
        if o is None:
            return False
        if matches is not None:
            if not matches(name, o):
                return False
            continue
        t = saved[name]
        if o.shape != t.shape or o.dtype != t.dtype or not torch.equal(o.detach(), t):
            return False
    return True


def to_bytes(cm) -> dict[str, bytes]:
    """The artifact's files as {relative path: bytes} (what pickling a CompiledModel stores)."""
    with tempfile.TemporaryDirectory(prefix="sparsec-artifact-") as tmp:
        root = save(cm, Path(tmp) / "a")
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@contextlib.contextmanager
def unpacked(files: dict[str, bytes]):
    """A temporary artifact directory holding ``to_bytes``'s files, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="sparsec-artifact-") as tmp:
        root = Path(tmp)
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        yield root


def detach_from(cm, root: Path, files: dict[str, bytes]) -> None:
    """Point a model loaded from a temporary directory at the in-memory copies of its files."""
    program = files.get("program.pt2")
    for v in cm._variants:
        cap = v.captured
        if isinstance(cap, SavedProgram) and isinstance(cap.source, Path):
            cap.source = program
    src = cm._model[0]
    if isinstance(src, Frozen) and isinstance(src._program.source, Path):
        src._program.source = program


__all__ = ["save", "load_args", "to_bytes", "unpacked", "detach_from", "restore", "read_manifest", "Frozen", "Seed", "SavedProgram",
           "environment"]
