"""``MegaForCausalLM`` with the original language models' options: final norm, adaptive input, adaptive softmax.

What is checked here is the HF face: ``logits`` are normalised log-probabilities, ``loss`` is
their mean negative log-likelihood at the labels (computed here from the logits with
``torch.nn.functional.nll_loss``, a path independent of the per-cluster loss), Trainer's
``num_items_in_batch`` and ``shift_labels``, a train step, ``generate()`` against the argmax of
full forwards, the cache against the full forward, save/load, config validation and the
config.json layout. The arithmetic against the original code is in
tests/converters/test_original_lm.py and tests/core/test_adaptive.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import TINY  # noqa: E402
from mega_plugin.adapters.hf import MegaConfig  # noqa: E402
from mega_plugin.adapters.hf.modeling_lm import MegaForCausalLM  # noqa: E402

pytestmark = pytest.mark.hf

VOCAB = TINY["vocab_size"]
CAUSAL = dict(TINY, is_decoder=True, bidirectional=False, add_lm_hidden_dense_layer=False, tie_word_embeddings=False)
VARIANTS = {
    "wt103-like": dict(adaptive_input_cutoffs=[10, 30], adaptive_softmax_cutoffs=[10, 30], tie_adaptive_weights=True,
                       tie_adaptive_proj=True, adaptive_input_factor=2, adaptive_softmax_factor=2,
                       add_final_norm=True, final_norm_affine=False, normalization_type="layernorm",
                       scale_embeddings=True, use_chunking=True, chunk_size=4, adaptive_softmax_dropout_prob=0.2),
    "untied-softmax-only": dict(adaptive_softmax_cutoffs=[20], adaptive_softmax_factor=4, add_final_norm=True),
    "tied-weights-own-projections": dict(adaptive_input_cutoffs=[15], adaptive_softmax_cutoffs=[15],
                                         tie_adaptive_weights=True, use_chunking=True, chunk_size=5),
    "adaptive-input-post-norm": dict(adaptive_input_cutoffs=[8, 16, 40], adaptive_input_factor=1,
                                     adaptive_softmax_cutoffs=[8, 16, 40], adaptive_softmax_factor=1,
                                     tie_adaptive_weights=True, tie_adaptive_proj=True,
                                     normalize_before_mega=False, normalize_before_ffn=False),
    "enwik8-like": dict(add_final_norm=True, final_norm_affine=False, normalization_type="layernorm",
                        scale_embeddings=True, tie_word_embeddings=True, use_chunking=True, chunk_size=4),
}


def model(name: str, **changes: Any) -> MegaForCausalLM:
    torch.manual_seed(0)
    built = MegaForCausalLM(MegaConfig(**{**CAUSAL, **VARIANTS[name], **changes}))
    with torch.no_grad():  # random weights everywhere (the initialisation zeroes some)
        for parameter in built.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return built.eval()


def tokens(batch: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(2, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", VARIANTS)
def test_loss_is_the_nll_of_the_logits(name: str) -> None:
    lm, ids = model(name), tokens()
    labels = ids.clone()
    labels[0, 3:5] = -100
    with torch.no_grad():
        out = lm(ids, labels=labels)
    log_probs = out.logits.log_softmax(-1)
    if lm.adaptive_softmax is not None:  # logits are already normalised
        torch.testing.assert_close(out.logits, log_probs, atol=1e-5, rtol=1e-5)
    expected = F.nll_loss(log_probs[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        summed = lm(ids, labels=labels, num_items_in_batch=torch.tensor(7)).loss
        shifted = lm(ids, shift_labels=F.pad(labels[:, 1:], (0, 1), value=-100)).loss
    count = int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(summed, expected * count / 7, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shifted, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_train_step_moves_every_weight_and_lowers_the_loss(name: str) -> None:
    lm, ids = model(name), tokens()
    with torch.no_grad():
        before = lm(ids, labels=ids).loss
    lm.train()  # dropout on, the adaptive softmax's included
    optimizer = torch.optim.SGD(lm.parameters(), lr=0.1)
    lm(ids, labels=ids).loss.backward()
    untouched = [n for n, p in lm.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not untouched, untouched
    optimizer.step()
    lm.eval()
    with torch.no_grad():
        assert lm(ids, labels=ids).loss < before


@pytest.mark.parametrize("name", VARIANTS)
def test_cached_decoding_and_generate_follow_the_full_forward(name: str) -> None:
    lm, prompt = model(name), tokens(2, 3)
    generated = lm.generate(prompt, max_new_tokens=7, do_sample=False, eos_token_id=None, pad_token_id=1)
    with torch.no_grad():
        for step in range(prompt.shape[1], generated.shape[1]):
            full = lm(generated[:, :step]).logits[:, -1]
            assert torch.equal(full.argmax(-1), generated[:, step])
        cache, steps = None, []
        for position in range(generated.shape[1]):
            out = lm(generated[:, position : position + 1], past_key_values=cache, use_cache=True)
            cache, steps = out.past_key_values, steps + [out.logits]
        full = lm(generated).logits
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_save_and_load_round_trip(name: str, tmp_path: Path) -> None:
    lm, ids = model(name), tokens()
    lm.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    reloaded = MegaConfig.from_pretrained(tmp_path)
    for field, value in VARIANTS[name].items():
        assert getattr(reloaded, field) == value, field
        assert saved.get(field, value) == value, field  # HF-only defaults may be left out (4.57)
    loaded, info = MegaForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids).logits, lm(ids).logits, atol=0, rtol=0)


def test_default_config_json_has_none_of_the_new_fields(tmp_path: Path) -> None:
    from mega_plugin.formats.hf import WRITTEN_ONLY_WHEN_SET, hf_config_dict

    written = hf_config_dict(MegaConfig(**CAUSAL).to_core(), architectures=["MegaForCausalLM"])
    assert not set(WRITTEN_ONLY_WHEN_SET) & set(written)
    lm = MegaForCausalLM(MegaConfig(**CAUSAL))
    assert lm.adaptive_softmax is None and lm.mega.final_norm is None and lm.lm_head is not None


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(adaptive_softmax_cutoffs=[30, 10]), "adaptive_softmax_cutoffs must be strictly ascending"),
        (dict(adaptive_input_cutoffs=[10, 70]), "at most vocab_size=60"),
        (dict(tie_adaptive_proj=True), "tie_adaptive_proj=True needs tie_adaptive_weights=True"),
        (dict(adaptive_softmax_cutoffs=[10], adaptive_softmax_factor="4"), "adaptive_softmax_factor must be a number"),
        (dict(adaptive_softmax_dropout_prob=-0.1), "adaptive_softmax_dropout_prob must be a probability"),
        (dict(add_final_norm="false"), "add_final_norm must be true or false"),
    ],
)
def test_bad_config_fields_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MegaForCausalLM(MegaConfig(**{**CAUSAL, **changes}))


def test_labels_outside_the_vocabulary_are_named() -> None:
    lm = model("wt103-like")
    with pytest.raises(ValueError, match="labels must be -100 or lie in"):
        lm(tokens(), labels=torch.full((2, 9), VOCAB))


def test_resize_token_embeddings_is_refused_with_adaptive_input() -> None:
    with pytest.raises(ValueError, match="adaptive_input_cutoffs"):
        model("wt103-like").resize_token_embeddings(70)


@pytest.mark.parametrize("head", ["MegaForCausalLM", "MegaForMaskedLM"])
def test_a_full_head_tied_to_an_adaptive_input_is_refused(head: str) -> None:
    from mega_plugin.adapters.hf import modeling_lm

    config = MegaConfig(**{**CAUSAL, "adaptive_input_cutoffs": [10], "tie_word_embeddings": True})
    with pytest.raises(ValueError, match="tie_word_embeddings=True .* adaptive_input_cutoffs"):
        getattr(modeling_lm, head)(config)
    untied = getattr(modeling_lm, head)(MegaConfig(**{**CAUSAL, "adaptive_input_cutoffs": [10]}))
    with torch.no_grad():
        assert untied.eval()(tokens()).logits.shape == (2, 9, VOCAB)  # a full head of its own


def test_masked_lm_refuses_an_adaptive_softmax() -> None:
    from mega_plugin.adapters.hf.modeling_lm import MegaForMaskedLM

    with pytest.raises(ValueError, match="adaptive_softmax_cutoffs is supported by MegaForCausalLM only"):
        MegaForMaskedLM(MegaConfig(**{**TINY, "adaptive_softmax_cutoffs": [10]}))
