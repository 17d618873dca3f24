"""``static_decoder(MegaForCausalLM)``: logits against transformers 4.57's MEGA, tokens against ``generate()``.

The oracle is the deprecated ``MegaForCausalLM`` of transformers 4.57 (the fairseq2 environment)
over the whole sequence at once: its logits at every position must equal the static decoder's
after that position, for every causal configuration of the parity grid (without truncation,
which static decoding refuses). In every environment, the decoder's greedy tokens must equal
``model.generate``'s, with each kind of head (linear, dense + linear, adaptive softmax).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Final

import pytest
import torch

pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
from mega_hf_helpers import (  # noqa: E402
    HEADS_BY_ID,
    REFERENCE_PACKAGE,
    build_reference,
    ours_from_reference,
    parity_grid,
    tiny_causal_config,
)
from mega_plugin.adapters.hf import MegaForCausalLM, static_decoder  # noqa: E402

TOLERANCE: Final = dict(atol=1e-5, rtol=1e-5)
LENGTH: Final = 16
PROMPT: Final = 3


def has_reference() -> bool:
    try:
        return importlib.util.find_spec(REFERENCE_PACKAGE) is not None
    except ModuleNotFoundError:
        return False


CAUSAL_CASES: Final = {case.id: case for case in parity_grid() if case.causal}


@pytest.mark.reference
@pytest.mark.skipif(not has_reference(), reason="needs transformers 4.57 (the deprecated MEGA)")
@pytest.mark.parametrize("case_id", list(CAUSAL_CASES), ids=list(CAUSAL_CASES))
def test_logits_match_transformers_reference(case_id: str) -> None:
    case = CAUSAL_CASES[case_id]
    kwargs: dict[str, Any] = dict(case.config_kwargs(), truncation=None, use_cache=False)
    head = HEADS_BY_ID["CausalLM"]
    reference = build_reference(head, kwargs)
    ours = ours_from_reference(head, reference, kwargs).eval()
    tokens = torch.randint(3, kwargs["vocab_size"], (2, LENGTH), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(input_ids=tokens).logits[:, PROMPT - 1 : -1]  # (B, L - PROMPT, vocabulary)
    decoder = static_decoder(ours, max_length=LENGTH)
    logits = [decoder.prefill(tokens[:, :PROMPT])]
    logits += [decoder.step(tokens[:, position]) for position in range(PROMPT, LENGTH - 1)]
    torch.testing.assert_close(torch.stack(logits, dim=1), expected, **TOLERANCE)


HEAD_KINDS: Final = {
    "linear": dict(),
    "dense": dict(add_lm_hidden_dense_layer=True),
    "adaptive-softmax": dict(adaptive_softmax_cutoffs=[10, 20], add_lm_hidden_dense_layer=False),
    "unchunked-final-norm": dict(use_chunking=False, add_final_norm=True),
}


@pytest.mark.parametrize("kind", list(HEAD_KINDS), ids=list(HEAD_KINDS))
def test_greedy_equals_generate(kind: str) -> None:
    options: dict[str, Any] = dict(use_chunking=True, chunk_size=4, add_lm_hidden_dense_layer=False)
    options.update(HEAD_KINDS[kind])
    torch.manual_seed(0)
    model = MegaForCausalLM(tiny_causal_config(**options)).eval()
    prompt = torch.randint(3, 40, (3, 5), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(prompt)
    mask[1, :2] = 0  # left padding
    new = 11
    with torch.no_grad():
        expected = model.generate(
            prompt, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=1
        )
    decoder = model.static_decoder(max_length=prompt.shape[1] + new)  # the method: static_decoder(model)
    assert torch.equal(decoder.greedy(prompt, max_new_tokens=new, attention_mask=mask), expected)


def test_static_decoder_needs_a_causal_lm() -> None:
    from mega_plugin.adapters.hf import MegaModel

    with pytest.raises(TypeError, match="MegaForCausalLM"):
        static_decoder(MegaModel(tiny_causal_config()))  # type: ignore[arg-type]


def test_lora_adapters_are_applied() -> None:
    """PEFT's LoRA wrappers are called as modules: the logits equal the adapted model's forward,
    which differs from the base model's."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = MegaForCausalLM(tiny_causal_config(use_chunking=True, chunk_size=4)).eval()
    lora = peft.LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, init_lora_weights=False,
        target_modules=["v_proj", "mx_proj", "h_proj", "fc1", "fc2", "lm_head"],
    )
    model = peft.get_peft_model(base, lora).eval()
    tokens = torch.randint(3, 40, (2, 11), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(input_ids=tokens).logits[:, PROMPT - 1 : -1]
        with model.disable_adapter():
            plain = model(input_ids=tokens).logits[:, PROMPT - 1 : -1]
    assert (expected - plain).abs().max() > 1e-3  # the adapters matter
    decoder = static_decoder(base, max_length=tokens.shape[1])  # the wrapped modules live in base
    logits = [decoder.prefill(tokens[:, :PROMPT])]
    logits += [decoder.step(tokens[:, position]) for position in range(PROMPT, tokens.shape[1] - 1)]
    torch.testing.assert_close(torch.stack(logits, dim=1), expected, **TOLERANCE)
