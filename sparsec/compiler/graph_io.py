"""The lowered graph of a compiled model as two files: ``compiled.pkl`` and ``tensors.bin`` (mapped).

What a saved model needs to run is what the compile produced, not what it started from: the lowered fx graph
(nodes with their ATen targets, as data), the runtime modules with their packed buffers, every layer's facts and
format, the report and the stage texts. Loading that takes no torch.export deserialization, no passes and no
packing: about 0.1 s for BERT-base, against ~5 s to deserialize the exported program and ~2 s to lower it again.

- ``compiled.pkl``: a pickle of the graph's nodes (targets by name: ``aten::addmm.default``), the submodule tree
  the graph calls and reads, the layers (stripped of their fx node references), the report and stages. Every
  tensor and numpy array in it is a persistent id into ``tensors.bin``; a tensor that is one of the source
  model's parameters or buffers is stored by its name instead, so loading can bind it to the user's module
  (or to the saved weights, for a frozen model).
- ``tensors.bin``: the bytes of every stored tensor and array (the source weights, when saved, and the packed
  buffers; a source weight that only a layer's ``train_refs`` name is zero-compressed, saved_weights.py, and a
  frozen load reads ``train_refs`` as None without touching it) at 64-byte aligned offsets (the AVX-512 kernels want aligned buffers), mapped copy-on-write on load
  (``numpy.memmap``): nothing is copied or parsed per tensor. The index is the first pickle of ``compiled.pkl``.

The guard function torch.export inserts (``_guards_fn``, a function built with ``exec``) is stored as its code
object (``marshal``, which is specific to the Python version: the manifest records it and a mismatch makes the
loader fall back to lowering the saved program again).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import marshal
import math
import pickle
import sys
import types
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.fx import Graph, GraphModule, Node
from torch.fx.node import map_aggregate, map_arg

from sparsec.compiler.saved_weights import SavedWeights, compress, digest

PAYLOAD, TENSORS = "compiled.pkl", "tensors.bin"


class _Ref:
    """A node argument that is another node, by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self):
        return _Ref, (self.name,)


def _encode_target(target):
    if isinstance(target, torch._ops.OpOverload):
        return ("op", target._schema.name, target._overloadname)
    if isinstance(target, torch._ops.OpOverloadPacket):
        return ("packet", target._qualified_op_name)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return ("hop", target.name())
    return ("obj", target)  # a string (placeholder / get_attr / call_module), or a function pickled by reference


def _decode_target(code):
    kind = code[0]
    if kind == "op":
        ns, name = code[1].split("::")
        packet = getattr(getattr(torch.ops, ns), name)
        return getattr(packet, code[2] or "default")
    if kind == "packet":
        ns, name = code[1].split("::")
        return getattr(getattr(torch.ops, ns), name)
    if kind == "hop":
        return getattr(torch.ops.higher_order, code[1])
    return code[1]


def _strip_layer(layer):
    """A copy of a SparseLayer without references into the fx graph (which is rebuilt, not pickled)."""
    out = copy.copy(layer)
    if getattr(layer, "m", None) is not None:
        m = copy.copy(layer.m)
        m.node, m.weight_nodes = None, ()
        out.m = m
    out.fused_nodes = []
    return out


def encode_graph(gm: GraphModule) -> dict:
    """The graph's nodes as data, with the SparseLayer of each analyzed node."""
    nodes, layers = [], {}
    for n in gm.graph.nodes:
        args = map_arg(n.args, lambda x: _Ref(x.name))
        kwargs = map_arg(n.kwargs, lambda x: _Ref(x.name))
        nodes.append((n.op, n.name, _encode_target(n.target), args, kwargs))
        if "sparsec" in n.meta:
            layers[n.name] = _strip_layer(n.meta["sparsec"])
    # what the graph reads and calls: get_attr targets and call_module targets, by qualified name
    owned = {}
    for n in gm.graph.nodes:
        if n.op in ("get_attr", "call_module"):
            obj = gm
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            owned[str(n.target)] = obj
    return {"nodes": nodes, "layers": layers, "owned": owned}


