"""The ``fairseq-mega`` converter on translation checkpoints: key layout, configs, refusals.

Outputs against the 4.57 reference are in ``tests/hf/test_wmt_translation.py``; against the
original code in ``tests/hf/test_original_wmt_fixture.py``.
"""

from __future__ import annotations

import pytest
import torch

from converters.fairseq_mega_checkpoints import WMT_ARGS, translation_state
from mega_plugin.converters.fairseq_mega import convert_fairseq_mega
from mega_plugin.registry import ConversionError


def test_layout_is_an_encoder_decoder_model_of_two_megas() -> None:
    state = translation_state()
    config, converted = convert_fairseq_mega(state, WMT_ARGS)
    assert config["model_type"] == "encoder-decoder" and config["is_encoder_decoder"] is True
    assert config["decoder_start_token_id"] == 2 and config["pad_token_id"] == 1  # fairseq's </s>, <pad>
    encoder, decoder = config["encoder"], config["decoder"]
    assert encoder["bidirectional"] is True and encoder["is_decoder"] is False
    assert decoder["bidirectional"] is False and decoder["is_decoder"] and decoder["add_cross_attention"]
    assert encoder["scale_embeddings"] is True and decoder["scale_embeddings"] is True
    assert "cross_attention_max_positions" not in decoder  # the self-attention's layout: the reference's
    assert decoder["tie_word_embeddings"] is True and config["share_embeddings"] is True
    # tables copied, never scaled
    assert torch.equal(converted["encoder.embedding_layer.word_embeddings.weight"], state["encoder.embed_tokens.weight"])
    assert torch.equal(converted["decoder.mega.embedding_layer.word_embeddings.weight"], state["decoder.embed_tokens.weight"])
    assert "decoder.lm_head.weight" not in converted and not converted["decoder.lm_head.bias"].any()
    for i in range(2):
        original, ours = f"decoder.layers.{i}.cross_attn.", f"decoder.mega.layers.{i}.cross_attn."
        for name in ("q_proj.weight", "k_proj.bias", "v_proj.weight", "h_proj.bias", "rel_pos_bias.rel_pos_bias"):
            assert torch.equal(converted[ours + name], state[original + name]), name
        assert torch.equal(converted[ours + "norm.norm.weight"], state[original + "norm.norm.weight"])
        assert torch.equal(
            converted[f"encoder.layers.{i}.mega_layer.ema_gate.damping_factor"],
            state[f"encoder.layers.{i}.mega_layer.move.delta"],
        )
    assert not any(k.endswith("version") for k in converted)


def test_untied_output_rotary_and_no_scale() -> None:
    state = translation_state(bias="rotary", tied_output=False, share_all=False)
    args = {**WMT_ARGS, "share_all_embeddings": False, "share_decoder_input_output_embed": False,
            "no_scale_embedding": True}
    config, converted = convert_fairseq_mega(state, args)
    assert config["decoder"]["tie_word_embeddings"] is False and config["share_embeddings"] is False
    assert "scale_embeddings" not in config["encoder"]  # off: left out, the reference layout
    assert torch.equal(converted["decoder.lm_head.weight"], state["decoder.output_projection.weight"])
    assert torch.equal(converted["decoder.mega.layers.1.cross_attn.rel_pos_bias.b_param"],
                       state["decoder.layers.1.cross_attn.rel_pos_bias.beta"])


def test_chunked_simple_decoder_keeps_the_cross_table_size() -> None:
    args = {**WMT_ARGS, "encoder_chunk_size": 4, "decoder_chunk_size": 4}
    state = translation_state()
    for side in ("encoder", "decoder"):  # the original's chunked self-attention tables: 2 * chunk - 1
        for i in range(2):
            state[f"{side}.layers.{i}.mega_layer.rel_pos_bias.rel_pos_bias"] = torch.randn(7)
    config, converted = convert_fairseq_mega(state, args)
    assert config["decoder"]["cross_attention_max_positions"] == 16 and config["decoder"]["chunk_size"] == 4
    table = converted["decoder.mega.layers.0.cross_attn.rel_pos_bias.rel_pos_bias"]
    assert torch.equal(table, state["decoder.layers.0.cross_attn.rel_pos_bias.rel_pos_bias"])
    self_table = converted["decoder.mega.layers.0.mega_layer.rel_pos_bias.rel_pos_bias"]
    assert torch.equal(self_table[:7], state["decoder.layers.0.mega_layer.rel_pos_bias.rel_pos_bias"])


def test_what_cannot_be_held_is_refused_with_every_key() -> None:
    state = translation_state()
    state["encoder.embed_norm.weight"] = torch.ones(8)
    state["decoder.adaptive_softmax.head.weight"] = torch.ones(3, 8)
    state["decoder.mystery"] = torch.ones(1)
    with pytest.raises(ConversionError) as caught:
        convert_fairseq_mega(state, WMT_ARGS)
    message = str(caught.value)
    for key in ("encoder.embed_norm.weight", "decoder.adaptive_softmax.head.weight", "decoder.mystery"):
        assert key in message
    config, _ = convert_fairseq_mega(state, WMT_ARGS, allow_drop=["encoder.embed_norm.*", "decoder.a*", "decoder.mystery"])
    assert config["model_type"] == "encoder-decoder"
    with pytest.raises(ConversionError, match="final_norm"):
        convert_fairseq_mega(translation_state(), {**WMT_ARGS, "normalize_before": True})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_checkpoints_become_exact_fp32(dtype: torch.dtype) -> None:
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in translation_state().items()}
    _, converted = convert_fairseq_mega(state, WMT_ARGS)
    assert all(t.dtype == torch.float32 for t in converted.values() if t.is_floating_point())
    original = state["decoder.layers.1.cross_attn.q_proj.weight"]
    assert torch.equal(converted["decoder.mega.layers.1.cross_attn.q_proj.weight"], original.float())
    assert torch.equal(converted["encoder.embedding_layer.word_embeddings.weight"],
                       state["encoder.embed_tokens.weight"].float())  # no scale baked in: no rounding
