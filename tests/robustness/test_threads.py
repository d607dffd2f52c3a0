"""Two threads calling one compiled model get the same results as eager (and as one thread)."""

from __future__ import annotations

import threading

import torch

import sparsec
from tests.conftest import assert_close
from tests.models import zoo


def _hammer(cm, inputs: list, results: dict, key: int) -> None:
    # grad mode is per thread: these calls run with grad enabled (the training path's first-call setup
    # races with the other threads' inference calls)
    try:
        results[key] = [cm(*x) for x in inputs]
    except Exception as exc:  # surfaced by the main thread's assertion
        results[key] = exc


def test_two_threads_share_one_compiled_model():
    model, inputs = zoo.bert(hidden=64, inter=128, seq=12)
    cm = sparsec.sparse_compile(model, inputs, target="cpu", force_format="csr", threads=2, calibrate=False)
    cnn, (img,) = zoo.cnn(width=8)
    ccm = sparsec.sparse_compile(cnn, (img,), target="cpu", force_format="csr", min_weight_numel=0,
                                 calibrate=False)
    work = {
        0: (cm, [zoo.bert_inputs(2, 12, seed=s) for s in range(8)]),
        1: (cm, [zoo.bert_inputs(3, 9, seed=100 + s) for s in range(8)]),  # another shape at the same time
        2: (ccm, [(torch.randn(2, 3, 32, 32),) for _ in range(8)]),
        3: (ccm, [(torch.randn(1, 3, 32, 32),) for _ in range(8)]),
    }
    results: dict = {}
    with torch.no_grad():
        threads = [threading.Thread(target=_hammer, args=(c, xs, results, k)) for k, (c, xs) in work.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for key, (c, xs) in work.items():
            assert not isinstance(results[key], Exception), results[key]
            eager = model if c is cm else cnn
            for x, got in zip(xs, results[key], strict=True):
                want = eager(*x)
                if hasattr(want, "last_hidden_state"):
                    got, want = got.last_hidden_state, want.last_hidden_state
                assert_close(got, want)


def test_a_compile_in_one_thread_does_not_break_runs_in_another():
    """Compiling (torch.export, which patches nn.Module.__call__ process-wide while it traces) in one thread
    while another keeps running a compiled model: both give eager's results (runtime/trace_gate.py makes
    the runs wait for the trace)."""
    model, inputs = zoo.bert(hidden=64, inter=128, seq=12)
    cm = sparsec.sparse_compile(model, inputs, target="cpu", force_format="csr", threads=2, calibrate=False)
    xs = [zoo.bert_inputs(2, 12, seed=s) for s in range(4)]
    results: dict = {0: []}
    compiling = threading.Event()
    compiling.set()

    def run() -> None:  # keeps calling until the other thread's compiles are over
        try:
            with torch.no_grad():
                while compiling.is_set():
                    results[0].extend((x, cm(*x)) for x in xs)
        except Exception as exc:  # surfaced by the main thread's assertion
            results[0] = exc

    def compile_others() -> None:
        try:
            for width in (8, 12):
                cnn, (img,) = zoo.cnn(width=width)
                other = sparsec.sparse_compile(cnn, (img,), target="cpu", force_format="csr", min_weight_numel=0,
                                               calibrate=False)
                with torch.no_grad():
                    assert_close(other(img), cnn(img))
            results[1] = True
        except Exception as exc:  # surfaced by the main thread's assertion
            results[1] = exc
        finally:
            compiling.clear()

    threads = [threading.Thread(target=run), threading.Thread(target=compile_others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[1] is True, results[1]
    assert not isinstance(results[0], Exception), results[0]
    assert results[0], "the running thread made no call"
    with torch.no_grad():
        for x, got in results[0]:
            assert_close(got.last_hidden_state, model(*x).last_hidden_state)
