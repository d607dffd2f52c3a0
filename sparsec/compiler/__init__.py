"""sparsec.compiler"""
