"""The stages of a compile users can read with ``cm.ir(name)``, in pipeline order, and their texts.

A compile's stages (``cm.stages()``): ``fx`` (the graph torch.export captured), ``calibrate`` (the cost
model's rates and where they came from), one stage per pass of ``pipeline.PASSES`` (the graph after
that pass, each analyzed node annotated with what sparsec knows of it then: facts, format and why, fused
epilogue, runtime module; the pass's own summary on top), ``lowered`` (the Python the runtime calls), then
the codegen stages of the target: ``mlir`` and ``llvm`` on the CPU, ``triton``, ``ttgir`` and ``ptx``
(compiled for sm_90, no GPU needed) on the GPU targets. Pass stages are rendered as the compile runs
(the graph changes under the next pass); codegen stages on first request. A stage with nothing in it
says why instead of being empty.
"""

from __future__ import annotations

import os
import sys

from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext
from sparsec.targets import TARGET_NAMES, Target, get_target


def _producers() -> dict[str, list[str]]:
    """Codegen stage -> the names of the targets that produce it, in TARGET_NAMES order."""
    out: dict[str, list[str]] = {}
    for name in TARGET_NAMES:
        for stage in get_target(name).codegen_stages:
            out.setdefault(stage, []).append(name)
    return out


#: every codegen stage of every target (``mlir``, ``llvm`` on the CPU; ``triton``, ``ttgir``, ``ptx`` on
#: the GPU targets, compiled for sm_90 on request), in TARGET_NAMES order
CODEGEN_STAGES = tuple(_producers())


def stage_names(pass_names: list[str] | tuple[str, ...], target: Target | None) -> tuple[str, ...]:
    """Every stage of a compile for ``target`` whose passes are ``pass_names``, in pipeline order (with
    ``target=None``: every target's codegen stages)."""
    codegen = CODEGEN_STAGES if target is None else target.codegen_stages
    return ("fx", "calibrate", *pass_names, "lowered", *codegen)


def layers_of(gm: GraphModule) -> list:
    """The SparseLayer of every analyzed node (lowered or dense), in graph order."""
    return [n.meta["sparsec"] for n in gm.graph.nodes if "sparsec" in n.meta]


def layer_comment(layer, indent: str = "        ") -> list[str]:
    """What sparsec knows of one matmul-like node so far, as graph comments (facts, format, epilogue)."""
    lines = [f"{indent}# sparsec: {layer.name} n={layer.n} {layer.facts.summary()}"]
    if layer.reason:  # set by select (and autotune, lower, gather): the format is chosen
        lines.append(f"{indent}#   format={layer.format} ({layer.reason})")
    if layer.measured:
        timed = ", ".join(f"{k}={v * 1e6:.0f}us" for k, v in layer.measured.items())
        lines.append(f"{indent}#   measured: {timed}")
    epilogue = [n.name for n in layer.fused_nodes]
    if epilogue or layer.activation:
        parts = ([f"activation={layer.activation}"] if layer.activation else []) + (
            ["residual"] if layer.residual_index is not None else [])
        lines.append(f"{indent}#   fused epilogue: {' + '.join(parts) or '-'} (absorbs {epilogue})")
    if layer.module_name:
        lines.append(f"{indent}#   runs {layer.module_name} ({type(layer.module).__name__})")
    return lines


def graph_text(gm: GraphModule) -> str:
    """The graph, each analyzed node followed by its sparsec comment."""
    lines = ["graph():"]
    for node in gm.graph.nodes:
        text = node.format_node()
        if text:
            lines.append("    " + text)
        layer = node.meta.get("sparsec")
        if layer is not None:
            lines.extend(layer_comment(layer))
    return "\n".join(lines)


def _doc_line(fn) -> str:
    """The first line of the docstring of the module a pass function lives in (its one-line purpose)."""
    doc = (getattr(sys.modules.get(fn.__module__), "__doc__", None) or "").strip()
    line = doc.splitlines()[0] if doc else fn.__module__
    name = fn.__module__.rsplit(".", 1)[-1]
    return line[len(name) + 2:] if line.startswith(name + ": ") else line


def pass_stage_text(name: str, fn, index: int, total: int, summary: str, gm: GraphModule) -> str:
    """A pass's stage: its purpose, its summary (what it did, as comments), then the graph after it."""
    head = [f"# stage {name} (pass {index} of {total}) - {_doc_line(fn)}"]
    body = summary.strip().splitlines() or [f"{name}: nothing to do in this graph"]
    head += [f"# {line}" for line in body]
    return "\n".join(head) + "\n" + graph_text(gm)


def fx_stage_text(gm: GraphModule) -> str:
    """The captured graph, before any pass."""
    return "# stage fx - the graph torch.export captured, before any pass\n" + str(gm.graph)


def calibrate_stage_text(ctx: CompileContext, status: str) -> str:
    """Where the cost model's rates came from (``status``), then the rates themselves."""
    rates = "\n".join(f"#   {k} = {v:g}" for k, v in ctx.machine.as_dict().items())
    return f"# stage calibrate - the cost model's rates for target {ctx.target.name!r}\n# {status}\n{rates}"


def lowered_stage_text(gm: GraphModule, runtime_note: str | None = None) -> str:
    """The Python code of the lowered graph (what a call runs), with how calls run it on top."""
    head = "# stage lowered - the code the runtime calls (sparse layers are call_module of runtime modules)\n"
    if runtime_note:
        head += f"# {runtime_note}\n"
    return head + gm.code.strip("\n").rstrip() + "\n"


def codegen_stage_text(gm: GraphModule, stage: str, target: Target) -> str:
    """One codegen stage's text for a compiled graph (``target.codegen_text``); what is missing and why
    when it has none."""
    if stage not in target.codegen_stages:
        other = " or ".join(repr(name) for name in _producers().get(stage, ()))
        return (f"// stage {stage}: produced by target {other}; this model targets {target.name!r}, whose kernels "
                f"are in {', '.join(repr(s) for s in target.codegen_stages)}")
    layers = layers_of(gm)
    text = target.codegen_text(layers, stage)
    if text:
        return text
    return f"// stage {stage}: no kernel was compiled - {_why_no_kernels(layers, target)}"


def _why_no_kernels(layers: list, target: Target) -> str:
    if not layers:
        return "the graph has no matmul-like node with a constant weight (see ir('analyze'))"
    lowered = [layer for layer in layers if layer.format != "dense"]
    if not lowered:
        return f"every one of the {len(layers)} layer(s) stayed dense (ir('select') says why for each)"
    kinds = sorted({type(layer.module).__name__ for layer in lowered})
    return (f"the {len(lowered)} sparse layer(s) run as {', '.join(kinds)}, which has no "
            f"{target.kernel_language} kernel")


def dump(directory: str, texts: list[tuple[str, str]]) -> list[str]:
    """Write each (stage, text) to ``directory/NN-stage.txt`` (NN: pipeline order); returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, (stage, text) in enumerate(texts):
        path = os.path.join(directory, f"{i:02d}-{stage}.txt")
        with open(path, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        paths.append(path)
    return paths
