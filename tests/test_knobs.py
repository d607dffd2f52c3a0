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
