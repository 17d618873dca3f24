"""Cross-attention parity with the oracle: transformers 4.57.6's deprecated MEGA decoder.

For every attention function (softmax, laplace, relu2), both relative biases (simple,
rotary) and decoder-side chunking on and off, a reference ``MegaModel`` / ``MegaForCausalLM``
with ``add_cross_attention=True`` and seeded random weights is loaded into ours with
``strict=True`` (zero missing or unexpected keys, both directions), then both run on a
right-padded decoder batch with a right-padded encoder output of a *different length* than
the decoder. Compared, at real decoder positions, with max abs diff <= 1e-5 (fp32):
outputs, hidden states, self- and cross-attention weights, the LM loss, and the gradients of
a loss over real positions with respect to every parameter and to the encoder states.

Secondary options (norm type, pre/post norm, NFFN, token types, activation) rotate over
the grid. The reference runs uncached (its cached path is checked in
``test_cross_attention_cache.py`` against the formula).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor

pytest.importorskip("transformers")
pytest.importorskip("transformers.models.deprecated.mega", reason="needs transformers 4.57 (the deprecated MEGA)")

import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
from mega_hf_helpers import (  # noqa: E402
    ATTENTIONS,
    BIASES,
    CHUNK,
    HEADS_BY_ID,
    NO_DROPOUT,
    TINY,
    assert_close,
    build_ours,
    build_reference,
    load_strict,
    make_batch,
    ours_from_reference,
    weighted_scalar,
)

pytestmark = [pytest.mark.reference]

NORMS = ("scalenorm", "layernorm", "batchnorm", "rmsnorm")
ACTIVATIONS = ("silu", "gelu", "relu", "linear")


@dataclass(frozen=True)
class CrossCase:
    attention: str
    bias: str
    chunked: bool
    index: int

    @property
    def id(self) -> str:
        return f"{self.attention}-{self.bias}-{'chunk8' if self.chunked else 'nochunk'}"

    @property
    def lengths(self) -> tuple[int, int]:
        """(decoder length, encoder length): always different from each other."""
        if not self.chunked:
            return 12, 9
        # The reference needs a decoder length that is a multiple of the chunk; the simple bias
        # with chunking covers positions up to chunk_size only (its table is centred there).
        return (CHUNK, 6) if self.bias == "simple" else (2 * CHUNK, 11)

    def config_kwargs(self) -> dict[str, Any]:
        kwargs = dict(TINY)
        kwargs.update(NO_DROPOUT)
        # rmsnorm is a known reference defect (it does not normalise): not used for parity here.
        norm = NORMS[self.index % 3]
        kwargs.update(
            attention_activation=self.attention,
            relative_positional_bias=self.bias,
            use_chunking=self.chunked,
            chunk_size=CHUNK if self.chunked else -1,
            is_decoder=True,
            bidirectional=False,
            add_cross_attention=True,
            normalization_type=norm,
            normalize_before_mega=self.index % 2 == 0,
            normalize_before_ffn=self.index % 4 < 2,
            use_normalized_ffn=self.index % 3 != 2,
            add_token_type_embeddings=self.index % 2 == 1,
            activation=ACTIVATIONS[self.index % len(ACTIVATIONS)],
            truncation=5 if self.index % 5 == 3 else None,
            use_cache=False,
        )
        return kwargs


GRID = [
    CrossCase(attention, bias, chunked, index)
    for index, (attention, bias, chunked) in enumerate(
        (a, b, c) for a in ATTENTIONS for b in BIASES for c in (False, True)
    )
]
CASES = {case.id: case for case in GRID}
HEAD_IDS = ("Model", "CausalLM")


def encoder_inputs(batch: int, length: int, *, seed: int = 3) -> tuple[Tensor, Tensor]:
    """Random encoder states (B, S, D) and a right-padded (B, S) mask: rows S, S-2, S-4, ..."""
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, length, TINY["hidden_size"], generator=generator)
    real = length - 2 * torch.arange(batch).clamp(max=(length - 1) // 2)
    mask = (torch.arange(length).unsqueeze(0) < real.unsqueeze(1)).long()
    return states, mask


@functools.lru_cache(maxsize=None)
def pair(case_id: str, head_id: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(reference, ours) with the same weights, eval mode. Shared: tests must not modify them."""
    case, head = CASES[case_id], HEADS_BY_ID[head_id]
    reference = build_reference(head, case.config_kwargs())
    ours = ours_from_reference(head, reference, case.config_kwargs())
    return reference, ours


def run(model: torch.nn.Module, head_id: str, case: CrossCase, *, grad: bool) -> tuple[Any, Tensor, Tensor]:
    """One forward (and, with ``grad``, backward) on the case's padded batch; (outputs, valid, encoder)."""
    head = HEADS_BY_ID[head_id]
    length, source_length = case.lengths
    batch = make_batch(head, case.config_kwargs(), length=length)
    states, encoder_mask = encoder_inputs(batch.valid.shape[0], source_length)
    states.requires_grad_(grad)
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(grad):
        outputs = model(
            **batch.kwargs,
            encoder_hidden_states=states,
            encoder_attention_mask=encoder_mask,
            output_hidden_states=True,
            output_attentions=True,
        )
        if grad:
            main = outputs.last_hidden_state if head_id == "Model" else outputs.logits
            loss = weighted_scalar([main], [batch.valid])
            if head_id == "CausalLM":
                loss = loss + outputs.loss
            loss.backward()
    return outputs, batch.valid, states


