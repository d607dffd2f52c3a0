"""sparsec.report"""
