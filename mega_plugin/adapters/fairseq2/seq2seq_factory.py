"""Build a :class:`MegaSeq2SeqModel` from a :class:`MegaSeq2SeqConfig` (all sizes decided here)."""

from __future__ import annotations

from functools import partial

from fairseq2.nn import Linear, StandardEmbedding

from ...backends import accelerate
from ...core.embeddings import embedding_scale
from ...core.stack import MegaLayerStack
from .factory import _init_embedding, _init_linear, _init_tied_output
from .model import MegaFrontend
from .seq2seq_config import MegaSeq2SeqConfig
from .seq2seq_model import MegaSeq2SeqModel, MegaStack


class MegaSeq2SeqFactory:
    """Creates the modules of an encoder-decoder MEGA, one method per part."""

    def __init__(self, config: MegaSeq2SeqConfig) -> None:
        self._config = config
        self._encoder = config.encoder_core()
        self._decoder = config.decoder_core()

    def create_model(self) -> MegaSeq2SeqModel:
        config = self._config
        encoder_frontend = self.create_frontend()
        # share_embeddings: one StandardEmbedding module serves both sides (one table in the checkpoint's tree)
        decoder_frontend = (
            MegaFrontend(encoder_frontend.embed, None, scale=encoder_frontend.scale)
            if config.share_embeddings
            else self.create_frontend()
        )
        final_proj = Linear(
            config.hidden_size,
            config.vocab_size,
            bias=True,  # the HF MegaForCausalLM head's bias (zero for converted originals)
            init_fn=_init_tied_output if config.tie_embeddings else partial(_init_linear, config.initializer_range),
        )
        if config.tie_embeddings:
            final_proj.weight = decoder_frontend.embed.weight
        return MegaSeq2SeqModel(
            encoder_frontend,
            self.create_stack(encoder=True),
            decoder_frontend,
            self.create_stack(encoder=False),
            final_proj,
            pad_idx=config.pad_idx,
            max_source_seq_len=config.max_source_seq_len,
            max_target_seq_len=config.max_target_seq_len,
        )

    def create_frontend(self) -> MegaFrontend:
        config = self._config
        if config.add_token_type_embeddings:
            raise ValueError("add_token_type_embeddings=True has no use in the seq2seq MEGA (batches carry no type ids)")
        init = partial(_init_embedding, config.initializer_range)
        embed = StandardEmbedding(config.vocab_size, config.hidden_size, pad_idx=config.pad_idx, init_fn=init)
        return MegaFrontend(embed, None, scale=embedding_scale(self._encoder))

    def create_stack(self, *, encoder: bool) -> MegaStack:
        layers = MegaLayerStack(self._encoder if encoder else self._decoder)
        accelerate(layers)  # the backends' fast modules, chosen once at build (mega_plugin.backends)
        return MegaStack(layers, init_std=self._config.initializer_range)


def create_mega_seq2seq_model(config: MegaSeq2SeqConfig) -> MegaSeq2SeqModel:
    """The fairseq2 model factory of the ``mega_seq2seq`` family."""
    return MegaSeq2SeqFactory(config).create_model()
