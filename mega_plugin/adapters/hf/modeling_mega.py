"""``MegaPreTrainedModel`` and ``MegaModel``: the HF face of the core MEGA stack.

All MEGA math lives in :mod:`mega_plugin.core`; this module translates HF conventions
(0/1 attention masks, ``return_dict``, output classes, the cache keyword) and nothing else.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions
from transformers.utils import ModelOutput

from ...backends import accelerate
from ...core.backbone import build_final_norm, run_backbone, run_packed
from ...core.embeddings import MegaEmbeddings
from ...core.heads import MegaPooler
from ...core.init import initialize_module
from ...core.packing import is_packed
from ...core.stack import MegaLayerStack
from ...core.tracing import capturing_graph
from .attention_implementation import apply_attention_implementation
from .cache import MegaCache
from .checkpointing import as_checkpointing_layers
from .masks_4d import documents_from_4d_mask
from .recorded_calls import recorded_pieces, run_in_pieces
from .configuration_mega import MegaConfig
from .loading import (
    check_config,
    check_layer_count,
    check_lm_dense_layer,
    checkpoint_shapes,
    explain_shape_mismatch,
    local_directory,
    read_config_json,
)
from .outputs import OutputT, finish, has_field, make_output


class MegaPreTrainedModel(PreTrainedModel):
    """Weight initialisation and checkpoint conventions shared by every MEGA class."""

    config_class = MegaConfig
    config: MegaConfig
    base_model_prefix = "mega"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MegaBlock"]
    _supports_sdpa = True
    """attn_implementation "eager" | "sdpa" choose the attention kernel (.attention_implementation)."""
    _supports_flash_attn = False
    accepts_loss_kwargs = False
    """Whether ``forward`` honours ``Trainer``'s ``num_items_in_batch``. Every forward takes ``**kwargs``,
    which ``Trainer`` would read as yes and then stop dividing accumulated losses by the number of
    micro-batches; only the token-level heads (LM, token classification) say yes, and do honour it."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained`` with one clear error per bad checkpoint.

        A config.json with invalid values, an EMA-direction mismatch, a truncated, corrupt or
        unsafe weights file, and weights whose shapes disagree with the config each raise an
        error naming the file and the field (see :mod:`.loading`).
        """
        source = pretrained_model_name_or_path
        directory = local_directory(source, kwargs.get("subfolder") or "")
        config = kwargs.get("config")
        if isinstance(config, MegaConfig):
            check_config(config, directory)
            if not kwargs.get("ignore_mismatched_sizes", False):
                check_ema_direction(source, config, kwargs)
        wants_info = bool(kwargs.pop("output_loading_info", False))
        try:
            model, info = super().from_pretrained(source, *args, output_loading_info=True, **kwargs)
        except Exception as err:
            clearer = explain_load_failure(cls, directory, config, kwargs)
            if clearer is None:
                raise
            raise clearer from err
        if not kwargs.get("ignore_mismatched_sizes", False):
            check_layer_count(source, directory, model.config, info)
            check_lm_dense_layer(source, directory, model, info)
        return (model, info) if wants_info else model

    def post_init(self) -> None:
        super().post_init()
        self._apply_attention_implementation()
        as_checkpointing_layers(self)  # transformers' GradientCheckpointingLayer, same keys
        # the backends (mega_plugin.backends) swap in their fast modules once, at build
        accelerate(self)

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.resize_token_embeddings``; refused with adaptive input (several band tables)."""
        if getattr(self.config, "adaptive_input_cutoffs", None) is not None:
            raise ValueError(
                "resize_token_embeddings is not supported with adaptive_input_cutoffs set: the vocabulary "
                "is split over several band tables (and an adaptive softmax's clusters)"
            )
        return super().resize_token_embeddings(*args, **kwargs)

    def set_attn_implementation(self, attn_implementation: Any, *args: Any, **kwargs: Any) -> None:
        super().set_attn_implementation(attn_implementation, *args, **kwargs)
        self._apply_attention_implementation()

    def get_correct_attn_implementation(self, requested_attention: str | None, *args: Any, **kwargs: Any) -> str:
        # None is transformers' default (it then says "sdpa"): MEGA keeps the registry's auto choice
        self._requested_attention = requested_attention
        return super().get_correct_attn_implementation(requested_attention, *args, **kwargs)

    def _apply_attention_implementation(self) -> None:
        requested = getattr(self, "_requested_attention", None)
        apply_attention_implementation(self, requested, configured_kernel=self.config.attention_kernel)

    def _init_weights(self, module: nn.Module) -> None:
        if loaded_from_checkpoint(module):
            return
        initialize_module(module, std=self.config.initializer_range)

    def _encode(
        self,
        input_ids: Tensor | None,
        *,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        inputs_embeds: Tensor | None,
        output_attentions: bool | None,
        output_hidden_states: bool | None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """The uncached ``self.mega`` pass every encoder head starts with (always an output object)."""
        return self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )

    def _head_output(
        self, output_class: type[OutputT], encoded: ModelOutput, return_dict: bool | None, **fields: Any
    ) -> OutputT | tuple[Any, ...]:
        """A head's output with the backbone's hidden states and attentions, as object or tuple."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if has_field(output_class, "cross_attentions"):
            fields.setdefault("cross_attentions", getattr(encoded, "cross_attentions", None))
        output = make_output(
            output_class, hidden_states=encoded.hidden_states, attentions=encoded.attentions, **fields
        )
        return finish(output, return_dict)


def loaded_from_checkpoint(module: nn.Module) -> bool:
    """True if transformers 5.x already loaded every own tensor of ``module`` from a checkpoint.

    5.x flags loaded tensors with ``_is_hf_initialized`` and, when some *other* keys are missing
    (e.g. the pooler of an encoder rebuilt by ``EncoderDecoderModel.from_pretrained``), still
    calls ``_init_weights`` on every module; its own guard only covers ``torch.nn.init`` calls on
    whole tensors, not the in-place initialisers of the EMA or the embedding's padding row.
    """
    tensors = [t for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)) if t is not None]
    return bool(tensors) and all(getattr(t, "_is_hf_initialized", False) for t in tensors)


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


def explain_load_failure(
    cls: type[MegaPreTrainedModel], directory: Path | None, config: Any, kwargs: dict[str, Any]
) -> Exception | None:
    """After a failed load of a local checkpoint: the clearer error, or None to keep the original."""
    if directory is None:
        return None
    found = checkpoint_shapes(directory)  # raises CheckpointError for unreadable or unsafe files
    if found is None:
        return None
    if not isinstance(config, MegaConfig):
        try:
            config = MegaConfig.from_pretrained(directory)
        except (OSError, ValueError):
            return None
        check_config(config, directory)
    if kwargs.get("ignore_mismatched_sizes", False):
        return None
    path, shapes = found
    return explain_shape_mismatch(config, path, shapes, read_config_json(directory))


def check_ema_direction(source: Any, config: MegaConfig, kwargs: dict[str, Any]) -> None:
    """Refuse, with an explanation, to load a bidirectional-EMA checkpoint into a causal config (or back)."""
    try:
        saved = MegaConfig.from_pretrained(source, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs})
    except (OSError, ValueError):
        return  # no readable config.json: let from_pretrained report it
    if bool(saved.bidirectional) == bool(config.bidirectional):
        return
    rows = 2 * saved.hidden_size if saved.bidirectional else saved.hidden_size
    raise ValueError(
        f"{source}: the checkpoint's EMA is {'bidirectional' if saved.bidirectional else 'causal'} "
        f"(bidirectional={saved.bidirectional}: ema_gate parameters have {rows} rows) but the config asks for "
        f"bidirectional={config.bidirectional} ({2 * config.hidden_size if config.bidirectional else config.hidden_size} rows). "
        "A bidirectional (masked-LM) checkpoint has no causal EMA to reuse; either keep bidirectional="
        f"{saved.bidirectional}, or pass ignore_mismatched_sizes=True to re-initialise the EMA parameters "
        "(they then need training)."
    )


def resolve_cache(
    *, cache: MegaCache | None, past_key_values: MegaCache | None, use_cache: bool
) -> MegaCache | None:
    """The cache passed under either keyword (5.x ``cache``, 4.57 ``past_key_values``)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("pass the MEGA cache once, as cache= (transformers 5) or past_key_values= (4.57)")
    found = cache if cache is not None else past_key_values
    if found is not None and not isinstance(found, MegaCache) and is_empty_foreign_cache(found):
        # generate() of a wrapping model (EncoderDecoderModel) builds a standard cache before the
        # first step; an empty one holds nothing, so MEGA's own cache replaces it (below) and is returned.
        found = None
    if found is not None and not isinstance(found, MegaCache):
        raise TypeError(
            f"MEGA keeps its own streaming cache (MegaCache); got {type(found).__name__}. "
            "Pass the cache returned by a previous call, or none."
        )
    if found is None and use_cache:
        found = MegaCache()
    return found


