"""The digits experiment's static sparse training through the compiled kernels matches eager masked training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "digits"))

pytest.importorskip("sklearn")


def test_compiled_static_training_matches_eager_accuracy():
    from common import load_data, steps_per_epoch
    from methods import sparse_from_scratch

    import sparsec.prune as prune

    torch.set_num_threads(1)
    data = load_data()
    steps = 6 * steps_per_epoch(data)  # both full batches and the short last one (a second shape)
    runs = {c: sparse_from_scratch(data, 0, prune.StaticSparsifier(0.9, distribution="erk", seed=0), 0.1, steps,
                                   compiled=c) for c in (False, True)}
    eager, compiled = runs[False], runs[True]
    assert compiled.sparsity == pytest.approx(eager.sparsity, abs=1e-9)  # the pattern held
    assert eager.test > 50  # it learned something
    # fp32 sums in another order may flip a borderline sample at most: 1 of ~360
    assert abs(compiled.test - eager.test) <= 100 / len(data.y_test) + 1e-9
    assert abs(compiled.val - eager.val) <= 100 / len(data.y_val) + 1e-9


@pytest.mark.parametrize("cls", ["RigL", "SET"])
def test_compiled_dynamic_training_matches_eager(cls):
    """RigL/SET through the compiled kernels: the same accuracy, the same final sparsity, over updates."""
    from common import load_data, steps_per_epoch
    from methods import sparse_from_scratch

    import sparsec.prune as prune

    torch.set_num_threads(1)
    data = load_data()
    steps = 3 * steps_per_epoch(data)
    runs = {c: sparse_from_scratch(data, 0, getattr(prune, cls)(0.9, end_step=steps - 5, update_interval=10,
                                                                distribution="erk", seed=0), 0.1, steps, compiled=c)
            for c in (False, True)}
    eager, compiled = runs[False], runs[True]
    assert compiled.sparsity == pytest.approx(eager.sparsity, abs=1e-9)
    assert eager.test > 50
    assert abs(compiled.test - eager.test) <= 2 * 100 / len(data.y_test) + 1e-9
