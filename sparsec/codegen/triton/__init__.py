"""sparsec.codegen.triton"""
