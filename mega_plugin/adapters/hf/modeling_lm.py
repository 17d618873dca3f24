"""Language-model heads: ``MegaForCausalLM`` and ``MegaForMaskedLM``."""

from __future__ import annotations

import logging
from typing import Any, Final

from torch import Tensor, nn
from transformers import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions, MaskedLMOutput

from ...backends.static_decoding import StaticDecoder
from ...core.adaptive_input import AdaptiveInput
from ...core.adaptive_softmax import AdaptiveSoftmax
from ...core.heads import tanh_dense
from ...formats.hf import HF_WORD_EMBEDDINGS
from .cache import MegaCache
from .configuration_mega import MegaConfig
from .losses import target_log_prob_loss, token_loss
from .modeling_mega import MegaModel, MegaPreTrainedModel
from .outputs import cache_field

logger = logging.getLogger(__name__)

# The keyword generate() passes the cache under: "cache" on 5.x, "past_key_values" on 4.57.
CACHE_KEYWORD = cache_field(CausalLMOutputWithCrossAttentions) or "past_key_values"


# Per-position inputs: sliced to the positions a step feeds (the mask is not: it spans everything).
PER_POSITION_KWARGS: Final = frozenset({"token_type_ids", "position_ids"})
# Bookkeeping keywords generate() keeps in its model kwargs that are not model inputs.
GENERATE_ONLY_KWARGS: Final = frozenset({"cache_position", "return_dict", "is_first_iteration", "next_sequence_length"})


def lm_hidden_dense(config: MegaConfig) -> nn.Linear | None:
    """The optional ``dense`` layer of the LM heads (``add_lm_hidden_dense_layer``).

    It stays a top-level ``dense`` (the checkpoint layout); the heads apply it with the core's
    :func:`~mega_plugin.core.heads.tanh_dense`, the transform fairseq2's head module uses too.
    """
    return nn.Linear(config.hidden_size, config.hidden_size) if config.add_lm_hidden_dense_layer else None



def require_token_input(config: MegaConfig, head: str) -> None:
    """``ValueError`` for an LM head on a real-number model: it predicts token ids from a token table."""
    if config.input_type != "tokens":
        raise ValueError(
            f"{head} predicts token ids and ties its head to the token table: it needs input_type='tokens', "
            f"got input_type={config.input_type!r} (real-number models: MegaForSequenceClassification, "
            "MegaForImageClassification, MegaForTokenClassification)"
        )

