"""Cubic and cosine schedules, sparsity validation, layer density distributions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsec.prune as prune
from sparsec.prune.schedule import check_sparsity


def test_cubic_matches_zhu_gupta_formula():
    s = prune.CubicSchedule(final=0.9, start_step=10, end_step=110, initial=0.1)
    assert s(0) == 0.1 and s(10) == 0.1
    assert s(110) == 0.9 and s(500) == 0.9
    assert s(60) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5 ** 3)
    values = [s(t) for t in range(0, 120)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    # Front-loaded: more than half of the pruning happens in the first third of the ramp.
    assert s(43) - 0.1 > 0.5 * (0.9 - 0.1)


@given(st.floats(0, 0.99), st.floats(0, 0.99), st.integers(0, 50), st.integers(1, 200), st.integers(0, 300))
@settings(max_examples=50, deadline=None)
def test_cubic_stays_between_initial_and_final(s0, s1, t0, n, t):
    v = prune.cubic_sparsity(t, initial=s0, final=s1, start_step=t0, end_step=t0 + n)
    assert min(s0, s1) - 1e-12 <= v <= max(s0, s1) + 1e-12


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="end_step"):
        prune.cubic_sparsity(0, initial=0, final=0.5, start_step=10, end_step=10)
    for bad in (1.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"in \[0, 1\)"):
            check_sparsity(bad)
    with pytest.raises(TypeError):
        check_sparsity("0.5")
    with pytest.raises(ValueError, match="alpha"):
        prune.cosine_update_fraction(0, alpha=0.0, end_step=10)


def test_cosine_update_fraction():
    assert prune.cosine_update_fraction(0, alpha=0.3, end_step=100) == pytest.approx(0.3)
    assert prune.cosine_update_fraction(50, alpha=0.3, end_step=100) == pytest.approx(0.15)
    assert prune.cosine_update_fraction(100, alpha=0.3, end_step=100) == 0.0


@given(st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300)), min_size=1, max_size=5),
       st.floats(0.0, 0.99))
@settings(max_examples=60, deadline=None)
def test_erk_keeps_global_budget_and_caps_at_dense(shapes, sparsity):
    named = {f"l{i}": s for i, s in enumerate(shapes)}
    dens = prune.layer_densities(named, sparsity, "erk")
    numel = {n: s[0] * s[1] for n, s in named.items()}
    kept = sum(dens[n] * numel[n] for n in named)
    assert kept == pytest.approx((1 - sparsity) * sum(numel.values()), rel=1e-6)
    assert all(0 < d <= 1.0 + 1e-12 for d in dens.values())


def test_erk_gives_small_layers_more_density_and_uniform_is_flat():
    shapes = {"big": (256, 256), "head": (10, 256)}
    erk = prune.layer_densities(shapes, 0.9, "erk")
    assert erk["head"] > erk["big"]
    assert prune.layer_densities(shapes, 0.9, "uniform") == {"big": pytest.approx(0.1), "head": pytest.approx(0.1)}
    with pytest.raises(ValueError, match="unknown distribution"):
        prune.layer_densities(shapes, 0.9, "gaussian")