def test_grid_covers_every_attention_bias_and_chunking() -> None:
    combos = {(c.attention, c.bias, c.chunked) for c in GRID}
    assert combos == {(a, b, c) for a in ATTENTIONS for b in BIASES for c in (False, True)}
    assert {c.config_kwargs()["normalization_type"] for c in GRID} == {"scalenorm", "layernorm", "batchnorm"}
    assert {c.config_kwargs()["add_token_type_embeddings"] for c in GRID} == {False, True}
    assert all(c.lengths[0] != c.lengths[1] for c in GRID)


@pytest.mark.parametrize("head_id", HEAD_IDS)
def test_checkpoint_keys_match_both_ways(head_id: str) -> None:
    kwargs = GRID[0].config_kwargs()
    head = HEADS_BY_ID[head_id]
    reference = build_reference(head, kwargs, seed=1)
    ours = build_ours(head, kwargs, seed=2)
    assert any(".cross_attn." in name for name in ours.state_dict())
    load_strict(ours, reference)
    load_strict(reference, ours)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name


@pytest.mark.parametrize("head_id", HEAD_IDS)
@pytest.mark.parametrize("case_id", list(CASES))
def test_outputs_and_gradients(case_id: str, head_id: str) -> None:
    case = CASES[case_id]
    reference, ours = pair(case_id, head_id)
    expected, valid, reference_states = run(reference, head_id, case, grad=True)
    actual, _, our_states = run(ours, head_id, case, grad=True)

    main = "last_hidden_state" if head_id == "Model" else "logits"
    assert_close(getattr(actual, main)[valid], getattr(expected, main)[valid], main)
    if head_id == "CausalLM":
        assert_close(actual.loss, expected.loss, "loss")
    assert len(actual.hidden_states) == len(expected.hidden_states)
    for index, (a, b) in enumerate(zip(actual.hidden_states, expected.hidden_states)):
        assert_close(a[valid], b[valid], f"hidden_states[{index}]")
    for index, (a, b) in enumerate(zip(actual.attentions, expected.attentions)):
        assert a.shape == b.shape, (index, a.shape, b.shape)
        rows = valid.view(valid.shape[0], a.shape[1], a.shape[2])
        assert_close(a[rows], b[rows], f"attentions[{index}]")
    assert actual.cross_attentions is not None and len(actual.cross_attentions) == TINY["num_hidden_layers"]
    for index, (a, b) in enumerate(zip(actual.cross_attentions, expected.cross_attentions)):
        assert a.shape == b.shape == (valid.shape[0], *case.lengths), (index, a.shape, b.shape)
        assert_close(a[valid], b[valid], f"cross_attentions[{index}]")

    assert our_states.grad is not None and reference_states.grad is not None
    assert our_states.grad.abs().max() > 0
    assert_close(our_states.grad, reference_states.grad, "d loss / d encoder_hidden_states")
    reference_grads = dict(reference.named_parameters())
    checked = 0
    for name, parameter in ours.named_parameters():
        expected_grad = reference_grads[name].grad
        if parameter.grad is None or expected_grad is None:
            assert parameter.grad is None and (expected_grad is None or not expected_grad.any()), name
            continue
        assert_close(parameter.grad, expected_grad, f"grad {name}")
        checked += 1
    cross_grads = [n for n, p in ours.named_parameters() if ".cross_attn." in n and p.grad is not None]
    assert len(cross_grads) >= 8 * TINY["num_hidden_layers"], cross_grads
    assert checked > 20


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_padded_encoder_tokens_are_ignored(attention: str) -> None:
    """Changing encoder states at padded positions changes neither model (a formula check, not parity)."""
    case = next(c for c in GRID if c.attention == attention and not c.chunked)
    reference, ours = pair(case.id, "Model")
    length, source_length = case.lengths
    batch = make_batch(HEADS_BY_ID["Model"], case.config_kwargs(), length=length, padded=False)
    states, mask = encoder_inputs(batch.valid.shape[0], source_length)
    noisy = torch.where(mask.bool().unsqueeze(-1), states, torch.randn_like(states) * 5)
    with torch.no_grad():
        for model in (reference, ours):
            clean = model(**batch.kwargs, encoder_hidden_states=states, encoder_attention_mask=mask)
            dirty = model(**batch.kwargs, encoder_hidden_states=noisy, encoder_attention_mask=mask)
            assert_close(dirty.last_hidden_state, clean.last_hidden_state, f"{type(model).__module__}")
            weights = model(
                **batch.kwargs, encoder_hidden_states=states, encoder_attention_mask=mask, output_attentions=True
            ).cross_attentions[0]
            assert (weights.masked_select(~mask.bool().unsqueeze(1).expand_as(weights)) == 0).all()
