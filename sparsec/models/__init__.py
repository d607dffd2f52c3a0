"""Small built-in models (random weights from configs) for the demo, tests and benchmarks."""

from sparsec.models.builtin import MLP, TransformerBlock, demo_models

__all__ = ["MLP", "TransformerBlock", "demo_models"]
