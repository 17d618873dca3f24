"""Synthetic checkpoints in the original facebookresearch/mega layout, and the HF MEGA key set.

Imported as ``converters.fairseq_mega_checkpoints`` (``tests/`` is on ``sys.path`` and this
folder is a package), by the converter tests here and by the ``mega-plugin convert`` tests.
"""

from __future__ import annotations

from typing import Any

import torch

LM_ARGS: dict[str, Any] = dict(
    decoder_chunk_size=4, max_target_positions=16, normalize_before=False, normalization_type="layernorm",
    activation_fn="silu", attention_activation_fn="softmax", truncation_length=None,
    share_decoder_input_output_embed=True, no_scale_embedding=False, dropout=0.1,
)
"""The training args of a chunked (chunk 4) language model, as the original ``args`` names them."""

NORM_PARAMS = {
    "layernorm": {"weight": "D", "bias": "D"},
    "scalenorm": {"scalar": "1"},
    "rmsnorm": {"weight": "D"},
    "batchnorm": {"weight": "D", "bias": "D", "running_mean": "D", "running_var": "D", "num_batches_tracked": "0"},
}


def _norm(prefix: str, norm: str, hidden: int) -> dict[str, torch.Tensor]:
    shapes = {"D": (hidden,), "1": (1,), "0": ()}
    state = {}
    for name, size in NORM_PARAMS[norm].items():
        tensor = torch.tensor(3) if size == "0" else torch.randn(shapes[size])
        state[f"{prefix}.norm.{name}"] = tensor
    return state


def fairseq_state(
    prefix: str,
    *,
    layers: int = 2,
    vocab: int = 11,
    hidden: int = 8,
    inner: int = 16,
    shared: int = 4,
    ema: int = 2,
    nffn: int = 12,
    bidirectional: bool = False,
    norm: str = "layernorm",
    bias: str = "simple",
    bias_positions: int = 4,
    embedding_key: str = "embed_tokens.weight",
) -> dict[str, torch.Tensor]:
    """A random state dict with the original key names under ``prefix`` (e.g. ``"decoder."``)."""
    channels = 2 * hidden if bidirectional else hidden
    state: dict[str, torch.Tensor] = {f"{prefix}{embedding_key}": torch.randn(vocab, hidden)}
    for i in range(layers):
        layer = f"{prefix}layers.{i}."
        state.update({
            f"{layer}mega_layer.move.delta": torch.randn(channels, ema, 1),
            f"{layer}mega_layer.move.alpha": torch.randn(channels, ema, 1),
            f"{layer}mega_layer.move.beta": torch.randn(channels, ema, 1),
            f"{layer}mega_layer.move.gamma": torch.randn(channels, ema),
            f"{layer}mega_layer.move.omega": torch.randn(hidden),
            f"{layer}mega_layer.v_proj.weight": torch.randn(inner, hidden),
            f"{layer}mega_layer.v_proj.bias": torch.randn(inner),
            f"{layer}mega_layer.mx_proj.weight": torch.randn(shared + inner + 2 * hidden, hidden),
            f"{layer}mega_layer.mx_proj.bias": torch.randn(shared + inner + 2 * hidden),
            f"{layer}mega_layer.h_proj.weight": torch.randn(hidden, inner),
            f"{layer}mega_layer.h_proj.bias": torch.randn(hidden),
            f"{layer}mega_layer.gamma": torch.randn(2, shared),
            f"{layer}mega_layer.beta": torch.randn(2, shared),
            f"{layer}nffn.fc1.weight": torch.randn(nffn, hidden),
            f"{layer}nffn.fc1.bias": torch.randn(nffn),
            f"{layer}nffn.fc2.weight": torch.randn(hidden, nffn),
            f"{layer}nffn.fc2.bias": torch.randn(hidden),
        })
        if bias == "simple":
            state[f"{layer}mega_layer.rel_pos_bias.rel_pos_bias"] = torch.randn(2 * bias_positions - 1)
        else:
            state[f"{layer}mega_layer.rel_pos_bias.alpha"] = torch.randn(1, shared)
            state[f"{layer}mega_layer.rel_pos_bias.beta"] = torch.randn(1, shared)
            state[f"{layer}mega_layer.rel_pos_bias._float_tensor"] = torch.zeros(1)
        state.update(_norm(f"{layer}mega_layer.norm", norm, hidden))
        state.update(_norm(f"{layer}nffn.norm", norm, hidden))
    return state


