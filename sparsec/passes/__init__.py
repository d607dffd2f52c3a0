"""Graph passes. Each module holds one pass, ``run(gm, ctx) -> gm``; the order lives in compiler/pipeline.py."""
