"""Gated cross-attention in the core: the formula, its place in the block, and streaming.

- ``GatedCrossAttention`` against the formula written out here with plain torch (gates from
  ``q_proj``, keys/values from the encoder, the relative bias between the absolute decoder
  position and the encoder position, padded encoder tokens masked, element attention
  normalised by the number of real encoder tokens), for every attention function, both
  biases, pre/post norm and decoder offsets.
- ``MegaBlock`` runs ``mega_layer`` -> ``cross_attn`` -> ``nffn``.
- ``MegaBackbone`` streaming with encoder states: cached decoding (with chunking, across chunk
  boundaries, where the self-attention cache is reset) equals the full forward, and the
  encoder keys/values are projected once per layer.

Parity with the transformers 4.57 reference is in ``tests/hf/test_cross_attention_parity.py``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from _support.configs import CAUSAL, TINY, tiny_config
from mega_plugin.core import GatedCrossAttention, MegaBackbone, MegaBlock, MegaCoreConfig, initialize_tree
from mega_plugin.core.cross_attention import EncoderMemory

HIDDEN, SHARED = TINY["hidden_size"], TINY["shared_representation_size"]
TOLERANCE = 1e-5
ATTENTIONS = ("softmax", "laplace", "relu2")


def make_config(attention: str = "softmax", bias: str = "rotary", **overrides: Any) -> MegaCoreConfig:
    values: dict[str, Any] = dict(
        CAUSAL,
        ema_projection_size=3,
        normalization_type="layernorm",
        attention_activation=attention,
        relative_positional_bias=bias,
        max_positions=32,
        add_cross_attention=True,
        initializer_range=0.3,
    )
    return tiny_config(**{**values, **overrides})


def perturb_(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial biases and norm parameters (the initialisation leaves them 0 or 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias") or name.endswith("rel_pos_bias") or "norm" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)


def encoder(batch: int, length: int, *, seed: int = 1) -> tuple[Tensor, Tensor]:
    """(B, S, D) states and a (B, S) bool mask with rows S, S-3, ... (at least 1) real tokens."""
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, length, HIDDEN, generator=generator)
    real = (length - 3 * torch.arange(batch)).clamp(min=1)
    return states, torch.arange(length).unsqueeze(0) < real.unsqueeze(1)


# --- the formula ---------------------------------------------------------------------------


def bias_formula(module: GatedCrossAttention, length: int, source: int, offset: int) -> Tensor:
    """(L, S) bias for decoder positions offset.. and encoder positions 0.., written out."""
    table = module.rel_pos_bias
    rows = []
    for i in range(length):
        position = offset + i
        if hasattr(table, "alpha"):
            half = SHARED // 2
            frequencies = [math.exp(-k * math.log(10000.0) / half) for k in range(half)]

            def rotated(vector: Tensor, at: int) -> Tensor:
                first, second = vector[0, :half], vector[0, half:]
                sin = torch.tensor([math.sin(at * f) for f in frequencies])
                cos = torch.tensor([math.cos(at * f) for f in frequencies])
                return torch.cat([first * cos - second * sin, second * cos + first * sin])

            query = rotated(table.alpha, position)
            rows.append(torch.stack([query @ rotated(table.b_param, j) for j in range(source)]))
        else:
            rows.append(torch.stack([table.rel_pos_bias[table.center - 1 + j - position] for j in range(source)]))
    return torch.stack(rows)


def cross_formula(module: GatedCrossAttention, x: Tensor, states: Tensor, mask: Tensor, offset: int) -> tuple[Tensor, Tensor]:
    activation = F.silu  # the config's default activation
    normed = module.norm(x) if module.prenorm else x
    projected = normed @ module.q_proj.weight.T + module.q_proj.bias
    update, reset, query = projected[..., :HIDDEN], projected[..., HIDDEN : 2 * HIDDEN], projected[..., 2 * HIDDEN :]
    update, reset = torch.sigmoid(update), F.silu(reset)
    keys = states @ module.k_proj.weight.T + module.k_proj.bias
    values = activation(states @ module.v_proj.weight.T + module.v_proj.bias)
    bias = bias_formula(module, x.shape[1], states.shape[1], offset)
    scores = query @ keys.transpose(1, 2)  # (B, L, S)
    real = mask.unsqueeze(1)  # (B, 1, S)
    if module.attention_activation == "softmax":
        scores = scores / math.sqrt(SHARED) + bias
        weights = torch.softmax(scores.masked_fill(~real, float("-inf")), dim=-1)
    else:
        counts = mask.sum(dim=-1).view(-1, 1, 1).float()
        scores = scores / counts + bias
        if module.attention_activation == "relu2":
            weights = F.relu(scores) ** 2
        else:
            mu, sigma = math.sqrt(0.5), math.sqrt(1 / (4 * math.pi))
            weights = 0.5 * (1 + torch.erf((scores - mu) / (sigma * math.sqrt(2))))
        weights = weights * real
    gated = activation((weights @ values * reset) @ module.h_proj.weight.T + module.h_proj.bias)
    out = x + update * (gated - x)
    return (out if module.prenorm else module.norm(out)), weights


@pytest.mark.parametrize(
    "attention,bias,prenorm",
    list(itertools.product(ATTENTIONS, ["rotary", "simple"], [True, False])),
    ids=lambda v: str(v),
)
@pytest.mark.parametrize("offset", [0, 5])
def test_cross_attention_matches_the_formula(attention: str, bias: str, prenorm: bool, offset: int) -> None:
    module = GatedCrossAttention(make_config(attention, bias, normalize_before_mega=prenorm)).eval()
    initialize_tree(module, std=0.3)
    perturb_(module)
    x = torch.randn(3, 6, HIDDEN)
    states, mask = encoder(3, 9)
    memory = module.project_memory(states, mask)
    out, weights = module(x, memory, query_offset=offset, need_weights=True)
    expected_out, expected_weights = cross_formula(module, x, states, mask, offset)
    assert weights is not None and weights.shape == (3, 6, 9)
    assert (out - expected_out).abs().max() <= TOLERANCE
    assert (weights - expected_weights).abs().max() <= TOLERANCE
    # Not a trivially equal case: positions matter.
    shifted, _ = module(x, memory, query_offset=offset + 1)
    assert (shifted - out).abs().max() > 1e-3


def test_memory_is_one_projection_of_the_encoder() -> None:
    module = GatedCrossAttention(make_config())
    states, mask = encoder(2, 5)
    memory = module.project_memory(states, mask)
    # the projections may run as oneDNN GEMMs: equal to nn.Linear up to summation order
    torch.testing.assert_close(memory.keys, module.k_proj(states), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(memory.values, F.silu(module.v_proj(states)), rtol=1e-6, atol=1e-6)
    assert memory.key_mask is mask


# --- the block ------------------------------------------------------------------------------


def test_block_runs_self_attention_then_cross_attention_then_nffn() -> None:
    block = MegaBlock(make_config()).eval()
    perturb_(block)
    assert [name for name, _ in block.named_children()] == ["mega_layer", "cross_attn", "nffn"]
    x = torch.randn(2, 7, HIDDEN)
    states, mask = encoder(2, 4)
    result = block(x, causal=True, encoder_hidden=states, encoder_mask=mask, need_weights=True)
    assert block.cross_attn is not None and block.nffn is not None
    after_self = block.mega_layer(x, causal=True).hidden
    memory = EncoderMemory(keys=block.cross_attn.k_proj(states), values=F.silu(block.cross_attn.v_proj(states)), key_mask=mask)
    after_cross, weights = block.cross_attn(after_self, memory, need_weights=True)
    assert torch.allclose(result.hidden, block.nffn(after_cross), atol=TOLERANCE)
    assert result.cross_weights is not None and torch.allclose(result.cross_weights, weights)


def test_cross_attention_needs_a_decoder() -> None:
    with pytest.raises(ValueError, match="add_cross_attention=True needs a decoder.*is_decoder=True"):
        MegaBlock(make_config(is_decoder=False))


# --- streaming ------------------------------------------------------------------------------


def count_calls(model: torch.nn.Module, suffix: str) -> list[int]:
    calls = [0]
    for name, module in model.named_modules():
        if name.endswith(suffix):
            module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("chunk", [None, 4], ids=["nochunk", "chunk4"])
@pytest.mark.parametrize("bias", ["rotary", "simple"])
def test_streaming_equals_full_forward(attention: str, chunk: int | None, bias: str) -> None:
    # simple bias + chunking: cross-attention positions are limited to chunk_size (the HF layout)
    length = 4 if (bias == "simple" and chunk) else 11
    config = make_config(
        attention, bias, use_chunking=chunk is not None, chunk_size=chunk or -1, add_token_type_embeddings=False
    )
    model = MegaBackbone(config).eval()
    perturb_(model)
    ids = torch.randint(3, 50, (3, length), generator=torch.Generator().manual_seed(2))
    states, mask = encoder(3, 7 if length > 4 else 4)
    full = model(ids, encoder_hidden=states, encoder_attention_mask=mask.long()).hidden

    key_calls, value_calls = count_calls(model, "cross_attn.k_proj"), count_calls(model, "cross_attn.v_proj")
    pieces = [3] + [1] * (length - 3)
    state, start, outputs = None, 0, []
    for size in pieces:
        # Encoder states are passed every step (as generate() does); only the first call projects them.
        result = model(
            ids[:, start : start + size],
            state=state,
            use_cache=True,
            encoder_hidden=states,
            encoder_attention_mask=mask.long(),
        )
        state, start = result.state, start + size
        outputs.append(result.hidden)
    assert key_calls[0] == value_calls[0] == config.num_hidden_layers
    assert (torch.cat(outputs, dim=1) - full).abs().max() <= 1e-4
    assert state is not None and all(layer.cross_keys is not None for layer in state.layers)
    if chunk:
        assert state.layers[0].cached_length < chunk  # the self-attention cache was reset; positions were not

    # Once cached, the encoder states may be omitted.
    follow = model(ids[:, -1:], state=_rewind(model, ids, states, mask), use_cache=True)
    assert (follow.hidden - full[:, -1:]).abs().max() <= 1e-4


def _rewind(model: MegaBackbone, ids: Tensor, states: Tensor, mask: Tensor) -> Any:
    return model(ids[:, :-1], use_cache=True, encoder_hidden=states, encoder_attention_mask=mask.long()).state


def test_beam_reorder_moves_encoder_keys() -> None:
    model = MegaBackbone(make_config()).eval()
    states, mask = encoder(3, 6)
    ids = torch.randint(3, 50, (3, 5), generator=torch.Generator().manual_seed(4))
    state = model(ids[:, :4], use_cache=True, encoder_hidden=states, encoder_attention_mask=mask.long()).state
    order = torch.tensor([2, 2, 0])
    state.reorder(order)
    step = model(ids[order, 4:], state=state, use_cache=True).hidden
    full = model(ids[order], encoder_hidden=states[order], encoder_attention_mask=mask[order].long()).hidden
    assert (step - full[:, 4:]).abs().max() <= 1e-4


def test_cached_state_refuses_other_encoder_inputs() -> None:
    model = MegaBackbone(make_config()).eval()
    states, mask = encoder(2, 6)
    ids = torch.randint(3, 50, (2, 3))
    state = model(ids, use_cache=True, encoder_hidden=states, encoder_attention_mask=mask.long()).state
    with pytest.raises(ValueError, match="encoder_hidden_states have length 5.*cache holds encoder keys of length 6"):
        model(ids[:, :1], state=state.clone(), use_cache=True, encoder_hidden=states[:, :5])
    other = torch.ones(2, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="encoder_attention_mask differs"):
        model(ids[:, :1], state=state.clone(), use_cache=True, encoder_attention_mask=other)
    # the mask the cache was built with (as 0/1 or bool) is accepted
    model(ids[:, :1], state=state.clone(), use_cache=True, encoder_attention_mask=mask.long())
    model(ids[:, :1], state=state.clone(), use_cache=True, encoder_attention_mask=mask.bool())


@pytest.mark.parametrize("chunk", [None, 4], ids=["nochunk", "chunk4"])
def test_cross_attention_max_positions_sizes_its_own_simple_table(chunk: int | None) -> None:
    """The original translation models: a (2n - 1) cross table with lag 0 at n - 1, chunked or not."""
    positions = 12
    chunking = dict(use_chunking=True, chunk_size=chunk) if chunk else {}
    config = make_config("softmax", "simple", cross_attention_max_positions=positions, **chunking)
    module = GatedCrossAttention(config).eval()
    initialize_tree(module, std=0.3)
    perturb_(module)
    assert module.rel_pos_bias.rel_pos_bias.shape == (2 * positions - 1,)
    table = module.rel_pos_bias.rel_pos_bias
    x = torch.randn(2, 6, HIDDEN)
    states, mask = encoder(2, 9)
    memory = module.project_memory(states, mask)
    for offset in (0, 5):
        expected = torch.stack([
            torch.stack([table[positions - 1 + j - (offset + i)] for j in range(9)]) for i in range(6)
        ])
        assert torch.equal(module._bias(6, 9, offset), expected)
        out, _ = module(x, memory, query_offset=offset)
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="cross_attention_max_positions"):
        module(x, module.project_memory(torch.randn(2, positions + 1, HIDDEN)), query_offset=0)
    with pytest.raises(ValueError, match="cross_attention_max_positions must be None or a positive integer"):
        make_config(cross_attention_max_positions=0)
