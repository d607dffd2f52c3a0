"""The federated-averaging example (examples/federated_digits.py) in a small configuration."""

from __future__ import annotations

import importlib
import math

import pytest


@pytest.fixture(scope="module")
def fed():
    return importlib.import_module("examples.federated_digits")


def test_federated_digits_sparse_uploads(fed):
    args = ["--clients", "3", "--rounds", "10", "--quiet"]
    logs = {mode: fed.main([*args, "--mode", mode]) for mode in fed.MODES}
    dense, masked, topk = logs["dense"], logs["masked"], logs["topk"]
    for log in logs.values():
        assert len(log["acc"]) == 10
    assert dense["acc"][-1] >= 0.9
    assert masked["acc"][-1] >= 0.85  # a 90%-sparse model, lossless uploads
    assert topk["acc"][-1] >= dense["acc"][-1] - 0.03  # 5% of the entries, with error feedback
    # bytes: dense FedAvg sends every entry; masked only the kept ones; top-k 5% as (value, index) pairs
    n = dense["n"]
    model = fed.make_model("masked", 0.9, 0)
    assert dense["ratio"] == 1.0
    assert masked["ratio"] == pytest.approx(fed.kept_positions(model).numel() / n)
    assert masked["ratio"] < 0.15
    assert topk["ratio"] == pytest.approx(2 * math.ceil(0.05 * n) / n)
    assert dense["upload_bytes"] == 10 * 3 * 4 * n


def test_federated_digits_rejects_bad_flags(fed):
    with pytest.raises(SystemExit):
        fed.main(["--clients", "0"])
    with pytest.raises(SystemExit):
        fed.main(["--mode", "sparse"])
