"""What the passes share while compiling one model: options, example shapes, and each stage's text."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sparsec.compiler.options import CompileOptions
from sparsec.formats.cost import DEFAULT_MACHINE, Machine
from sparsec.targets import Target, get_target


@dataclass
class CompileContext:
    """Passed to every pass as ``ctx``; passes add facts to nodes, and stage texts here."""

    options: CompileOptions
    root: torch.nn.Module  # the user's model, whose parameters the graph reads
    #: the backend the passes ask (sparsec/targets/); a name given here ("cpu", ...) is resolved to its Target
    target: Target | str = "cpu"
    #: stage name -> text (sparsec/compiler/stages.py); the pipeline fills it, ``cm.ir(name)`` reads it
    stages: dict[str, str] = field(default_factory=dict)
    #: pass name -> what that pass did, one line per change (the top of its stage text); each pass writes its own
    summaries: dict[str, str] = field(default_factory=dict)
    layers: list = field(default_factory=list)  # report rows, filled by select and lower
    unsupported: list[str] = field(default_factory=list)  # ops left to torch, for the report
    notes: list[str] = field(default_factory=list)  # constants seen but kept dense, and why (the report's notes)
    machine: Machine = DEFAULT_MACHINE  # the cost model's rates (calibrated on this machine)
    #: layer name -> format from a saved artifact; select keeps these instead of choosing
    pinned_formats: dict[str, str] = field(default_factory=dict)
    shrunk: bool = False  # set by shrink when it removed channels (the graph then differs from the model)
    #: captured in train mode (batch-statistics BatchNorm, live dropout): fold_bn must leave BatchNorm alone
    training: bool = False
    example_inputs: tuple = ()  # the flattened example inputs (passes that run the graph once read them)

    def __post_init__(self) -> None:
        if isinstance(self.target, str):
            self.target = get_target(self.target)
