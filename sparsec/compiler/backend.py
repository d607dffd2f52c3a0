"""The same compiler as a ``torch.compile`` backend: ``torch.compile(model, backend="sparsec")``.

Dynamo hands over each captured graph with its example inputs; sparsec exports that graph and
compiles it like a model. The name "sparsec" is registered through the ``torch_dynamo_backends``
entry point (pyproject.toml); ``backend=sparsec.backend`` works without it.
"""

from __future__ import annotations

import torch

from sparsec.compiler.api import sparse_compile


def sparsec_backend(gm: torch.fx.GraphModule, example_inputs: list, **options):
    """Compile one Dynamo graph for the CPU; returns a callable with the graph's signature."""
    inputs = tuple(example_inputs)
    if any(not isinstance(x, torch.Tensor) for x in inputs):
        return gm.forward  # symbolic sizes passed as ints: nothing sparse to do that export would accept
    compiled = sparse_compile(gm, inputs, target=options.pop("target", "cpu"), **options)

    def run(*args):
        return compiled(*args)

    run.compiled = compiled  # for inspection: run.compiled.report()
    return run