def is_empty_foreign_cache(cache: Any) -> bool:
    """True for a transformers cache object (DynamicCache, EncoderDecoderCache, ...) holding no tokens."""
    length = getattr(cache, "get_seq_length", None)
    if length is None:
        return False
    try:
        return int(length()) == 0
    except (TypeError, ValueError, AttributeError, IndexError):
        return False


class MegaModel(MegaPreTrainedModel):
    """The bare MEGA encoder/decoder returning hidden states (and the pooled first token).

    Set ``is_decoder=True`` and ``bidirectional=False`` for causal use; add
    ``add_cross_attention=True`` for the decoder of an encoder-decoder model, which then takes
    ``encoder_hidden_states`` (B, S, hidden_size) and ``encoder_attention_mask`` (B, S).
    """

    def __init__(self, config: MegaConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        core = config.to_core()
        self.embedding_layer = MegaEmbeddings(core)
        self.layers = MegaLayerStack(core)
        self.final_norm = build_final_norm(core)  # add_final_norm: the original pre-norm LMs' last norm
        self.pooler = MegaPooler(config.hidden_size) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        # input_type='real_numbers' has no token table: its input embedding is the real-number one
        layer = self.embedding_layer
        return layer.word_embeddings if layer.word_embeddings is not None else layer.real_number_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        if self.embedding_layer.word_embeddings is None:
            self.embedding_layer.real_number_embeddings = value
        else:
            self.embedding_layer.word_embeddings = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        past_key_values: MegaCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: MegaCache | None = None,
        input_values: Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple[Tensor, ...]:
        """``input_values`` (B, L) floats replace ``input_ids`` for ``input_type='real_numbers'``."""
        _reject_unknown_kwargs(kwargs)
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("pass either input_ids or inputs_embeds, not both")
        if config.input_type == "real_numbers":
            if input_ids is not None:
                raise ValueError("this model has input_type='real_numbers': pass input_values (batch, length) floats, not input_ids")
            if input_values is None and inputs_embeds is None:
                raise ValueError("pass input_values (batch, length) floats or inputs_embeds")
        elif input_values is not None:
            raise ValueError("input_values needs input_type='real_numbers'; this model takes input_ids")
        elif input_ids is None and inputs_embeds is None:
            raise ValueError("pass input_ids or inputs_embeds")
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}")
        if inputs_embeds is not None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size):
            raise ValueError(
                f"inputs_embeds must have shape (batch, length, hidden_size={config.hidden_size}), "
                f"got {tuple(inputs_embeds.shape)}"
            )
        use_cache = bool(config.use_cache if use_cache is None else use_cache) and config.is_decoder
        mega_cache = resolve_cache(cache=cache, past_key_values=past_key_values, use_cache=use_cache)
        state = mega_cache.state if mega_cache is not None else None

        position_ids = kwargs.get("position_ids")
        inputs = dict(input_ids=input_ids, token_type_ids=token_type_ids, inputs_embeds=inputs_embeds, input_values=input_values)
        length = next(t for t in (input_ids, inputs_embeds, input_values) if t is not None).shape[1]
        if attention_mask is not None and attention_mask.dim() == 4:
            if mega_cache is not None and mega_cache.get_seq_length() > 0:
                raise ValueError("a 4-D attention_mask cannot continue a cache: pass the (batch, length) padding mask")
            position_ids = documents_from_4d_mask(attention_mask, length=length, causal=self.layers.causal)
            attention_mask = None  # the documents are all it said
        if position_ids is not None and not capturing_graph() and is_packed(position_ids, attention_mask):
            check_packed_call(
                attention_mask=attention_mask,
                cache=mega_cache,
                encoder_hidden_states=encoder_hidden_states,
                output_attentions=output_attentions,
            )
            mega_cache = None
            result = run_packed(
                self.embedding_layer,
                self.layers,
                position_ids=position_ids,
                output_hidden_states=output_hidden_states,
                final_norm=self.final_norm,
                **inputs,
            )
        else:
            check_position_ids(position_ids, attention_mask)
            run = partial(
                run_backbone,
                self.embedding_layer,
                self.layers,
                output_hidden_states=output_hidden_states,
                encoder_hidden=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask,
                final_norm=self.final_norm,
            )
            pieces = [(0, length)] if output_attentions else recorded_pieces(mega_cache, length)
            if len(pieces) > 1:
                assert mega_cache is not None
                result = run_in_pieces(run, mega_cache, pieces, per_position=inputs, attention_mask=attention_mask)
            else:
                result = run(
                    **inputs,
                    attention_mask=attention_mask,
                    state=state,
                    use_cache=mega_cache is not None,
                    output_attentions=output_attentions,
                )
                if mega_cache is not None:
                    mega_cache.state = result.state
        pooled = self.pooler(result.hidden) if self.pooler is not None else None
        output = make_output(
            BaseModelOutputWithPoolingAndCrossAttentions,
            cache=mega_cache,
            last_hidden_state=result.hidden,
            pooler_output=pooled,
            hidden_states=result.hidden_states,
            attentions=result.attentions,
            cross_attentions=result.cross_attentions,
        )
        return finish(output, return_dict)


