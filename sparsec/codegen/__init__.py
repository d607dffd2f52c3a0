"""sparsec.codegen"""
