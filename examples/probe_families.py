"""Compile many transformers families, each pruned three ways, and print a table of what became sparse.

Every model is a tiny config with random weights (hidden 64, 2 layers; nothing is downloaded) from
``sparsec.models.hf_zoo``. Each is pruned by plain torch masking (90% unstructured, 2:4 along the inputs,
a quarter of the 16x16 blocks kept), compiled with the matching format forced, and checked against eager
on two inputs. A cell reads ``sparse/layers err``: how many of the report's layers run the forced format,
and the largest error relative to the output's scale (above 1e-4 the cell says WRONG). A family
torch.export cannot capture gets one row with export's reason. Needs ``pip install transformers``.

    python examples/probe_families.py                      # the probed families (~5 min on 2 cores)
    python examples/probe_families.py --sweep              # also the test sweep's families
    python examples/probe_families.py --families gpt2,reformer
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch

import sparsec
from sparsec.errors import CaptureError
from sparsec.models.hf_zoo import (
    ALL,
    PROBED,
    PRUNINGS,
    SWEEP,
    UNCAPTURABLE,
    build,
    inputs,
    output_tensors,
    prune,
)

#: relative error above which a cell is flagged (tests/conftest.assert_close's tolerance)
TOLERANCE = 1e-4


def probe_one(family: str, how: str) -> str:
    """One cell of the table: compile ``family`` pruned by ``how`` and compare with eager on two inputs."""
    model = build(family)
    prune(model, how)
    fmt = PRUNINGS[how]
    args, kwargs = inputs(family, 0)
    cm = sparsec.sparse_compile(model, args, kwargs, target="cpu", calibrate=False, autotune=False,
                                force_format=fmt, min_weight_numel=0, dynamic=ALL[family].dynamic)
    report = cm.report()
    err = 0.0
    for seed in (0, 1):
        args, kwargs = inputs(family, seed)
        with torch.no_grad():
            got, want = output_tensors(cm(*args, **kwargs)), output_tensors(model(*args, **kwargs))
        for g, w in zip(got, want, strict=True):
            err = max(err, float((g - w).abs().max() / w.abs().max().clamp_min(1e-12)))
    sparse = sum(r.format == fmt for r in report.layers)
    cell = f"{sparse}/{len(report.layers)} {err:.0e}"
    return cell if err <= TOLERANCE else f"WRONG {cell}"


def main() -> None:
    """Parse the command line, probe every family asked for, print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help="comma-separated names (default: the probed and uncapturable ones)")
    parser.add_argument("--sweep", action="store_true", help="also the families the test sweep compiles")
    opts = parser.parse_args()
    names = opts.families.split(",") if opts.families else [*(SWEEP if opts.sweep else []), *PROBED, *UNCAPTURABLE]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(ALL)}")
    warnings.filterwarnings("ignore")  # transformers' config warnings about the tiny vocabularies
    logging.getLogger("torch.fx.experimental.symbolic_shapes").setLevel(logging.ERROR)  # graphs of failed exports
    print(f"| family | {' | '.join(PRUNINGS)} | seconds |\n|---|{'---|' * len(PRUNINGS)}---|", flush=True)
    for name in names:
        t0, cells = time.perf_counter(), []
        for how in PRUNINGS:
            try:
                cells.append(probe_one(name, how))
            except CaptureError as exc:  # the same for every pruning: one row says it
                cells = [f"cannot capture: {str(exc).splitlines()[0]}"] + ["-"] * (len(PRUNINGS) - 1)
                break
            except Exception as exc:  # a crash is a finding: show it and go on with the next cell
                cells.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
        print(f"| {name} | {' | '.join(cells)} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