class MegaForCausalLM(MegaPreTrainedModel, GenerationMixin):
    """MEGA with a next-token prediction head; generates through ``generate()``.

    With ``adaptive_softmax_cutoffs`` set, the head is the core's
    :class:`~mega_plugin.core.adaptive_softmax.AdaptiveSoftmax` (``adaptive_softmax.*``, no
    ``lm_head``): ``logits`` are then the full-vocabulary *log-probabilities* (what the original
    fairseq model's ``get_normalized_probs`` gives; softmax and argmax over them are unchanged, so
    ``generate()`` works as usual), and ``loss`` scores each label through its own cluster only.
    """

    accepts_loss_kwargs = True  # the loss honours num_items_in_batch (.losses.token_loss)

    _tied_weights_keys = {"lm_head.weight": HF_WORD_EMBEDDINGS}
    _is_stateful = True

    def __init__(self, config: MegaConfig) -> None:
        require_token_input(config, "MegaForCausalLM")
        super().__init__(config)
        if not config.is_decoder:
            logger.warning("MegaForCausalLM is used with is_decoder=False: attention is not causal")
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.dense = lm_hidden_dense(config)
        core = config.to_core()
        self.adaptive_softmax = AdaptiveSoftmax(core) if core.adaptive_softmax_cutoffs is not None else None
        if self.adaptive_softmax is None:
            check_full_head(config, "MegaForCausalLM")
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size) if self.adaptive_softmax is None else None
        if self.adaptive_softmax is not None or core.adaptive_input_cutoffs is not None:
            # nothing to tie by HF's word-embedding rule (adaptive weights are shared by reference)
            self._tied_weights_keys = {}
        self.post_init()

    def tied_adaptive_input(self) -> AdaptiveInput | None:
        """The adaptive input whose tables the adaptive softmax shares (``tie_adaptive_weights``), or None."""
        if self.adaptive_softmax is None or not self.adaptive_softmax.tie_weights:
            return None
        return self.mega.embedding_layer.word_embeddings

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def _prepare_cache_for_generation(self, generation_config: Any, model_kwargs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """transformers' preparation, then (5.x) an empty :class:`MegaCache` where it made none: its
        assisted decoding needs the cache before the first forward, to record the states it may
        roll back to (an assistant's own cache records from the start, as 5.x does for its caches)."""
        prepared = super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        if CACHE_KEYWORD == "cache" and generation_config.use_cache and model_kwargs.get("cache") is None:
            cache = MegaCache()
            if getattr(generation_config, "is_assistant", False):
                cache.activate_past_recording(recurrent_states_to_keep=generation_config.num_assistant_tokens)
            model_kwargs["cache"] = cache
        return prepared

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def static_decoder(self, *, max_length: int | None = None, compile: bool = False) -> StaticDecoder:
        """Token-by-token decoding outside ``generate()`` with fixed buffers (see
        :func:`~.static_decoding.static_decoder`): ``model.static_decoder().greedy(ids, max_new_tokens=n)``."""
        from .static_decoding import static_decoder

        return static_decoder(self, max_length=max_length, compile=compile)

    def prepare_inputs_for_generation(
        self,
        input_ids: Tensor,
        past_key_values: MegaCache | None = None,
        attention_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool = True,
        cache: MegaCache | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Feed only the positions the cache has not seen; pass every other keyword on.

        The mask always spans the whole sequence. With ``inputs_embeds`` generation starts from
        the embeddings (``input_ids`` then holds only the generated tokens): the first step feeds
        them, later steps the new tokens. Keywords are not whitelisted: ``output_attentions``,
        ``output_hidden_states``, ``logits_to_keep``, ``encoder_hidden_states`` ... reach
        ``forward``, which rejects the ones it does not know by name.
        """
        check_can_generate(self.config)
        mega_cache = cache if cache is not None else past_key_values
        consumed = mega_cache.get_seq_length() if mega_cache is not None else 0
        inputs: dict[str, Any] = {"attention_mask": attention_mask, "use_cache": use_cache, CACHE_KEYWORD: mega_cache}
        prompt_embeds = 0 if inputs_embeds is None else inputs_embeds.shape[1]
        if consumed < prompt_embeds:
            inputs["inputs_embeds"] = inputs_embeds[:, consumed:]  # type: ignore[index]
        else:
            # input_ids (B, L_ids) continue the prompt embeddings; the cache saw consumed - prompt of them
            inputs["input_ids"] = input_ids[:, consumed - prompt_embeds :]
        unseen = slice(consumed, None)
        for name, value in kwargs.items():
            if value is None or name in GENERATE_ONLY_KWARGS:
                continue
            if name in PER_POSITION_KWARGS:
                value = value[:, unseen]  # (B, L) -> the positions fed now
            inputs[name] = value
        return inputs

    def _reorder_cache(self, cache: MegaCache, beam_idx: Tensor) -> MegaCache:
        cache.reorder_cache(beam_idx)
        return cache

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        past_key_values: MegaCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: MegaCache | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithCrossAttentions | tuple[Tensor, ...]:
        """``logits_to_keep``: an int k computes the logits of the last k positions only (0: all);
        a 1-D tensor of positions computes those (generate() asks for the last one)."""
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        shift_labels = kwargs.pop("shift_labels", None)
        if labels is not None or shift_labels is not None:
            use_cache = False
        outputs = self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        features = tanh_dense(kept_positions(outputs.last_hidden_state, logits_to_keep), self.dense)
        if self.adaptive_softmax is not None:
            tied = self.tied_adaptive_input()
            logits = self.adaptive_softmax.log_probs(features, tied_input=tied)
            loss = target_log_prob_loss(
                features,
                labels,
                lambda x, y: self.adaptive_softmax.target_log_probs(x, y, tied_input=tied),
                vocab_size=self.config.vocab_size,
                num_items_in_batch=num_items_in_batch,
                shift_labels=shift_labels,
            )
        else:
            logits = self.lm_head(features)
            loss = token_loss(
                logits, labels, shift=True, num_items_in_batch=num_items_in_batch, shift_labels=shift_labels
            )
        return self._head_output(
            CausalLMOutputWithCrossAttentions,
            outputs,
            return_dict,
            cache=_cache_of(outputs),
            loss=loss,
            logits=logits,
        )


class MegaForMaskedLM(MegaPreTrainedModel):
    """MEGA with a masked-token prediction head (``mlm_head``, tied to the word embeddings)."""

    accepts_loss_kwargs = True  # the loss honours num_items_in_batch (.losses.token_loss)

    _tied_weights_keys = {"mlm_head.weight": HF_WORD_EMBEDDINGS}

    def __init__(self, config: MegaConfig) -> None:
        require_token_input(config, "MegaForMaskedLM")
        super().__init__(config)
        if config.is_decoder:
            logger.warning("MegaForMaskedLM is used with is_decoder=True: set is_decoder=False for bidirectional attention")
        if config.adaptive_softmax_cutoffs is not None:
            raise ValueError(
                "MegaForMaskedLM has a full-vocabulary head: adaptive_softmax_cutoffs is supported by MegaForCausalLM "
                "only; set adaptive_softmax_cutoffs=None"
            )
        check_full_head(config, "MegaForMaskedLM")
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.dense = lm_hidden_dense(config)
        self.mlm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.mlm_head = new_embeddings

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> MaskedLMOutput | tuple[Tensor, ...]:
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self._encode(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        logits = self.mlm_head(tanh_dense(outputs.last_hidden_state, self.dense))
        loss = token_loss(logits, labels, shift=False, num_items_in_batch=num_items_in_batch)
        return self._head_output(MaskedLMOutput, outputs, return_dict, loss=loss, logits=logits)


def kept_positions(hidden: Tensor, logits_to_keep: int | Tensor) -> Tensor:
    """(B, L, D) -> (B, K, D): the positions whose logits are wanted (``logits_to_keep``)."""
    if isinstance(logits_to_keep, Tensor):
        if logits_to_keep.dim() != 1:
            raise ValueError(f"logits_to_keep as a tensor must be 1-D positions, got shape {tuple(logits_to_keep.shape)}")
        return hidden[:, logits_to_keep]
    if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
        raise ValueError(f"logits_to_keep must be an int >= 0 (0 keeps all) or a 1-D tensor, got {logits_to_keep!r}")
    return hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]


def check_full_head(config: MegaConfig, model: str) -> None:
    """A full-vocabulary head cannot share one table with an adaptive input: say which fields to set."""
    if config.adaptive_input_cutoffs is not None and config.tie_word_embeddings:
        raise ValueError(
            f"{model}: tie_word_embeddings=True ties the full-vocabulary head to one embedding table, but "
            "adaptive_input_cutoffs splits the vocabulary over several bands; set tie_word_embeddings=False "
            "(or, for MegaForCausalLM, an adaptive softmax with tie_adaptive_weights=True)"
        )


def check_can_generate(config: MegaConfig) -> None:
    """Incremental decoding needs a causal EMA and causal attention; say which fields to set."""
    problems = []
    if config.bidirectional:
        problems.append("bidirectional=False (a bidirectional EMA reads future tokens)")
    if not config.is_decoder:
        problems.append("is_decoder=True (causal attention)")
    if problems:
        raise ValueError("MegaForCausalLM cannot generate with this config: set " + " and ".join(problems))


def _cache_of(outputs: Any) -> MegaCache | None:
    name = cache_field(type(outputs))
    return getattr(outputs, name) if name is not None else None
