"""Runs DeepSparse and ONNX Runtime for bench_peers.py inside the peers' own venv (numpy<2, onnx<1.15).

Protocol: one JSON object per line on stdin, one reply per line on stdout.
  {"cmd": "load", "name": N, "engine": "deepsparse"|"ort"|"openvino", "path": model.onnx, "threads": T, "batch": B}
  {"cmd": "run", "name": N, "inputs": [a.npy, ...], "reps": R, "out": y.npy}  -> {"times": [s, ...]}
Each run makes one untimed call first (ORT's threads spin for ~36 ms after a call, and the engine that
ran before this one must not be charged for it), then R timed calls; the first output goes to ``out``.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")  # DeepSparse sends usage analytics otherwise

import numpy as np  # noqa: E402

ENGINES: dict = {}
# the protocol owns the real stdout; anything the engines print goes to stderr
_REPLIES = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr


def _load(engine: str, path: str, threads: int, batch: int):
    if engine == "deepsparse":
        from deepsparse import compile_model

        # DeepSparse overrides the first dimension of every input with batch_size
        eng = compile_model(path, batch_size=batch, num_cores=threads)
        return lambda xs: eng.run(xs)[0]
    if engine == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return lambda xs: sess.run(None, dict(zip(names, xs, strict=True)))[0]
    if engine == "openvino":  # optional: only when the venv has it
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads})
        return lambda xs: compiled(xs)[0]
    raise ValueError(f"unknown engine {engine!r}")


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "load":
                t = time.perf_counter()
                ENGINES[req["name"]] = _load(req["engine"], req["path"], int(req["threads"]), int(req.get("batch", 1)))
                reply = {"ok": True, "load_s": time.perf_counter() - t}
            elif req["cmd"] == "run":
                fn = ENGINES[req["name"]]
                xs = [np.load(p) for p in req["inputs"]]
                out = fn(xs)
                np.save(req["out"], np.asarray(out))
                times = []
                for _ in range(int(req["reps"])):
                    t = time.perf_counter()
                    fn(xs)
                    times.append(time.perf_counter() - t)
                reply = {"ok": True, "times": times}
            elif req["cmd"] == "versions":
                import deepsparse
                import onnxruntime

                reply = {"ok": True, "deepsparse": deepsparse.__version__, "onnxruntime": onnxruntime.__version__}
            else:
                reply = {"ok": False, "error": f"unknown cmd {req['cmd']!r}"}
        except Exception as exc:  # reported to the parent, which names the engine in its table
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _REPLIES.write(json.dumps(reply) + "\n")
        _REPLIES.flush()


if __name__ == "__main__":
    main()
