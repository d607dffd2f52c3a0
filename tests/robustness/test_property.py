"""Property: random small graphs of linear / activation / residual add, with random sparsity patterns,
densities and formats, compile to the same function as eager."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

import sparsec
from tests.conftest import assert_close, random_weight

DIMS = (16, 32, 48)  # few distinct shapes, so the drawn graphs share compiled kernels
ACTS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


class RandomNet(nn.Module):
    """Runs a program of ('linear', i) / ('act', name) / ('add', j) steps; ('add', j) adds value j."""

    def __init__(self, program: list, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.program = program
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        values = [x]
        for op, arg in self.program:
            h = values[-1]
            if op == "linear":
                h = self.layers[arg](h)
            elif op == "act":
                h = ACTS[arg](h)
            else:
                h = h + values[arg]
            values.append(h)
        return values[-1]


@st.composite
def nets(draw):
    d = draw(st.sampled_from(DIMS))
    widths, program, layers = [d], [], []
    for step in range(draw(st.integers(1, 5))):
        op = "linear" if step == 0 else draw(st.sampled_from(["linear", "linear", "act", "add"]))
        if op == "linear":
            out = draw(st.sampled_from(DIMS))
            lin = nn.Linear(widths[-1], out, bias=draw(st.booleans()))
            pattern = draw(st.sampled_from(["unstructured", "nm2:4", "block8"]))
            density = draw(st.floats(0.02, 0.9))
            with torch.no_grad():
                lin.weight.copy_(random_weight(out, widths[-1], density, draw(st.integers(0, 999)), pattern))
            program.append(("linear", len(layers)))
            layers.append(lin)
            widths.append(out)
        elif op == "act":
            program.append(("act", draw(st.sampled_from(sorted(ACTS)))))
            widths.append(widths[-1])
        else:
            same = [i for i, w in enumerate(widths[:-1]) if w == widths[-1]]
            if not same:
                continue
            program.append(("add", draw(st.sampled_from(same))))
            widths.append(widths[-1])
    return RandomNet(program, layers).eval(), d


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=nets(), batch=st.sampled_from([(1,), (5,), (2, 3)]),
       fmt=st.sampled_from([None, "csr", "coo", "bsr8x8", "nm2:4"]), seed=st.integers(0, 999))
def test_random_graph_compiles_to_eager(net, batch, fmt, seed):
    model, d = net
    x = torch.randn(*batch, d, generator=torch.Generator().manual_seed(seed))
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format=fmt, min_weight_numel=0, calibrate=False)
    with torch.no_grad():
        assert_close(cm(x), model(x))
        x2 = torch.randn(3, *batch[1:], d, generator=torch.Generator().manual_seed(seed + 1))
        assert_close(cm(x2), model(x2))
    event(f"sparse layers: {sum(r.format != 'dense' for r in cm.report().layers)}")
    if fmt in ("csr", "coo") and model.layers:
        assert all(r.format == fmt for r in cm.report().layers)
