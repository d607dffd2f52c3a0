"""Progress bars (tqdm): shown on a terminal's stderr, silent otherwise or with SPARSEC_PROGRESS=0."""

from __future__ import annotations

import io
import sys

import torch

import sparsec
from sparsec.runtime.progress import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drain(bar) -> None:
    for _ in bar:
        bar.set_postfix_str("layer")
    bar.close()


def test_bar_on_a_terminal_only(monkeypatch):
    tty, pipe = _Tty(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", tty)
    _drain(progress(range(3), "sparsec test"))
    assert "sparsec test" in tty.getvalue()
    monkeypatch.setattr(sys, "stderr", pipe)
    _drain(progress(range(3), "sparsec test"))
    assert pipe.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", tty := _Tty())
    monkeypatch.setenv("SPARSEC_PROGRESS", "0")
    _drain(progress(range(3), "sparsec test"))
    assert tty.getvalue() == ""


def test_compile_shows_the_kernel_bar_on_a_terminal(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64)).eval()
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.mul_(torch.rand_like(m.weight) > 0.9)
    x = torch.randn(4, 64)
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", min_weight_numel=1024, force_format="csr")
    monkeypatch.undo()
    assert "sparsec compile kernels" in tty.getvalue()
    torch.testing.assert_close(cm(x), model(x))
