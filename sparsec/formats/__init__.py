"""sparsec.formats"""
