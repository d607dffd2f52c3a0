"""Level-map parsing and the generic packer: every map round-trips through pack/unpack."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec.errors import FormatError
from sparsec.formats.levels import pack_levels, parse_level_map, unpack_levels

MAPS = [
    "(i, j) -> (i : dense, j : compressed)",
    "(i, j) -> (j : dense, i : compressed)",
    "(i, j) -> (i : compressed, j : compressed)",
    "(i, j) -> (i : compressed(nonunique), j : singleton(soa))",
    "(i, j) -> (i floordiv 2 : dense, j floordiv 3 : compressed, i mod 2 : dense, j mod 3 : dense)",
    "(i, j) -> (i : dense, j : dense)",
]


@settings(max_examples=40, deadline=None)
@given(
    lmap=st.sampled_from(MAPS),
    rows=st.integers(1, 9),
    cols=st.integers(1, 10),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_round_trip(lmap, rows, cols, density, seed):
    lm = parse_level_map(lmap)
    rows, cols = lm.padded_shape((rows, cols))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, cols)).astype(np.float32) * (rng.random((rows, cols)) < density)
    bufs = pack_levels(a, lm)
    assert list(bufs) == lm.buffer_names() or set(bufs) == set(lm.buffer_names())
    np.testing.assert_array_equal(unpack_levels(bufs, lm, a.shape), a)


def test_structured_round_trip_and_rejection():
    lm = parse_level_map("(i, j) -> (i : dense, j floordiv 4 : dense, j mod 4 : structured[2, 4])")
    a = np.array([[1, 0, 2, 0, 0, 0, 0, 3], [0, 0, 0, 0, 4, 5, 0, 0]], dtype=np.float32)
    bufs = pack_levels(a, lm)
    assert bufs["values"].size == 2 * 2 * 2  # two values per group of four, padding included
    crd = bufs["crd2"].reshape(-1, 2)
    assert (crd[:, 0] < crd[:, 1]).all(), "stored coordinates must increase within a group"
    np.testing.assert_array_equal(unpack_levels(bufs, lm, a.shape), a)
    with pytest.raises(FormatError, match="more than 2 nonzeros"):
        pack_levels(np.ones((1, 8), np.float32), lm)


@pytest.mark.parametrize(
    "bad",
    ["i -> j", "(i, j) -> (i : dense, j : fancy)", "(i, j) -> (i : dense)", "(i, j) -> (k : dense, j : compressed)"],
)
def test_bad_maps_raise(bad):
    with pytest.raises(FormatError):
        parse_level_map(bad)


def test_fully_zero_and_fully_dense():
    lm = parse_level_map(MAPS[0])
    for a in (np.zeros((3, 5), np.float32), np.arange(1, 16, dtype=np.float32).reshape(3, 5)):
        np.testing.assert_array_equal(unpack_levels(pack_levels(a, lm), lm, a.shape), a)
