"""Language-model presets: the paper's WikiText-103 and enwik8 models, mega-base-wikitext, tiny."""

from __future__ import annotations

from typing import Any

from ..config import MegaCoreConfig
from .table import preset


def _causal_lm(
    *,
    layers: int,
    hidden: int,
    inner: int,
    shared: int,
    vocab: int,
    chunk: int,
    dropout: float,
    inner_dropout: float,
    **options: Any,
) -> MegaCoreConfig:
    # Released LM scripts: pre-norm, layernorm, softmax, rotary bias, causal EMA, EMA truncated at
    # 8192, sqrt(d) embedding scale, a final layernorm without affine parameters, no LM dense
    # layer (extra: HF-only fields).
    return MegaCoreConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inner,
        nffn_hidden_size=inner,
        ema_projection_size=16,
        shared_representation_size=shared,
        bidirectional=False,
        is_decoder=True,
        use_chunking=True,
        chunk_size=chunk,
        attention_activation="softmax",
        normalization_type="layernorm",
        normalize_before_mega=True,
        normalize_before_ffn=True,
        relative_positional_bias="rotary",
        max_positions=8192,
        dropout_prob=dropout,
        hidden_dropout_prob=inner_dropout,
        attention_probs_dropout_prob=inner_dropout,
        nffn_activation_dropout_prob=inner_dropout,
        pad_token_id=1,
        truncation=8192,
        scale_embeddings=True,
        add_final_norm=True,
        final_norm_affine=False,
        extra={"add_lm_hidden_dense_layer": False, "tie_word_embeddings": "adaptive_softmax_cutoffs" not in options},
        **options,
    )


@preset("wikitext103")
def wikitext103() -> MegaCoreConfig:
    """WikiText-103 LM (paper Appendix D, 252M): 16 x 1024, FFN = v = 1536, z 256, chunk 1024, causal.

    ``vocab_size`` 267744 is the word-level WikiText-103 dictionary, covered as the original
    (``mega_lm_adaptive_big``) does: adaptive input and adaptive softmax with cutoffs 20000, 60000,
    factor 4, tied weights and projections, adaptive-softmax dropout 0.2. The released training
    script passed ``--decoder-hidden-dim 2048`` (FFN 2048); the converter reads the sizes of a real
    checkpoint from its tensors.
    """
    return _causal_lm(layers=16, hidden=1024, inner=1536, shared=256, vocab=267744, chunk=1024,
                      dropout=0.3, inner_dropout=0.1,
                      adaptive_input_cutoffs=[20000, 60000], adaptive_softmax_cutoffs=[20000, 60000],
                      adaptive_softmax_dropout_prob=0.2, tie_adaptive_weights=True, tie_adaptive_proj=True)


@preset("enwik8")
def enwik8() -> MegaCoreConfig:
    """enwik8 character LM (paper Appendix D, 39M): 12 x 512, FFN = v = 1024, z 128, chunk 2048, causal.

    ``vocab_size`` 256 covers every byte (the original fairseq dictionary holds the ~200 bytes seen);
    the output projection shares the embedding table (``--share-decoder-input-output-embed``).
    """
    return _causal_lm(layers=12, hidden=512, inner=1024, shared=128, vocab=256, chunk=2048,
                      dropout=0.1, inner_dropout=0.0)


@preset("mega_base_wikitext")
def mega_base_wikitext() -> MegaCoreConfig:
    """The ``mnaylor/mega-base-wikitext`` MLM architecture (not a paper preset; see Appendix D for those).

    4 x 128, intermediate 256, NFFN 256, z 64, EMA 16, bidirectional, scalenorm, pre-norm,
    rotary bias, ``max_positions`` 10000, no chunking, RoBERTa vocabulary 50265, pad/bos/eos
    1/0/2 (bos/eos kept in ``extra``: the core has no field for them).
    """
    return MegaCoreConfig(
        vocab_size=50265,
        hidden_size=128,
        num_hidden_layers=4,
        intermediate_size=256,
        nffn_hidden_size=256,
        ema_projection_size=16,
        shared_representation_size=64,
        bidirectional=True,
        normalization_type="scalenorm",
        normalize_before_mega=True,
        normalize_before_ffn=True,
        relative_positional_bias="rotary",
        max_positions=10000,
        use_chunking=False,
        chunk_size=-1,
        pad_token_id=1,
        extra={"bos_token_id": 0, "eos_token_id": 2},
    )


@preset("tiny")
def tiny() -> MegaCoreConfig:
    """A tiny causal decoder for tests (not a paper preset; Appendix D lists the real ones).

    2 x 32, intermediate 64, NFFN 64, z 16, EMA 4, vocab 100, chunk 8, ``max_positions`` 64,
    dropout off so outputs are deterministic.
    """
    return MegaCoreConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        nffn_hidden_size=64,
        ema_projection_size=4,
        shared_representation_size=16,
        bidirectional=False,
        is_decoder=True,
        use_chunking=True,
        chunk_size=8,
        max_positions=64,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
    )
