"""Every knob of the compiler in one typed place (Triton's knobs module is the model)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sparsec import knobs

TARGETS = ("auto", "cpu", "gpu", "interpret")


@dataclass(frozen=True)
class CompileOptions:
    """Options of ``sparse_compile``; every field has a default that suits a first try."""

    target: str = "auto"
    #: only these format labels may be chosen (plus dense); None means every registered format
    formats: tuple[str, ...] | None = None
    #: choose this format for every layer that accepts it, whatever the cost model says (for testing)
    force_format: str | None = None
    #: threads the CPU kernels split rows across; 0 means torch.get_num_threads()
    threads: int = 0
    #: capture with dynamic dimensions so other batch sizes reuse the same compiled graph
    dynamic: bool = True
    #: weights smaller than this many entries stay dense (a kernel call costs more than they do)
    min_weight_numel: int = 4096
    #: fuse bias, activation and residual into the sparse kernel
    fuse: bool = True
    #: write every stage's text (``cm.stages()`` order) to NN-stage.txt files here (default: env SPARSEC_DUMP_DIR)
    dump_dir: str | None = field(default_factory=lambda: knobs.get("dump_dir"))
    #: at most this many shape-specialized variants per compiled model before an error
    max_variants: int = 16
    #: a sparse format must be predicted at least this much faster than dense to be chosen: predictions
    #: carry noise, and a layer made slower costs more than a small win gains
    min_speedup: float = 1.1
    #: use cost-model rates measured on this machine (a ~2 s run, cached on disk); False: built-in rates
    #: (default: knob ``calibrate``, env SPARSEC_CALIBRATE)
    calibrate: bool = field(default_factory=lambda: knobs.get("calibrate"))
    #: time candidate formats on the real weights: True every distinct layer; "auto" only the layers whose
    #: prediction select marked as implausible (a sparse format for a weight of density >= 0.5) or close
    #: to dense; False none (then an implausible sparse choice falls back to dense)
    autotune: bool | str = "auto"
    #: raise InputError when an input (every call) or a weight (every compile) holds NaN or inf: sparse
    #: kernels skip zeros, so non-finite values propagate differently from eager (README, "Shapes and inputs")
    check_finite: bool = False
    #: None (compute in the model's dtype) or "int8": every float32 Linear-shaped layer runs in int8 with
    #: dynamic per-token activation scales and per-output-channel weight scales (CSR or dense, CPU only;
    #: sparsec/targets/cpu/int8_linear.py); the report shows each layer's quantization error
    quantize: str | None = None
    #: with ``quantize``: a layer whose measured int8 error (max |y_int8 - y_fp32| / max |y_fp32| of its
    #: output on the example inputs) exceeds this runs in float32 instead, and the report says so; None
    #: keeps every layer int8. 1.5%: BERT-base's encoder layers measure 0.3-1.1%, its pooler (one token,
    #: tanh) 1.8%, which alone took the model's output error past 2% (benchmarks/bench_lowp.py)
    quantize_max_error: float | None = 0.015

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target {self.target!r} is not one of {TARGETS}")
        if self.min_speedup <= 0:
            raise ValueError(f"min_speedup must be > 0, got {self.min_speedup}")
        if self.autotune not in (True, False, "auto"):
            raise ValueError(f"autotune must be True, False or 'auto', got {self.autotune!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {self.quantize!r}")
        if self.quantize is not None and self.target in ("gpu", "interpret"):
            raise NotImplementedError(f"quantize={self.quantize!r} runs on the CPU only (target {self.target!r})")
        if self.quantize_max_error is not None and not self.quantize_max_error > 0:
            raise ValueError(f"quantize_max_error must be > 0 or None, got {self.quantize_max_error}")