def decode_graph(data: dict) -> GraphModule:
    """The GraphModule ``encode_graph`` described (default codegen: it takes and returns flat lists)."""
    graph = Graph()
    env: dict[str, Node] = {}

    def resolve(x):
        return env[x.name] if isinstance(x, _Ref) else x

    for op, name, target, args, kwargs in data["nodes"]:
        node = graph.create_node(op, _decode_target(target), map_aggregate(args, resolve),
                                 map_aggregate(kwargs, resolve), name=name)
        env[name] = node
        layer = data["layers"].get(name)
        if layer is not None:
            node.meta["sparsec"] = layer
    return GraphModule(data["owned"], graph)


# --- pickling with tensors kept apart ---------------------------------------------------------------------


def _guards_namespace() -> dict:
    # the namespace torch.export._unlift._convert_guards_code_to_fn executes the guard code in
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    return {**SYMPY_INTERP, "math": math, "inf": float("inf"), "torch": torch}


class Guards(torch.nn.Module):
    """The input-shape guards of a loaded graph (torch.export's ``GuardsFn``, whose module costs seconds to
    import because it imports torch._dynamo): ``forward`` asserts every guard."""

    def __init__(self, code: types.CodeType) -> None:
        super().__init__()
        self.code = code
        self.forward = types.FunctionType(code, _guards_namespace(), "_")
        self._is_impure = True


def _is_guards(obj) -> bool:
    t = type(obj)
    return t is Guards or (t.__name__ == "GuardsFn" and t.__module__ == "torch.export._unlift")


def _rebuild_guards(code: bytes) -> torch.nn.Module:
    return Guards(marshal.loads(code))


