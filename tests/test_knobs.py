"""The knobs module: one table, env variables read per lookup, typed scoped overrides, no stray reads."""

from __future__ import annotations

import pathlib
import re

import pytest

from sparsec import knobs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_scope_overrides_env_which_overrides_default(monkeypatch):
    monkeypatch.delenv("SPARSEC_CACHE", raising=False)
    assert knobs.get("cache") is True
    monkeypatch.setenv("SPARSEC_CACHE", "0")
    assert knobs.get("cache") is False
    with knobs.scope(cache=True):
        assert knobs.get("cache") is True
        with knobs.scope(cache=False):
            assert knobs.get("cache") is False
        assert knobs.get("cache") is True
    assert knobs.get("cache") is False
    with knobs.scope(column_tile=7):
        assert knobs.get("column_tile") == 7
    assert knobs.get("column_tile") == 4096


def test_bad_names_and_types_are_refused():
    with pytest.raises(KeyError, match="known knobs"):
        knobs.get("no_such_knob")
    with pytest.raises(KeyError, match="no_such_knob"):
        with knobs.scope(no_such_knob=1):
            pass
    with pytest.raises(TypeError, match="column_tile"):
        with knobs.scope(column_tile="big"):
            pass


def test_every_env_read_goes_through_knobs_and_the_doc_lists_every_knob():
    stray = []
    for path in (ROOT / "sparsec").rglob("*.py"):
        if path.name == "knobs.py" or "bench" in path.parts:  # bench passes a whole env to a child process
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"os\.environ|os\.getenv", line):
                stray.append(f"{path.relative_to(ROOT)}:{i}")
    assert not stray, f"environment read outside sparsec/knobs.py: {stray}"
    doc = (ROOT / "docs" / "knobs.md").read_text()
    for name, knob in knobs.KNOBS.items():
        assert f"`{name}`" in doc and (knob.env is None or knob.env in doc), name
    assert knobs.table() in doc  # the table is regenerated, not hand-edited


def test_no_tuning_constant_is_left_as_a_module_global():
    """Thresholds, margins, rounds, tile sizes are knobs: no module of the compiler defines one as a global."""
    pattern = re.compile(r"^(ROUNDS|RETRIES|CHUNK|\w*(GUARD|BAND|SPREAD|FRACTION|BUDGET|MARGIN|THRESHOLD|MAX_\w+|MIN_\w+"
                         r"|_TILE|_AGE\w*))\s*[:=]", re.M)
    # part of the generated code, not a tuning: the kernel cache keys on the code generator's source, so a
    # knob here would let a cached kernel built with another value stand in silently
    allowed = {"sparsec/codegen/mlir/emit_rowvec.py: MAX_ACCUMULATORS", "sparsec/codegen/mlir/emit_bsrvec.py: MAX_TILE",
               "sparsec/codegen/mlir/emit_int8_vnni.py: MAX_ACC"}
    found = []
    for sub in ("passes", "targets", "compiler", "runtime", "codegen", "formats", "report"):
        for path in (ROOT / "sparsec" / sub).rglob("*.py"):
            found += [f"{path.relative_to(ROOT)}: {m.group(1)}" for m in pattern.finditer(path.read_text())]
    found = [f for f in found if f not in allowed]
    assert not found, f"tuning constants outside sparsec/knobs.py: {found}"


def test_moved_constants_are_read_through_knobs():
    from sparsec.codegen.triton.launch_config import csr_config
    from sparsec.report import energy

    assert csr_config(4096, 4096, 2).block_n == 128  # enough programs to fill the SMs twice
    with knobs.scope(gpu_num_sms=10**6):  # never enough: the N tile shrinks to its floor for more programs
        assert csr_config(4096, 4096, 2).block_n == 16

    assert energy.estimate_uj(1e6, 0) == 20.0
    with knobs.scope(pj_per_flop=1.0, pj_per_byte=0.0):
        assert energy.estimate_uj(1e6, 1e6) == 1.0
