"""Saved compiled models: ``cm.save(path)`` / ``sparsec.load(path)``, and pickling through the same files.

An artifact is one directory:

- ``program.pt2``: the captured program (``torch.export.save``), holding the dense weights it was compiled from;
- ``inputs.pt``: the example inputs (flattened) and their pytree structure;
- ``kernels/``: the compiled CPU kernels' shared libraries, as the disk cache built them, with their records;
- ``manifest.json``: format version, package versions, CPU, the code generator's hash (what makes the kernels
  valid), the compile options, the target, every layer's selected format and each library's SHA-256.

Loading skips torch.export and calibration: the saved program is lowered again with every layer pinned to its
saved format and the weights packed again (packing is deterministic; packed buffers are not stored). Kernels whose
hash matches and whose manifest key (CPU + code generator + torch-mlir) equals this machine's are installed into
the kernel cache and loaded in about a millisecond; on any mismatch sparsec warns and recompiles them.

Weights of a loaded model: ``sparsec.load(path)`` is **frozen**: it computes with the saved weights,
``state_dict()`` returns them and ``load_state_dict`` raises. ``sparsec.load(path, model=m)`` binds it to ``m``:
the weight watch then tracks ``m`` as for ``sparse_compile`` (changed weights recompile on the next call), and
``m``'s weights must equal the saved ones at load time (else it is compiled from ``m`` with a warning).

``pickle`` / ``torch.save(cm)`` store the artifact's files (so ``torch.load(..., weights_only=False)`` returns a
frozen model); ``copy.deepcopy(cm)`` binds the copy to a deep copy of the source model.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from sparsec.errors import InputError, UnsupportedError

log = logging.getLogger("sparsec")
FORMAT_VERSION = 1
_OPT_LEVEL = 3  # the opt level every CPU kernel is compiled at (jit.compile_kernel's default)


@dataclass
class Seed:
    """What a first compile starts from instead of capturing: a loaded program and the saved formats."""

    captured: object  # sparsec.compiler.capture.Captured
    formats: dict[str, str]


class Frozen(torch.nn.Module):
    """The source model of a loaded, unbound artifact: the saved program's module, weights read-only.

    It exists so a new input shape can still be captured (torch.export of the program's module); its
    ``train``/``eval`` only set the flag, since the exported module refuses mode changes.
    """

    def __init__(self, gm: torch.nn.Module) -> None:
        super().__init__()
        self.g = gm
        self.training = False

    def forward(self, *args, **kwargs):
        """Run the saved program."""
        return self.g(*args, **kwargs)

    def train(self, mode: bool = True) -> Frozen:
        """Set the flag only (the program was exported in eval mode)."""
        self.training = mode
        return self

    def state_dict(self, *args, **kwargs):
        """The saved weights, under the original model's names."""
        return self.g.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        """Refused: a loaded model's weights are frozen."""
        raise UnsupportedError(
            "this model was loaded with sparsec.load(path) and its weights are frozen; bind it to a module "
            "with sparsec.load(path, model=your_model) and load the state dict into that module"
        )


def environment() -> dict:
    """What the saved kernels depend on: the kernel cache key's parts, plus the package versions."""
    from importlib.metadata import PackageNotFoundError, version

    import sparsec
    from sparsec.codegen.mlir.disk_cache import _code_version
    from sparsec.targets.cpu.calibrate import cpu_name

    try:
        mlir = version("torch-mlir")
    except PackageNotFoundError:
        mlir = "unknown"
    return {"sparsec": sparsec.__version__, "torch": torch.__version__, "torch_mlir": mlir, "cpu": cpu_name(),
            "codegen": _code_version()}


def _kernel_files(cm) -> list[Path]:
    """The disk-cache library of every CPU kernel the compiled variants use."""
    from sparsec.codegen.mlir import disk_cache
    from sparsec.compiler.pipeline import layers_of

    specs = {}
    for variant in cm._variants:
        for layer in layers_of(variant.module):
            mod = layer.module
            if mod is None or not hasattr(mod, "kernels") or hasattr(mod, "family"):
                continue  # dense, or a Triton (GPU) layer whose kernels Triton caches itself
            kernels = list(mod.kernels(layer.n))
            for ks in getattr(mod, "_kernels", {}).values():
                kernels.extend(ks if isinstance(ks, list | tuple) else [ks])
            for k in kernels:
                if hasattr(k, "spec"):
                    specs[k.spec] = k
    paths = []
    for spec in specs:
        so, _ = disk_cache._paths(spec, _OPT_LEVEL)
        if so.exists():
            paths.append(so)
    return paths


def save(cm, path: str | Path) -> Path:
    """Write ``cm`` as an artifact directory at ``path`` (created; an existing artifact there is replaced)."""
    from sparsec.compiler.pipeline import layers_of

    path = Path(path)
    if path.exists() and not (path / "manifest.json").exists() and any(path.iterdir()):
        raise InputError(f"{path} exists and is not a sparsec artifact; refusing to overwrite it")
    shutil.rmtree(path, ignore_errors=True)
    (path / "kernels").mkdir(parents=True)
    primary = cm._primary
    torch.export.save(primary.captured.program, path / "program.pt2")
    torch.save({"flat": cm._example_flat, "spec": pytree.treespec_dumps(cm._in_spec)}, path / "inputs.pt")
    libs = {}
    for so in _kernel_files(cm):
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
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return path


def _pytree_modules(*specs) -> list[str]:
    """Modules defining the inputs' and outputs' container types (e.g. transformers' ModelOutput classes).

    Their pytree registration happens on import; a new process must import them before torch.export.load
    can rebuild the program's output structure.
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
    differs = [k for k in ("cpu", "codegen", "torch_mlir") if saved.get(k) != here[k]]
    if differs or not cache_enabled():
        why = ", ".join(f"{k}: saved {saved.get(k)!r}, here {here[k]!r}" for k in differs) or "SPARSEC_CACHE=0"
        warnings.warn(f"sparsec: the saved kernels do not fit this machine ({why}); recompiling them", stacklevel=3)
        return
    dest = cache_dir() / "kernels"
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in libs.items():
        src = path / "kernels" / name
        data = src.read_bytes() if src.exists() else b""
        if hashlib.sha256(data).hexdigest() != digest:
            warnings.warn(f"sparsec: saved kernel {name} is missing or corrupted; recompiling it", stacklevel=3)
            continue
        if not (dest / name).exists():
            shutil.copy2(src.with_suffix(".json"), dest / src.with_suffix(".json").name)
            shutil.copy2(src, dest / name)


def load(path: str | Path, model: torch.nn.Module | None = None):
    """The CompiledModel saved at ``path``; frozen, or bound to ``model`` (see the module docstring)."""
    from sparsec.compiler.capture import Captured
    from sparsec.compiler.compiled_model import CompiledModel
    from sparsec.compiler.options import CompileOptions

    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a sparsec artifact (no readable manifest.json: {exc})") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UnsupportedError(
            f"{path}: artifact format {manifest.get('format_version')}, this sparsec reads {FORMAT_VERSION}"
        )
    env = manifest["environment"]
    if env.get("torch") != torch.__version__:
        warnings.warn(f"sparsec: {path} was saved with torch {env.get('torch')}, this is {torch.__version__}",
                      stacklevel=2)
    _install_kernels(path, manifest)
    for mod in manifest.get("pytree_modules", []):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise UnsupportedError(f"{path}: the model's inputs/outputs use types from {mod}, which cannot be "
                                   f"imported here ({exc})") from exc
    known = {f.name for f in fields(CompileOptions)}
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in manifest["options"].items() if k in known}
    options = CompileOptions(**opts)
    inputs = torch.load(path / "inputs.pt", weights_only=True)
    args, kwargs = pytree.tree_unflatten(inputs["flat"], pytree.treespec_loads(inputs["spec"]))
    program = torch.export.load(path / "program.pt2")
    gm = program.module()
    if model is not None and not _same_weights(model, gm):
        warnings.warn("sparsec: the model's weights differ from the saved ones; compiling it afresh", stacklevel=2)
        return CompiledModel(model, tuple(args), kwargs, options, manifest["target"])
    seed = Seed(Captured(program, gm, manifest["dynamic"]), manifest["formats"])
    source = model if model is not None else Frozen(program.module())
    return CompiledModel(source, tuple(args), kwargs, options, manifest["target"], seed=seed)


def _same_weights(model: torch.nn.Module, gm: torch.nn.Module) -> bool:
    ours, saved = model.state_dict(), gm.state_dict()
    if set(ours) != set(saved):
        return False
    return all(ours[k].shape == saved[k].shape and torch.equal(ours[k], saved[k]) for k in saved)


def to_bytes(cm) -> dict[str, bytes]:
    """The artifact's files as {relative path: bytes} (what pickling a CompiledModel stores)."""
    with tempfile.TemporaryDirectory(prefix="sparsec-artifact-") as tmp:
        root = save(cm, Path(tmp) / "a")
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def from_bytes(files: dict[str, bytes], model: torch.nn.Module | None = None):
    """A CompiledModel from ``to_bytes``'s files (unpickling)."""
    with tempfile.TemporaryDirectory(prefix="sparsec-artifact-") as tmp:
        root = Path(tmp)
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return load(root, model=model)


__all__ = ["save", "load", "to_bytes", "from_bytes", "Frozen", "Seed", "environment"]
