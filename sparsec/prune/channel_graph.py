"""Channel dependency graph: which layers' channels must be pruned together for shapes to stay consistent.

The model is traced with ``torch.fx``; every tensor gets a *channel space*. A Linear/Conv creates a new
space (its output channels) and consumes its input's space; zero-preserving element-wise ops and
BatchNorm pass a space through; ``a + b`` (and ``a * b``) couples the spaces of ``a`` and ``b`` — an edge of
a networkx graph. The connected components of that graph are the groups: removing channel ``c`` of a
group removes row ``c`` of every producer, entry ``c`` of every BatchNorm and column(s) ``c`` of every
consumer. A group is *prunable* only if nothing else touches it: a model input or output, a concat, a
reshape, a LayerNorm, or any op this module does not know marks it fixed (with the reason recorded),
because guessing there would give a silently wrong model.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import networkx as nx
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from sparsec.runtime import trace_gate

PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Element-wise or spatial-only modules with f(0) = 0 per channel: a zeroed channel stays zero.
PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardtanh, nn.Mish,
                nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
PASS_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.tanh, torch.relu, torch.tanh,
                  F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
                  F.adaptive_avg_pool2d}
PASS_METHODS = {"relu", "tanh", "contiguous", "clone"}
COUPLING = {operator.add, operator.iadd, operator.sub, operator.mul, torch.add, torch.sub, torch.mul}
FLATTEN_FUNCTIONS = {torch.flatten}


@dataclass
class ChannelGroup:
    """Channels that must be removed together.

    ``producers``: modules whose output channels (Linear rows, Conv filters) form the group.
    ``norms``: BatchNorms applied to the group's channels. ``consumers``: ``(module, repeat)`` pairs whose
    input channels are the group's, each channel spanning ``repeat`` consecutive inputs (``repeat > 1``
    after a flatten of a ``(N, C, *spatial)`` tensor).
    """

    producers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    consumers: list[tuple[str, int]] = field(default_factory=list)
    channels: int = 0
    fixed: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.fixed and bool(self.producers)


class _Builder:
    def __init__(self, model: nn.Module, example_inputs: tuple) -> None:
        self.modules = dict(model.named_modules())
        with trace_gate.tracing():  # symbolic_trace patches nn.Module.__call__ process-wide
            self.gm = fx.symbolic_trace(model)
            ShapeProp(self.gm).propagate(*example_inputs)
        self.graph = nx.Graph()  # nodes: channel spaces; edges: "must share a channel mask"
        self.space: dict[fx.Node, tuple] = {}  # fx node -> (space, channel dim, repeat)
        self.module_in: dict[str, tuple] = {}
        self.module_out: dict[str, object] = {}

    def new_space(self, key: object, **attrs) -> object:
        self.graph.add_node(key, producers=[], norms=[], consumers=[], fixed=[], **attrs)
        return key

    def fix(self, node_arg: object, reason: str) -> None:
        if isinstance(node_arg, fx.Node) and node_arg in self.space:
            self.graph.nodes[self.space[node_arg][0]]["fixed"].append(reason)

    def fixed_output(self, node: fx.Node, reason: str) -> None:
        key = self.new_space(("fixed", node.name))
        self.graph.nodes[key]["fixed"].append(reason)
        self.space[node] = (key, None, 1)

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        args = list(node.args) + list(node.kwargs.values())
        return [a for a in args if isinstance(a, fx.Node) and a in self.space]

    def run(self) -> nx.Graph:
        for node in self.gm.graph.nodes:
            handler = getattr(self, f"on_{node.op}")
            handler(node)
        return self.graph

    def on_placeholder(self, node: fx.Node) -> None:
        self.fixed_output(node, f"model input {node.name}")

    def on_get_attr(self, node: fx.Node) -> None:
        self.fixed_output(node, f"attribute {node.target}")

    def on_output(self, node: fx.Node) -> None:
        for n in node.all_input_nodes:
            self.fix(n, "model output")

    def passthrough(self, node: fx.Node, src: fx.Node) -> None:
        self.space[node] = self.space[src]

    def unknown(self, node: fx.Node, what: str) -> None:
        for a in node.all_input_nodes:
            self.fix(a, f"unsupported op {what} at {node.name}")
        self.fixed_output(node, f"output of unsupported op {what} at {node.name}")

    def on_call_module(self, node: fx.Node) -> None:
        mod = self.modules[node.target]
        src = node.args[0] if node.args else None
        if isinstance(mod, PRODUCERS) and isinstance(src, fx.Node) and len(node.all_input_nodes) == 1:
            self.producer(node, str(node.target), mod, src)
        elif isinstance(mod, NORMS) and isinstance(src, fx.Node) and self.space[src][1] == 1:
            self.graph.nodes[self.space[src][0]]["norms"].append(str(node.target))
            self.passthrough(node, src)
        elif isinstance(mod, PASS_MODULES) and isinstance(src, fx.Node):
            self.passthrough(node, src)
        elif isinstance(mod, nn.Flatten) and isinstance(src, fx.Node):
            self.flatten(node, src, mod.start_dim, mod.end_dim)
        else:
            self.unknown(node, type(mod).__name__)

    def producer(self, node: fx.Node, name: str, mod: nn.Module, src: fx.Node) -> None:
        space, dim, repeat = self.space[src]
        ndim = len(node.meta["tensor_meta"].shape)
        want_dim = ndim - 1 if isinstance(mod, nn.Linear) else 1
        grouped = getattr(mod, "groups", 1) != 1
        if grouped:
            self.fix(src, f"grouped conv {name}")
        elif dim is None:
            pass  # a model input or an op's fixed output: its space is already marked fixed
        elif dim != want_dim:
            self.fix(src, f"{name} reads a dim that is not the channel dim of its input")
        else:
            self.graph.nodes[space]["consumers"].append((name, repeat))
        if name in self.module_in and self.module_in[name][0] != space:
            self.graph.add_edge(self.module_in[name][0], space)  # a reused module: one column mask
        self.module_in.setdefault(name, (space, repeat))
        out = self.module_out.get(name) or self.new_space(("out", name), channels=_out_channels(mod))
        self.module_out[name] = out
        self.graph.nodes[out]["producers"].append(name)
        if grouped:
            self.graph.nodes[out]["fixed"].append(f"grouped conv {name}")
        self.space[node] = (out, want_dim, 1)

    def flatten(self, node: fx.Node, src: fx.Node, start: int, end: int) -> None:
        space, dim, repeat = self.space[src]
        shape = src.meta["tensor_meta"].shape
        if dim == 1 and start == 1 and end in (-1, len(shape) - 1) and repeat == 1:
            self.space[node] = (space, 1, math.prod(shape[2:]))
        elif len(shape) == 2 and dim == 1:
            self.passthrough(node, src)
        else:
            self.unknown(node, "flatten")

    def on_call_function(self, node: fx.Node) -> None:
        fn = node.target
        inputs = node.all_input_nodes
        if fn in PASS_FUNCTIONS and inputs:
            self.passthrough(node, node.args[0])
        elif fn in FLATTEN_FUNCTIONS and inputs:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            self.flatten(node, node.args[0], start, end)
        elif fn in COUPLING:
            self.coupling(node)
        else:
            self.unknown(node, getattr(fn, "__name__", str(fn)))

    def on_call_method(self, node: fx.Node) -> None:
        if node.target in PASS_METHODS:
            self.passthrough(node, node.args[0])
        elif node.target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            self.flatten(node, node.args[0], start, end)
        elif node.target in ("add", "add_", "mul", "mul_", "sub", "sub_"):
            self.coupling(node)
        else:
            self.unknown(node, f".{node.target}()")

    def coupling(self, node: fx.Node) -> None:
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        others = [a for a in node.args if not isinstance(a, fx.Node)]
        shapes = {tuple(a.meta["tensor_meta"].shape) for a in tensors}
        spaces = [self.space[a] for a in tensors]
        name = getattr(node.target, "__name__", str(node.target))
        is_mul = "mul" in name
        # x + c with c != 0 makes a zeroed channel non-zero; broadcasting mixes layouts: both are fixed.
        if len(shapes) != 1 or len({(d, r) for _, d, r in spaces}) != 1 or (others and not is_mul):
            self.unknown(node, name)
            return
        first = spaces[0][0]
        for other, _, _ in spaces[1:]:
            self.graph.add_edge(first, other)
        self.space[node] = spaces[0]


def _out_channels(mod: nn.Module) -> int:
    return mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels


def channel_groups(model: nn.Module, example_inputs: tuple | torch.Tensor) -> list[ChannelGroup]:
    """Trace ``model`` on ``example_inputs`` and return its channel groups (prunable or not)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    graph = _Builder(model, tuple(example_inputs)).run()
    groups = []
    for component in nx.connected_components(graph):
        g = ChannelGroup()
        for key in sorted(component, key=str):
            data = graph.nodes[key]
            g.producers += data["producers"]
            g.norms += data["norms"]
            g.consumers += data["consumers"]
            g.fixed += data["fixed"]
            if "channels" in data:
                if g.channels and g.channels != data["channels"]:
                    g.fixed.append(f"coupled producers disagree on channel count: {g.producers}")
                g.channels = data["channels"]
        groups.append(g)
    return groups
