"""Tests of sparsec.codegen.triton (Triton interpreter on the CPU, AOT compile for sm_80/sm_90)."""