def check_packed_call(
    *, attention_mask: Tensor | None, cache: Any, encoder_hidden_states: Tensor | None, output_attentions: bool
) -> None:
    """A packed batch (position_ids restarting at 0) runs each document alone; say what cannot go with it."""
    problems = []
    if attention_mask is not None and not bool(attention_mask.to(torch.bool).all()):
        problems.append("an attention_mask with padding (a packed batch has none: documents end where positions restart)")
    if cache is not None and cache.get_seq_length() > 0:
        problems.append("a cache holding earlier tokens (packed batches are for training and scoring, not decoding)")
    if encoder_hidden_states is not None:
        problems.append("encoder_hidden_states (cross-attention per packed document is not supported)")
    if output_attentions:
        problems.append("output_attentions=True (each document has its own weights; run documents as padded rows)")
    if problems:
        raise ValueError("position_ids restart at 0 (a packed batch), which cannot go with " + "; ".join(problems))


def check_position_ids(position_ids: Tensor | None, attention_mask: Tensor | None) -> None:
    """Accept ``position_ids`` that only count the tokens; refuse packed (padding-free) batches.

    MEGA has no absolute positions (its positional information is the EMA and the relative
    bias), so counting positions change nothing. Positions that restart inside a row mark
    documents packed into one row (transformers' padding-free collators): the EMA and the
    attention would run across the document boundaries, so that is refused rather than
    silently computed. Only real tokens (``attention_mask`` 1) are checked: left padding may
    carry any position.
    """
    if position_ids is None or capturing_graph() or position_ids.shape[-1] < 2:
        return
    steps = position_ids[..., 1:] - position_ids[..., :-1]  # (B, L - 1)
    if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[-1] == position_ids.shape[-1]:
        real = attention_mask.to(torch.bool)
        steps = steps.masked_fill(~(real[..., 1:] & real[..., :-1]), 1)
    if bool((steps != 1).any()):
        raise ValueError(
            "position_ids jump inside a row: positions must count 0, 1, 2, ... within each document, "
            "restarting at 0 where a packed document begins"
        )


def _reject_unknown_kwargs(kwargs: dict[str, Any]) -> None:
    # HF plumbing may pass a few keywords we have no use for; anything else is a caller mistake.
    ignored = {"position_ids", "cache_position", "head_mask", "logits_to_keep", "num_items_in_batch"}
    unknown = set(kwargs) - ignored
    if unknown:
        raise TypeError(f"MEGA forward() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    if kwargs.get("head_mask") is not None:
        raise ValueError("head_mask is not supported: MEGA attention has a single head")
