"""Sweep: every transformers family torch.export captures, pruned three ways, compiled == eager on two inputs.

Pruning is plain torch masking (``sparsec.models.hf_zoo.prune``: Linear, Conv1D and Conv2d weights, along
their reduction dimension), what a new user does; the format is forced per pattern so each family really
runs sparse kernels (at hidden 64 the cost model would keep most layers dense). The families torch.export
cannot capture are strict xfails with export's reason (docs/models.md): a torch that captures them fails
the xfail, and the family moves to the sweep.
"""

from __future__ import annotations

import pytest
import torch

import sparsec
from sparsec.errors import CaptureError
from sparsec.models.hf_zoo import ALL, PRUNINGS, SWEEP, UNCAPTURABLE, build, inputs, output_tensors, prune
from tests.conftest import assert_close

pytestmark = pytest.mark.filterwarnings("ignore")


def _compile_and_compare(family: str, how: str) -> None:
    model = build(family)
    assert prune(model, how) > 0
    args, kwargs = inputs(family, 0)
    cm = sparsec.sparse_compile(model, args, kwargs, target="cpu", calibrate=False, autotune=False,
                                force_format=PRUNINGS[how], min_weight_numel=0, dynamic=ALL[family].dynamic)
    formats = [r.format for r in cm.report().layers]
    assert PRUNINGS[how] in formats, cm.report()
    for seed in (0, 1):
        args, kwargs = inputs(family, seed)
        with torch.no_grad():
            got, want = output_tensors(cm(*args, **kwargs)), output_tensors(model(*args, **kwargs))
        assert len(got) == len(want) > 0
        for g, w in zip(got, want, strict=True):
            assert_close(g, w)


@pytest.mark.parametrize("how", list(PRUNINGS))
@pytest.mark.parametrize("family", list(SWEEP))
def test_family_compiles_and_matches_eager(family, how):
    _compile_and_compare(family, how)


@pytest.mark.parametrize("family", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, raises=CaptureError, reason=why))
    for name, (_, why) in UNCAPTURABLE.items()
])
def test_uncapturable_family(family):
    _compile_and_compare(family, "nm2:4")
