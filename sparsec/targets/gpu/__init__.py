"""The GPU backend: Triton kernels on a CUDA GPU ("gpu") or Triton's interpreter on the CPU ("interpret")."""
