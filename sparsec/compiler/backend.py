"""The same compiler as a ``torch.compile`` backend: ``torch.compile(model, backend="sparsec")``.

Dynamo hands over each captured graph with its example inputs. Current Dynamo passes a module's
parameters as graph inputs, not constants, so the backend binds every input that is an
``nn.Parameter`` back into a module as a parameter; the compiler then sees constant weights it can
analyze and pack, and the compiled graph takes only the remaining inputs. The name "sparsec" is
registered through the ``torch_dynamo_backends`` entry point (pyproject.toml);
``backend=sparsec.backend`` works without it.
"""

from __future__ import annotations

import torch

from sparsec.compiler.api import sparse_compile


class _BoundGraph(torch.nn.Module):
    """A Dynamo graph with its parameter inputs held as parameters (so export sees constants)."""

    def __init__(self, gm: torch.fx.GraphModule, inputs: tuple, param_positions: list[int]) -> None:
        super().__init__()
        self.gm = gm
        self.positions = param_positions
        self.count = len(inputs)
        for k, i in enumerate(param_positions):
            self.register_parameter(f"p{k}", inputs[i])

    def forward(self, *acts):
        """Call the graph with parameters re-inserted at their positions."""
        args, acts_iter, k = [], iter(acts), 0
        for i in range(self.count):
            if k < len(self.positions) and self.positions[k] == i:
                args.append(getattr(self, f"p{k}"))
                k += 1
            else:
                args.append(next(acts_iter))
        return self.gm(*args)


def sparsec_backend(gm: torch.fx.GraphModule, example_inputs: list, **options):
    """Compile one Dynamo graph (CPU by default); returns a callable with the graph's signature."""
    # torch.compile(..., options={...}) hands its options dict over as one keyword
    options = {**(options.pop("options", None) or {}), **options}
    inputs = tuple(example_inputs)
    if any(not isinstance(x, torch.Tensor) for x in inputs):
        return gm.forward  # symbolic sizes passed as ints: leave such graphs to torch
    positions = [i for i, x in enumerate(inputs) if isinstance(x, torch.nn.Parameter)]
    bound = _BoundGraph(gm, inputs, positions)
    acts = tuple(x for i, x in enumerate(inputs) if i not in set(positions))
    compiled = sparse_compile(bound, acts, target=options.pop("target", "cpu"), **options)
    keep = [i for i in range(len(inputs)) if i not in set(positions)]

    def run(*args):
        return compiled(*(args[i] for i in keep))

    run.compiled = compiled  # for inspection: run.compiled.report()
    return run
