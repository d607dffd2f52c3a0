"""One compiled variant of a model: the captured program, its lowered graph and everything the passes
decided. CompiledModel (sparsec/compiler/compiled_model.py) holds one per input-shape specialization; an
artifact (sparsec/compiler/artifact.py) and the graph cache restore one."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree

from sparsec.compiler.capture import Captured
from sparsec.compiler.context import CompileContext
from sparsec.report.report import Report


@dataclass
class Variant:
    captured: Captured
    module: torch.fx.GraphModule
    ctx: CompileContext
    report: Report
    specs: list  # per flattened input: (shape with None for dynamic dims, ranges) or a constant
    out_spec: object = None  # how the graph's flat outputs nest (the graph itself takes and returns flat lists)
    trainable: bool = False  # every gradient reaches the model's own tensors (sparsec.runtime.training)
    #: None: captured in eval mode (or the model has no train-dependent behaviour); else the training flags
    #: (root, then each Dropout/BatchNorm) it was captured with: CompiledModel runs it only in that mode
    mode: tuple | None = None

    def __call__(self, flat: list):
        """Run the graph on flattened inputs and nest its outputs like the model's."""
        return pytree.tree_unflatten(list(self.module(*flat)), self.out_spec)


__all__ = ["Variant"]
