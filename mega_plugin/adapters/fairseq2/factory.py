"""Build a :class:`MegaCausalLM` from a :class:`MegaLMConfig` (all sizes decided here)."""

from __future__ import annotations

from functools import partial

from fairseq2.nn import Linear, StandardEmbedding
from torch import nn

from ...backends import accelerate
from ...core.adaptive_input import AdaptiveInput
from ...core.adaptive_softmax import AdaptiveSoftmax
from ...core.backbone import build_final_norm
from ...core.embeddings import embedding_scale
from ...core.heads import MegaLMHeadTransform
from ...core.init import init_embedding_, init_linear_, initialize_tree
from ...core.stack import MegaLayerStack
from .config import MegaLMConfig
from .model import MegaCausalLM, MegaDecoder, MegaFrontend

# fairseq2 initialises a module by calling its ``init_fn(module)``; these hand the module's
# tensors to the core's reference initialisation.


def _init_embedding(std: float, embed: StandardEmbedding) -> None:
    init_embedding_(embed.weight, std=std, padding_idx=embed.pad_idx)


def _init_linear(std: float, linear: Linear) -> None:
    init_linear_(linear.weight, linear.bias, std=std)


def _init_tied_output(linear: Linear) -> None:
    # The weight belongs to the embedding (initialised there); only the bias is ours.
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class MegaFactory:
    """Creates the modules of a causal MEGA LM, one method per part."""

    def __init__(self, config: MegaLMConfig) -> None:
        self._config = config
        self._core = config.to_core()

    def create_model(self) -> MegaCausalLM:
        config = self._config
        frontend = self.create_frontend()
        if self._core.adaptive_softmax_cutoffs is not None:
            return MegaCausalLM(
                frontend,
                self.create_decoder(),
                self.create_head(),
                self.create_adaptive_softmax(),
                pad_idx=config.pad_idx,
                max_seq_len=config.max_seq_len,
                model_dim=config.hidden_size,
            )
        final_proj = Linear(
            config.hidden_size,
            config.vocab_size,
            bias=True,
            init_fn=_init_tied_output if config.tie_embeddings else partial(_init_linear, config.initializer_range),
        )
        if config.tie_embeddings:
            final_proj.weight = frontend.embed.weight
        return MegaCausalLM(
            frontend,
            self.create_decoder(),
            self.create_head(),
            final_proj,
            pad_idx=config.pad_idx,
            max_seq_len=config.max_seq_len,
        )

    def create_frontend(self) -> MegaFrontend:
        config = self._config
        init = partial(_init_embedding, config.initializer_range)
        embed: StandardEmbedding | AdaptiveInput
        if self._core.adaptive_input_cutoffs is not None:
            embed = AdaptiveInput(self._core)
            initialize_tree(embed, std=config.initializer_range)
        else:
            embed = StandardEmbedding(config.vocab_size, config.hidden_size, pad_idx=config.pad_idx, init_fn=init)
        token_type = (
            StandardEmbedding(config.type_vocab_size, config.hidden_size, init_fn=init)
            if config.add_token_type_embeddings
            else None
        )
        return MegaFrontend(embed, token_type, scale=embedding_scale(self._core))

    def create_decoder(self) -> MegaDecoder:
        layers = MegaLayerStack(self._core)
        accelerate(layers)  # the backends' fast modules, chosen once at build (mega_plugin.backends)
        return MegaDecoder(layers, init_std=self._config.initializer_range, final_norm=build_final_norm(self._core))

    def create_adaptive_softmax(self) -> AdaptiveSoftmax:
        softmax = AdaptiveSoftmax(self._core)
        initialize_tree(softmax, std=self._config.initializer_range)
        return softmax

    def create_head(self) -> MegaLMHeadTransform:
        config = self._config
        dense = (
            Linear(
                config.hidden_size,
                config.hidden_size,
                bias=True,
                init_fn=partial(_init_linear, config.initializer_range),
            )
            if config.add_lm_hidden_dense_layer
            else None
        )
        return MegaLMHeadTransform(dense)


def create_mega_model(config: MegaLMConfig) -> MegaCausalLM:
    """The fairseq2 model factory of the ``mega`` family."""
    return MegaFactory(config).create_model()
