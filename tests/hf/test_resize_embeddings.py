"""``resize_token_embeddings`` changes which ids the model accepts (the id check reads the table)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import NO_DROPOUT, TINY  # noqa: E402


def _model() -> object:
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model("mega", **dict(TINY, **NO_DROPOUT, is_decoder=True, bidirectional=False))
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def test_a_grown_vocabulary_accepts_the_new_ids() -> None:
    model = _model()
    grown = TINY["vocab_size"] + 7
    model.resize_token_embeddings(grown)
    ids = torch.tensor([[3, grown - 1, 5]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 3, grown)


def test_a_shrunk_vocabulary_refuses_the_dropped_ids_naming_the_new_size() -> None:
    model = _model()
    model.resize_token_embeddings(20)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=20\); found values in \[3, 30\]"):
        model(torch.tensor([[3, 30]]))
