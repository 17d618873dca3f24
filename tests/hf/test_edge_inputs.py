"""Edge inputs through every HF head: empty batches, length-0 inputs, narrow integer ids,
``inputs_embeds`` of another dtype.

Correctness bar: an empty batch gives outputs with a 0 batch axis (and a backward pass) in
grad mode; a length-0 input gives (B, 0, ...) from per-token heads and a ``ValueError`` naming the
first-token reader from the others; int8/int16/uint8 ids give exactly the int64 result;
``inputs_embeds`` of another floating dtype raises a ``TypeError`` naming both dtypes, except
float32/16 under autocast, which give the model's own result within autocast's tolerance.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from mega_hf_helpers import HEADS, NO_DROPOUT, NUM_CHOICES, TINY, Head, build_ours, head_kwargs  # noqa: E402

CHUNK = 4
SETTINGS: dict[str, Any] = {
    **TINY,
    **NO_DROPOUT,
    "use_chunking": True,
    "chunk_size": CHUNK,
    "add_token_type_embeddings": True,
}
FIRST_TOKEN_HEADS = {"Model", "SeqClsRegression", "SeqClsSingleLabel", "SeqClsMultiLabel", "MultipleChoice"}
"""Heads that read the first token (pooler, classification head): nothing to read at length 0."""


def settings_for(head: Head) -> dict[str, Any]:
    if head.id == "CausalLM":
        return {**SETTINGS, "is_decoder": True, "bidirectional": False}
    return dict(SETTINGS)


def build(head: Head) -> torch.nn.Module:
    return build_ours(head, head_kwargs(head, settings_for(head))).train()  # grad mode, dropout 0


def ids_of_shape(head: Head, batch: int, length: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    shape = (batch, NUM_CHOICES, length) if head.id == "MultipleChoice" else (batch, length)
    return torch.randint(3, SETTINGS["vocab_size"], shape).to(dtype)


def tensors_of(output: Any) -> list[torch.Tensor]:
    return [value for value in output.values() if isinstance(value, torch.Tensor)]


@pytest.mark.parametrize("head", HEADS, ids=[head.id for head in HEADS])
def test_an_empty_batch_gives_empty_outputs_and_a_backward_pass(head: Head) -> None:
    model = build(head)
    output = model(input_ids=ids_of_shape(head, 0, 6))
    tensors = tensors_of(output)
    assert tensors and all(tensor.shape[0] == 0 for tensor in tensors)
    sum(tensor.sum() for tensor in tensors if tensor.requires_grad).backward()
    assert model.get_input_embeddings().weight.grad is not None


@pytest.mark.parametrize("head", HEADS, ids=[head.id for head in HEADS])
def test_a_length_0_input_gives_empty_tokens_or_names_the_first_token_reader(head: Head) -> None:
    model = build(head)
    ids = ids_of_shape(head, 2, 0)
    if head.id in FIRST_TOKEN_HEADS:
        with pytest.raises(ValueError, match="reads the first token, but the input has length 0"):
            model(input_ids=ids)
        return
    output = model(input_ids=ids)
    tensors = tensors_of(output)
    assert tensors and all(tensor.shape[:2] == (2, 0) for tensor in tensors)
    sum(tensor.sum() for tensor in tensors if tensor.requires_grad).backward()


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.uint8, torch.int32], ids=str)
@pytest.mark.parametrize("head", HEADS[:3], ids=[head.id for head in HEADS[:3]])
def test_narrow_integer_ids_give_the_int64_result(head: Head, dtype: torch.dtype) -> None:
    model = build(head).eval()
    ids = ids_of_shape(head, 2, 7)
    types = torch.randint(0, SETTINGS["type_vocab_size"], ids.shape)
    with torch.no_grad():
        expected = model(input_ids=ids, token_type_ids=types)
        narrow = model(input_ids=ids.to(dtype), token_type_ids=types.to(dtype))
    for mine, wide in zip(tensors_of(narrow), tensors_of(expected)):
        assert torch.equal(mine, wide)


def test_out_of_range_narrow_ids_still_name_the_field() -> None:
    model = build(HEADS[2]).eval()
    ids = torch.full((1, 4), 100, dtype=torch.uint8)  # vocab 60: 100 fits uint8 but not the table
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=60\); found values in \[100, 100\]"):
        model(input_ids=ids)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_inputs_embeds_of_another_dtype_names_both_dtypes(dtype: torch.dtype) -> None:
    model = build(HEADS[2]).eval()
    embeds = model.get_input_embeddings()(ids_of_shape(HEADS[2], 2, 5)).detach()
    with pytest.raises(TypeError, match=rf"inputs_embeds has dtype {dtype} but the model's word embeddings are torch.float32"):
        model(inputs_embeds=embeds.to(dtype))
    with pytest.raises(TypeError, match="inputs_embeds must be a floating-point tensor"):
        model(inputs_embeds=embeds.long())


def test_float64_inputs_embeds_into_a_float64_model_and_under_autocast() -> None:
    model = build(HEADS[2]).eval()
    ids = ids_of_shape(HEADS[2], 2, 5)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        wide = model.double()(inputs_embeds=model.get_input_embeddings()(ids)).logits
        assert wide.dtype == torch.float64 and (wide - expected.double()).abs().max().item() <= 1e-5
        model.float()
        embeds = model.get_input_embeddings()(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(inputs_embeds=embeds.bfloat16()).logits
            with pytest.raises(TypeError, match="inputs_embeds has dtype torch.float64"):
                model(inputs_embeds=embeds.double())  # autocast never casts float64
    assert (autocast.float() - expected).abs().max().item() <= 0.1 * expected.abs().max().item()
