"""The CPU backend: MLIR-compiled kernels run through ctypes, its runtime modules, calibration and threads."""
