"""Multi-process tests of sparsec.distributed's DDP comm hooks (gloo over the loopback interface).

One set of processes per world size runs every scenario (tests/distributed/scenarios.py); the tests
assert on what each rank returned. Each run has a timeout and its processes are joined or terminated.
"""

from __future__ import annotations

import math

import pytest
import torch

from sparsec.distributed import MaskedState, TopKState, average_growth_gradients
from sparsec.distributed.local import run_local
from sparsec.errors import InputError
from sparsec.prune.masks import get_mask
from tests.distributed import scenarios

TOL = {"rtol": 1e-5, "atol": 1e-6}  # float summation order differs between the hooks


@pytest.fixture(scope="module")
def two():
    return run_local(scenarios.run_all, 2, ("masked", "frozen", "rigl", "topk", "compiled"), timeout=300)


@pytest.fixture(scope="module")
def four():
    return run_local(scenarios.run_all, 4, ("masked",), timeout=120)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **TOL, msg=name)


@pytest.mark.parametrize("world", [2, 4])
def test_masked_hook_matches_default_allreduce(world, two, four):
    ranks = two if world == 2 else four
    for r in ranks:
        _same(r["masked"]["masked"]["params"], r["masked"]["default"]["params"])
        assert r["masked"]["masked"]["mixed"]  # masked, dense and bias parameters shared a bucket
    for r in ranks[1:]:  # every rank holds the same parameters and, after sync_masks, the same masks
        _same(r["masked"]["masked"]["params"], ranks[0]["masked"]["masked"]["params"])


@pytest.mark.parametrize("world", [2, 4])
def test_masked_bytes_follow_the_masks(world, two, four):
    for r in two if world == 2 else four:
        run = r["masked"]["masked"]
        # exactly 4 bytes per kept weight entry and per unmasked entry, also after the masks changed
        assert run["sent"] == run["expected"]
        assert len(set(run["expected"])) > 1  # the mask change changed the count
    model = scenarios.masked_mlp(density=0.1)
    dense = 4 * sum(p.numel() for p in model.parameters())
    kept = sum(int(get_mask(m).mask.sum()) for m in (model[0], model[2]))
    density = (kept + sum(p.numel() for p in model.parameters()) - model[0].weight.numel()
               - model[2].weight.numel()) / (dense / 4)
    assert run["sent"][0] <= 1.05 * density * dense


def test_frozen_zeros_of_plain_weights(two):
    for r in two:
        masked, default = r["frozen"]["masked"], r["frozen"]["default"]
        _same(masked["params"], default["params"])
        assert torch.all(masked["params"]["0.weight"][masked["zeros"]] == 0)  # the zeros stayed zeros
        assert masked["density"] < 0.35
        numel = sum(p.numel() for p in masked["params"].values())
        assert masked["sent"] == 4 * 4 * round(masked["density"] * numel)  # 4 steps


def test_rigl_masks_stay_identical_across_ranks(two):
    for r in two:
        run = r["rigl"]["masked"]
        assert run["moved"] > 0  # RigL did move weights
        assert run["sent"] == run["expected"]
        _same(run["params"], r["rigl"]["default"]["params"])
    for name, mask in two[0]["rigl"]["masked"]["masks"].items():
        assert torch.equal(mask, two[1]["rigl"]["masked"]["masks"][name]), name
    _same(two[0]["rigl"]["masked"]["params"], two[1]["rigl"]["masked"]["params"])


def test_topk_reaches_dense_accuracy_at_one_percent(two):
    dense, topk = two[0]["topk"]["dense"], two[0]["topk"]["topk"]
    assert topk["acc"] >= dense["acc"] - 0.01, (topk["acc"], dense["acc"])
    assert dense["acc"] > 0.9
    assert topk["steps"] == len(topk["sent"])
    assert topk["dense_bytes"] == 4 * topk["numel"] * topk["steps"]
    warm = topk["sent"][20:]  # after the 20 warm-up steps: the target, <= 3% of the dense bytes
    assert sum(warm) <= 0.03 * 4 * topk["numel"] * len(warm)


def test_topk_warmup_and_bytes_per_step(two):
    topk = two[0]["topk"]["topk"]
    n = topk["numel"]
    ratios = topk["ratios"]
    assert ratios[0] == 0.25 and all(a > b for a, b in zip(ratios[:20], ratios[1:21], strict=True))
    assert set(ratios[20:]) == {0.01}
    # one bucket once DDP has rebuilt them: (value, index) pairs, 4 + 4 bytes each, k = ceil(ratio * n)
    for step in range(1, len(ratios)):
        assert topk["sent"][step] == 8 * math.ceil(ratios[step] * n), step
    assert topk["sent"][-1] <= 0.021 * 4 * n


def test_topk_error_feedback_conserves_the_gradient(two):
    # what every rank put in (gradient + residual) = what was applied (world x mean) + what stays behind
    world = len(two)
    for i in range(3):
        total = sum(r["topk"]["topk"]["ef"][i][0] for r in two)
        kept = sum(r["topk"]["topk"]["ef"][i][1] for r in two)
        applied = two[0]["topk"]["topk"]["ef"][i][2]
        torch.testing.assert_close(applied * world + kept, total, **TOL)
        assert all(torch.equal(r["topk"]["topk"]["ef"][i][2], applied) for r in two)  # same on each rank
        assert all(r["topk"]["topk"]["ef"][i][1].count_nonzero() > 0 for r in two)  # a residual is kept


def test_compiled_sparse_model_under_masked_hook(two):
    for r in two:
        comp, eager = r["compiled"]["compiled"], r["compiled"]["eager"]
        assert comp["formats"] == ["csr"]
        _same(comp["params"], eager["params"])
        assert comp["sent"] == eager["sent"] and comp["density"] < 0.25


def test_bad_inputs_raise():
    with pytest.raises(InputError):
        TopKState(ratio=0)
    with pytest.raises(InputError):
        TopKState(ratio=0.01, warmup_steps=-1)
    with pytest.raises(InputError):
        MaskedState("not a model")
    with pytest.raises(InputError):
        average_growth_gradients(object())
    s = TopKState(ratio=0.01, warmup_steps=10, warmup_ratio=0.25)
    assert s.current_ratio() == 0.25
    s.step = 10
    assert s.current_ratio() == 0.01
