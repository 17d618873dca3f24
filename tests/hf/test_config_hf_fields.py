"""The HF-only fields of MegaConfig are checked by type when a model is built, as the core fields are.

A config.json string such as ``"false"`` is truthy: before these checks it silently switched an
option on (``add_lm_hidden_dense_layer="false"`` built the dense layer).
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.hf

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, intermediate_size=24, nffn_hidden_size=20,
            shared_representation_size=8, ema_projection_size=4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("add_lm_hidden_dense_layer", "false", "add_lm_hidden_dense_layer must be true or false, got 'false' \\(str\\)"),
        ("use_cache", 1, "use_cache must be true or false, got 1 \\(int\\)"),
        ("tie_word_embeddings", "no", "tie_word_embeddings must be true or false"),
        ("classifier_dropout", 1.5, "classifier_dropout must be null or a probability in \\[0, 1\\], got 1.5"),
        ("classifier_dropout", "0.1", "classifier_dropout must be null or a probability"),
        ("bos_token_id", "0", "bos_token_id must be null or an integer token id"),
        ("eos_token_id", [2, "3"], "eos_token_id must be null or an integer token id"),
    ],
)
def test_bad_hf_only_fields_are_refused_by_name(field: str, value: Any, message: str) -> None:
    from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM

    config = MegaConfig(**TINY, is_decoder=True, bidirectional=False, **{field: value})
    with pytest.raises(ValueError, match=message):
        MegaForCausalLM(config)


@pytest.mark.parametrize(
    "overrides",
    [dict(classifier_dropout=None), dict(classifier_dropout=0), dict(eos_token_id=[2, 3]), dict(bos_token_id=None),
     dict(add_lm_hidden_dense_layer=False, use_cache=False, tie_word_embeddings=False)],
)
def test_good_hf_only_fields_build(overrides: dict[str, Any]) -> None:
    from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM

    model = MegaForCausalLM(MegaConfig(**TINY, is_decoder=True, bidirectional=False, **overrides))
    assert (model.dense is not None) == model.config.add_lm_hidden_dense_layer


@pytest.mark.parametrize("head", ["MegaForCausalLM", "MegaForMaskedLM"])
@pytest.mark.parametrize("saved_dense", [True, False], ids=["saved-with-dense", "saved-without-dense"])
def test_a_dense_layer_that_disagrees_with_the_weights_is_an_error(tmp_path, head: str, saved_dense: bool) -> None:
    import mega_plugin.adapters.hf as hf
    from mega_plugin.adapters.hf.loading import CheckpointMismatchError

    cls = getattr(hf, head)
    causal = dict(is_decoder=True, bidirectional=False) if head == "MegaForCausalLM" else {}
    cls(hf.MegaConfig(**TINY, **causal, add_lm_hidden_dense_layer=saved_dense)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=f"add_lm_hidden_dense_layer: .* load with add_lm_hidden_dense_layer={saved_dense}"):
        cls.from_pretrained(tmp_path, add_lm_hidden_dense_layer=not saved_dense)
    with pytest.raises(RuntimeError):  # what transformers' callers catch for mismatches
        cls.from_pretrained(tmp_path, add_lm_hidden_dense_layer=not saved_dense)
    assert (cls.from_pretrained(tmp_path).dense is not None) == saved_dense
    hf.MegaModel.from_pretrained(tmp_path)  # a change of task stays transformers' warning


def test_a_base_checkpoint_into_an_lm_head_stays_a_change_of_task(tmp_path) -> None:
    import mega_plugin.adapters.hf as hf

    hf.MegaModel(hf.MegaConfig(**TINY)).save_pretrained(tmp_path)
    assert hf.MegaForMaskedLM.from_pretrained(tmp_path).dense is not None