def _guard_code(fn) -> types.CodeType:
    """The code object of the generated guard function, under the decorators torch wraps it in."""
    stack, seen = [fn], set()
    while stack:
        f = stack.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        code = getattr(f, "__code__", None)
        if code is not None and not code.co_freevars and code.co_name == "_":
            return code
        if getattr(f, "__wrapped__", None) is not None:
            stack.append(f.__wrapped__)
        for cell in getattr(f, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if callable(value):
                stack.append(value)
    raise pickle.PicklingError("the graph's guard function has no plain code object to store")


class _Pickler(pickle.Pickler):
    def __init__(self, file, names: dict[int, str], refs: set[int]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.names = names  # id(tensor) -> the source model's name for it
        self.refs = refs  # ids of the runtime modules' ``train_refs`` tuples
        self.arrays: list[torch.Tensor] = []
        self.seen: dict[int, int] = {}
        self.keep: list = []  # objects whose id is a key of seen must outlive the pickling
        self.read_names: set[str] = set()  # source tensors the graph reads (stored by name, "w")
        self.ref_names: set[str] = set()  # source tensors only a train_refs tuple names ("refs")

    def persistent_id(self, obj):
        if id(obj) in self.refs and all(t is None or id(t) in self.names for t in obj):
            # the parameters a sparse layer's gradients go to: a frozen load has none (it drops them), so
            # the weights they name need not be stored dense (saved_weights.py)
            names = tuple(None if t is None else self.names[id(t)] for t in obj)
            self.ref_names.update(n for n in names if n is not None)
            return ("refs", names)
        if isinstance(obj, torch.Tensor):
            param = isinstance(obj, torch.nn.Parameter)
            if id(obj) in self.names:
                self.read_names.add(self.names[id(obj)])
                return ("w", self.names[id(obj)], param, obj.requires_grad)
            return ("t", self._index(obj, obj.detach()), param, obj.requires_grad)
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise pickle.PicklingError("a numpy array of Python objects cannot be stored")
            return ("a", self._index(obj, torch.from_numpy(obj)))
        if _is_guards(obj):
            code = obj.code if isinstance(obj, Guards) else _guard_code(obj.forward)
            return ("guards", marshal.dumps(code))
        return None

    def _index(self, obj, tensor: torch.Tensor) -> int:
        k = self.seen.get(id(obj))
        if k is None:
            k = self.seen[id(obj)] = len(self.arrays)
            self.arrays.append(tensor)
            self.keep.append(obj)
        return k


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, weights: Mapping[str, torch.Tensor], arrays: list[torch.Tensor], frozen: bool) -> None:
        super().__init__(file)
        self.weights, self.arrays, self.frozen = weights, arrays, frozen
        self.views: dict[int, object] = {}

    def persistent_load(self, pid):
        kind = pid[0]
        if kind == "refs":  # a frozen model's layers take no gradient: no parameters to name
            if self.frozen:
                return None
            return tuple(None if n is None else self._weight(n) for n in pid[1])
        if kind == "w":
            return self._weight(pid[1])
        if kind == "t":
            t = self.arrays[pid[1]]
            if pid[2]:
                key = ("p", pid[1])
                if key not in self.views:
                    self.views[key] = torch.nn.Parameter(t, requires_grad=pid[3])
                return self.views[key]
            return t
        if kind == "a":
            key = ("a", pid[1])
            if key not in self.views:
                self.views[key] = self.arrays[pid[1]].numpy()
            return self.views[key]
        if kind == "guards":
            return _rebuild_guards(pid[1])
        raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")

    def _weight(self, name: str) -> torch.Tensor:
        t = self.weights.get(name)
        if t is None:
            raise KeyError(name)
        return t


def _train_refs(payload) -> set[int]:
    """The ids of every ``train_refs`` tuple of the runtime modules the payload's graph calls."""
    owned = payload.get("graph", {}).get("owned", {}) if isinstance(payload, dict) else {}
    out = set()
    for obj in owned.values():
        for m in obj.modules() if isinstance(obj, torch.nn.Module) else ():
            refs = getattr(m, "train_refs", None)
            if isinstance(refs, tuple):
                out.add(id(refs))
    return out


def tensor_names(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter, buffer and tensor attribute of ``model`` by qualified name (shared ones under each)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, mod in model.named_modules(remove_duplicate=False):
        dot = prefix + "." if prefix else ""
        for store in (mod._parameters, mod._buffers):
            for name, t in store.items():
                if t is not None:
                    out.setdefault(dot + name, t)
        for name, value in vars(mod).items():
            if isinstance(value, torch.Tensor) and not name.startswith("_"):
                out.setdefault(dot + name, value)
    return out


_ALIGN = 64  # AVX-512 loads: every buffer starts on a 64-byte boundary (the mapping itself is page-aligned)


def write(path: Path, payload: dict, source: dict[str, torch.Tensor], weights: bool) -> None:
    """Write ``payload`` (any picklable structure of graphs, modules, tensors, arrays) into ``path``.

    ``source``: the source model's tensors by name; those are stored by name, and their data too when
    ``weights`` (a frozen load then computes with them): dense, or zero-compressed (saved_weights.py) when
    only a sparse layer's ``train_refs`` name it and it is sparse enough. Every tensor's bytes go into one
    file, ``tensors.bin``, at 64-byte aligned offsets; ``compiled.pkl`` starts with their index (offset, dtype,
    shape) and which slots hold which weight."""
    names = {}
    for name, t in source.items():
        names.setdefault(id(t), name)
    buf = io.BytesIO()
    pickler = _Pickler(buf, names, _train_refs(payload))
    pickler.dump(payload)
    tensors = list(pickler.arrays)
    slot: dict[int, int] = {}
    stored, packed = {}, {}
    only_refs = pickler.ref_names - pickler.read_names
    packed_slot: dict[int, tuple] = {}
    digests: dict[str, str] = {}
    for name, t in source.items() if weights else ():
        if id(t) in slot:  # a tied weight under a second name: the same bytes
            stored[name] = slot[id(t)]
            continue
        if id(t) in packed_slot:
            packed[name], d = packed_slot[id(t)]
            if d is not None:
                digests[name] = d
            continue
        # only CPU tensors: a rebuilt weight comes back on the CPU
        parts = compress(t) if name in only_refs and t.device.type == "cpu" else None
        if parts is None:
            slot[id(t)] = len(tensors)
            tensors.append(t.detach())
            stored[name] = slot[id(t)]
        else:
            packed[name] = (*range(len(tensors), len(tensors) + len(parts)), tuple(t.shape))
            tensors.extend(parts)
            d = digest(t)  # a bound load compares the user's weight by it, not element by element
            if d is not None:
                digests[name] = d
            packed_slot[id(t)] = (packed[name], d)
    entries, offset = [], 0
    with open(path / TENSORS, "wb") as f:
        for t in tensors:
            if t.device.type != "cpu":
                t = t.cpu()
            flat = t.contiguous().reshape(-1)
            pad = (-offset) % _ALIGN
            f.write(b"\0" * pad)
            offset += pad
            data = flat.view(torch.uint8).numpy() if flat.numel() else np.empty(0, np.uint8)
            f.write(memoryview(data))
            entries.append((offset, str(t.dtype).replace("torch.", ""), tuple(t.shape), t.device.type))
            offset += data.nbytes
    index = {"entries": entries, "arrays": len(pickler.arrays), "weights": stored, "compressed": packed,
             "digests": digests}
    with open(path / PAYLOAD, "wb") as f:
        pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.write(buf.getvalue())


def read_weights(path: Path) -> tuple[SavedWeights, list[torch.Tensor]]:
    """The saved weights (possibly none) and arrays: views of ``tensors.bin`` mapped copy-on-write (writes to
    them, e.g. refreshed values, stay in this process); zero-compressed weights are rebuilt on access."""
    with open(path / PAYLOAD, "rb") as f:
        index = pickle.load(f)
    size = (path / TENSORS).stat().st_size
    base = torch.from_numpy(np.memmap(path / TENSORS, dtype=np.uint8, mode="c")) if size else torch.empty(0,
                                                                                                           dtype=torch.uint8)
    tensors = []
    for offset, dtype, shape, device in index["entries"]:
        dt = getattr(torch, dtype)
        n = math.prod(shape) * torch.empty((), dtype=dt).element_size()
        t = base[offset : offset + n].view(dt).reshape(shape)
        tensors.append(t if device == "cpu" else t.to(device))
    arrays = tensors[: index["arrays"]]
    dense = {name: tensors[k] for name, k in index["weights"].items()}
    packed = {name: (*(tensors[k] for k in slots[:-1]), tuple(slots[-1]))
              for name, slots in index.get("compressed", {}).items()}
    return SavedWeights(dense, packed, index.get("digests")), arrays


def read(path: Path, weights: Mapping[str, torch.Tensor], arrays: list[torch.Tensor], frozen: bool = False) -> dict:
    """The payload ``write`` stored, with the source model's tensors taken from ``weights`` by name.

    ``frozen``: the runtime modules' ``train_refs`` come back as None (no gradients), so the weights only they
    name are not looked up (a zero-compressed one is not rebuilt)."""
    with open(path / PAYLOAD, "rb") as f, warnings.catch_warnings():
        pickle.load(f)  # the index (read_weights)
        # rebuilding a pickled pytree LeafSpec trips torch's deprecation of isinstance(spec, LeafSpec)
        warnings.simplefilter("ignore", FutureWarning)
        return _Unpickler(f, weights, arrays, frozen).load()


@contextlib.contextmanager
def no_gc():
    """Python's cyclic collector paused while a load builds its objects (restored as it was on exit).

    Everything a load creates (fx nodes, modules, layers) stays reachable, so collections during it find
    nothing, but each one walks the whole heap: a process that imported torch and transformers and built
    BERT-base paid one full collection of ~0.2 s inside a 0.5 s graph-cache hit. With the collector paused
    the load triggers one young collection when it ends instead of a chain of them reaching the oldest
    generation. The full collection was the process's own, overdue (~407k objects no full collection had seen;
    a load adds ~12k): it runs at the process's next allocation-heavy step instead (often the first call)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def python_tag() -> str:
    """The interpreter version marshal's code objects are specific to."""
    return f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"


__all__ = ["encode_graph", "decode_graph", "write", "read", "read_weights", "tensor_names", "python_tag", "no_gc",
           "PAYLOAD", "TENSORS"]