def hf_keys(config: dict[str, Any]) -> set[str]:
    """Every key the HF MEGA layout has for ``config`` (written from docs, not from the converter)."""
    norm = {
        "layernorm": ("weight", "bias"),
        "scalenorm": ("scalar",),
        "rmsnorm": ("weight",),
        "batchnorm": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
    }[config["normalization_type"]]
    bias = ("rel_pos_bias",) if config["relative_positional_bias"] == "simple" else ("alpha", "b_param", "_float_tensor")
    keys = {"mega.embedding_layer.word_embeddings.weight"}
    for i in range(config["num_hidden_layers"]):
        attention = f"mega.layers.{i}.mega_layer."
        keys |= {f"{attention}ema_gate.{name}" for name in (
            "damping_factor", "decay_factor", "ema_expansion_matrix", "kernel_projection_matrix", "residual_weight")}
        keys |= {f"{attention}{proj}.{p}" for proj in ("v_proj", "mx_proj", "h_proj") for p in ("weight", "bias")}
        keys |= {f"{attention}qk_weight", f"{attention}qk_bias"}
        keys |= {f"{attention}rel_pos_bias.{name}" for name in bias}
        keys |= {f"{attention}norm.norm.{name}" for name in norm}
        if config["use_normalized_ffn"]:
            ffn = f"mega.layers.{i}.nffn."
            keys |= {f"{ffn}{fc}.{p}" for fc in ("fc1", "fc2") for p in ("weight", "bias")}
            keys |= {f"{ffn}norm.norm.{name}" for name in norm}
    if config.get("add_final_norm", False) and config.get("final_norm_affine", True):
        keys |= {f"mega.final_norm.norm.{name}" for name in norm}
    if "MegaForCausalLM" in config["architectures"]:
        keys |= {"lm_head.weight", "lm_head.bias"}
    return keys


WMT_ARGS: dict[str, Any] = dict(
    arch="mega_wmt_en_de", encoder_chunk_size=-1, decoder_chunk_size=-1, max_source_positions=16,
    max_target_positions=16, normalize_before=False, normalization_type="layernorm", activation_fn="silu",
    attention_activation_fn="softmax", truncation_length=0, share_all_embeddings=True,
    share_decoder_input_output_embed=True, no_scale_embedding=False, dropout=0.1,
)
"""The training args of a (tiny) WMT16 translation model, as the original ``args`` names them."""


def translation_state(
    *, hidden: int = 8, shared: int = 4, vocab: int = 11, norm: str = "layernorm", bias: str = "simple",
    positions: int = 16, share_all: bool = True, tied_output: bool = True,
) -> dict[str, torch.Tensor]:
    """A random original translation model: a bidirectional encoder, a decoder with cross-attention."""
    encoder = fairseq_state("encoder.", bidirectional=True, hidden=hidden, shared=shared, vocab=vocab, norm=norm,
                            bias=bias, bias_positions=positions)
    decoder = fairseq_state("decoder.", hidden=hidden, shared=shared, vocab=vocab, norm=norm, bias=bias,
                            bias_positions=positions)
    if share_all:
        decoder["decoder.embed_tokens.weight"] = encoder["encoder.embed_tokens.weight"]
    decoder["decoder.output_projection.weight"] = (
        decoder["decoder.embed_tokens.weight"] if tied_output else torch.randn(vocab, hidden)
    )
    for i in range(2):
        cross = f"decoder.layers.{i}.cross_attn."
        decoder.update({
            f"{cross}k_proj.weight": torch.randn(shared, hidden), f"{cross}k_proj.bias": torch.randn(shared),
            f"{cross}v_proj.weight": torch.randn(hidden, hidden), f"{cross}v_proj.bias": torch.randn(hidden),
            f"{cross}q_proj.weight": torch.randn(2 * hidden + shared, hidden),
            f"{cross}q_proj.bias": torch.randn(2 * hidden + shared),
            f"{cross}h_proj.weight": torch.randn(hidden, hidden), f"{cross}h_proj.bias": torch.randn(hidden),
        })
        if bias == "simple":
            decoder[f"{cross}rel_pos_bias.rel_pos_bias"] = torch.randn(2 * positions - 1)
        else:
            decoder[f"{cross}rel_pos_bias.alpha"] = torch.randn(1, shared)
            decoder[f"{cross}rel_pos_bias.beta"] = torch.randn(1, shared)
            decoder[f"{cross}rel_pos_bias._float_tensor"] = torch.zeros(1)
        decoder.update(_norm(f"{cross}norm", norm, hidden))
    return {**encoder, **decoder, "encoder.version": torch.tensor([3.0]), "decoder.version": torch.tensor([3.0])}
