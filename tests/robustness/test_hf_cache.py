"""HF decoders in their default config return a DynamicCache, which torch.export cannot return: the
CaptureError must name the cache and the remedy, not blame control flow (issue 11, item 4)."""

from __future__ import annotations

import pytest
import torch
import transformers as T

import sparsec
from sparsec.errors import CaptureError
from tests.conftest import assert_close

pytestmark = pytest.mark.filterwarnings("ignore")
OPTS = dict(target="cpu", force_format="csr", calibrate=False, autotune=False, min_weight_numel=0)


def _tiny_llama() -> torch.nn.Module:
    cfg = T.LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                        intermediate_size=64, vocab_size=64)
    assert cfg.use_cache  # the default this test is about
    torch.manual_seed(0)
    return T.LlamaModel(cfg).eval()


def test_default_use_cache_names_the_cache_and_the_remedy():
    model = _tiny_llama()
    ids = torch.randint(0, 64, (2, 6))
    with pytest.raises(CaptureError) as info:
        sparsec.sparse_compile(model, (ids,), **OPTS)
    msg = str(info.value)
    assert "DynamicCache" in msg and "use_cache = False" in msg and "use_cache=False" in msg, msg
    assert "TorchExportableModuleWithStaticCache" in msg, msg
    assert "control flow" not in msg.split("What to do:")[1], msg  # the cause is the output, not a branch


def test_the_remedy_compiles():
    model = _tiny_llama()
    ids = torch.randint(0, 64, (2, 6))
    cm = sparsec.sparse_compile(model, (ids,), {"use_cache": False}, **OPTS)
    with torch.no_grad():
        assert_close(cm(ids, use_cache=False).last_hidden_state, model(ids, use_cache=False).last_hidden_state)
    model.config.use_cache = False
    cm = sparsec.sparse_compile(model, (ids,), **OPTS)
    with torch.no_grad():
        assert_close(cm(ids).last_hidden_state, model(ids).last_hidden_state)


class _CachedButBroken(torch.nn.Module):
    """A model whose config asks for a cache and whose trace fails before any output exists."""

    def __init__(self) -> None:
        super().__init__()
        self.config = T.LlamaConfig(use_cache=True)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent branch
            return self.lin(x)
        return x


def test_cache_config_is_mentioned_when_export_fails_elsewhere():
    with pytest.raises(CaptureError) as info:
        sparsec.sparse_compile(_CachedButBroken().eval(), (torch.randn(2, 4),), **OPTS)
    msg = str(info.value)
    assert "data-dependent" in msg and "use_cache is True" in msg, msg
