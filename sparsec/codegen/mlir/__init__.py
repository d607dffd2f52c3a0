"""sparsec.codegen.mlir"""
