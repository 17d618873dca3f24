"""Long Range Arena presets (paper Appendix D) and their Mega-chunk variants."""

from __future__ import annotations

import dataclasses
from typing import Final

from ..config import MegaCoreConfig
from .table import PRESETS, PresetFactory, preset

LRA_CHUNK: Final = 128
PATHX_CHUNK: Final = 4096


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
