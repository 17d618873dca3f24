"""Architecture presets: small functions that return a :class:`MegaCoreConfig`.

One source of truth for both ecosystems: the built-in plugin registers :data:`PRESETS` through
the ``mega_plugin_register_presets`` hook, and the HF and fairseq2 adapters read them back with
:func:`mega_plugin.registry.get_preset`.

Paper presets follow Ma et al., "Mega: Moving Average Equipped Gated Attention" (ICLR 2023),
Appendix D, and the released training scripts of facebookresearch/mega: EMA dimension 16 and
intermediate (value) size = NFFN size = 2 x hidden unless stated. ``<name>_chunk`` is the
Mega-chunk variant of ``<name>`` (chunk 128; Path-X 4096).

Vocabulary sizes are ours where the original had no fixed token table: the LRA image-like tasks
(Image, Pathfinder, Path-X) fed pixel values through a real-number embedding in the original;
here they are 256 intensity ids. The LRA tasks use the simple relative bias and the original
``max_positions`` (ListOps 2002, Text/Retrieval 4002, Image/Pathfinder 1024, Path-X 16384).
The released scripts truncate the EMA kernel (1024 lags for LRA, 8192 for the language models);
the presets leave ``truncation=None`` (exact EMA): pass ``truncation=...`` to match them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Final

from .config import MegaCoreConfig

PresetFactory = Callable[[], MegaCoreConfig]

PRESETS: dict[str, PresetFactory] = {}
"""Preset name -> function returning a fresh config (registered by the built-in plugin)."""

LRA_CHUNK: Final = 128
PATHX_CHUNK: Final = 4096


def preset(name: str) -> Callable[[PresetFactory], PresetFactory]:
    """Decorator adding a preset function to :data:`PRESETS` under ``name``."""

    def add(factory: PresetFactory) -> PresetFactory:
        if name in PRESETS:
            raise ValueError(f"preset {name!r} is defined twice")
        PRESETS[name] = factory
        return factory

    return add


def _lra(
    *,
    layers: int,
    hidden: int,
    shared: int,
    vocab: int,
    max_positions: int,
    attention: str,
    norm: str,
    prenorm: bool,
    dropout: float,
    pad_token_id: int | None,
) -> MegaCoreConfig:
    # Released LRA scripts: attention and activation dropout 0.0; bidirectional encoder.
    return MegaCoreConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=2 * hidden,
        nffn_hidden_size=2 * hidden,
        ema_projection_size=16,
        shared_representation_size=shared,
        bidirectional=True,
        attention_activation=attention,
        normalization_type=norm,
        normalize_before_mega=prenorm,
        normalize_before_ffn=prenorm,
        relative_positional_bias="simple",
        max_positions=max_positions,
        dropout_prob=dropout,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        pad_token_id=pad_token_id,
    )


@preset("lra_listops")
def lra_listops() -> MegaCoreConfig:
    """LRA ListOps (paper Appendix D): 6 x 80, z 64, softmax, layernorm, post-norm."""
    return _lra(layers=6, hidden=80, shared=64, vocab=20, max_positions=2002, attention="softmax",
                norm="layernorm", prenorm=False, dropout=0.1, pad_token_id=1)


@preset("lra_text")
def lra_text() -> MegaCoreConfig:
    """LRA Text/IMDB, byte level (paper Appendix D): 4 x 128, z 64, softmax, scalenorm, post-norm."""
    return _lra(layers=4, hidden=128, shared=64, vocab=256, max_positions=4002, attention="softmax",
                norm="scalenorm", prenorm=False, dropout=0.1, pad_token_id=1)


@preset("lra_retrieval")
def lra_retrieval() -> MegaCoreConfig:
    """LRA Retrieval/AAN, byte level (paper Appendix D): 6 x 128, z 64, softmax, scalenorm, post-norm."""
    return _lra(layers=6, hidden=128, shared=64, vocab=256, max_positions=4002, attention="softmax",
                norm="scalenorm", prenorm=False, dropout=0.1, pad_token_id=1)


@preset("lra_image")
def lra_image() -> MegaCoreConfig:
    """LRA Image/CIFAR-10 (paper Appendix D): 8 x 160, z 96, laplace, batchnorm, pre-norm."""
    return _lra(layers=8, hidden=160, shared=96, vocab=256, max_positions=1024, attention="laplace",
                norm="batchnorm", prenorm=True, dropout=0.0, pad_token_id=None)


@preset("lra_pathfinder")
def lra_pathfinder() -> MegaCoreConfig:
    """LRA Pathfinder 32x32 (paper Appendix D): 6 x 128, z 64, laplace, batchnorm, pre-norm."""
    return _lra(layers=6, hidden=128, shared=64, vocab=256, max_positions=1024, attention="laplace",
                norm="batchnorm", prenorm=True, dropout=0.0, pad_token_id=None)


@preset("lra_pathx")
def lra_pathx() -> MegaCoreConfig:
    """LRA Path-X 128x128 (paper Appendix D): 4 x 64, z 32, laplace, batchnorm, pre-norm.

    The released multi-GPU script uses ``syncbatchnorm`` (same parameters and checkpoint keys).
    """
    return _lra(layers=4, hidden=64, shared=32, vocab=256, max_positions=128 * 128, attention="laplace",
                norm="batchnorm", prenorm=True, dropout=0.0, pad_token_id=None)


def _chunk_variant(base_name: str, chunk: int) -> PresetFactory:
    base = PRESETS[base_name]

    def factory() -> MegaCoreConfig:
        return dataclasses.replace(base(), use_chunking=True, chunk_size=chunk)

    factory.__name__ = f"{base_name}_chunk"
    factory.__qualname__ = factory.__name__
    factory.__doc__ = (
        f"Mega-chunk variant of ``{base_name}`` with chunk size {chunk} (paper Appendix D)."
    )
    return factory


for _name in ("lra_listops", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder"):
    preset(f"{_name}_chunk")(_chunk_variant(_name, LRA_CHUNK))
preset("lra_pathx_chunk")(_chunk_variant("lra_pathx", PATHX_CHUNK))


def _causal_lm(
    *, layers: int, hidden: int, inner: int, shared: int, vocab: int, chunk: int, dropout: float, inner_dropout: float
) -> MegaCoreConfig:
    # Released LM scripts: pre-norm, layernorm, softmax, rotary bias, causal EMA.
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
    )


@preset("wikitext103")
def wikitext103() -> MegaCoreConfig:
    """WikiText-103 LM (paper Appendix D, 252M): 16 x 1024, FFN = v = 1536, z 256, chunk 1024, causal.

    ``vocab_size`` 267744 is the word-level WikiText-103 dictionary; the original used adaptive
    input and adaptive softmax over it (not representable here: this is a full softmax table).
    The released training script passed ``--decoder-hidden-dim 2048`` (FFN 2048); the converter
    reads the sizes of a real checkpoint from its tensors.
    """
    return _causal_lm(layers=16, hidden=1024, inner=1536, shared=256, vocab=267744, chunk=1024,
                      dropout=0.3, inner_dropout=0.1)


@preset("enwik8")
def enwik8() -> MegaCoreConfig:
    """enwik8 character LM (paper Appendix D, 39M): 12 x 512, FFN = v = 1024, z 128, chunk 2048, causal.

    ``vocab_size`` 256 covers every byte (the original fairseq dictionary holds the ~200 bytes seen).
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


__all__ = [
    "PRESETS",
    "PresetFactory",
    "enwik8",
    "lra_image",
    "lra_listops",
    "lra_pathfinder",
    "lra_pathx",
    "lra_retrieval",
    "lra_text",
    "mega_base_wikitext",
    "preset",
    "tiny",
    "wikitext103",
]
