"""``MegaCausalLM``: the fairseq2 face of the core MEGA decoder.

All MEGA math is in :mod:`mega_plugin.core`; this module translates fairseq2's calling
conventions (``BatchLayout`` for padded and packed batches, ``IncrementalStateBag`` for
decoding, the ``CausalLM`` loss contract) and nothing else.
"""

from __future__ import annotations

from typing import Literal, final

import torch
from fairseq2.models.clm import CausalLM
from fairseq2.nn import BatchLayout, IncrementalState, IncrementalStateBag, Projection, StandardEmbedding
from torch import Tensor, nn

from ...core.adaptive_input import AdaptiveInput
from ...core.adaptive_softmax import AdaptiveSoftmax
from ...core.backbone import apply_final_norm
from ...core.embeddings import add_token_type_embeddings, scale_token_embeddings
from ...core.heads import MegaLMHeadTransform
from ...core.init import initialize_tree
from ...core.packing import document_rows
from ...core.stack import MegaLayerStack
from ...core.state import MegaState
from ...core.tracing import capturing_graph
from .loss import check_loss_arguments, logits_or_loss

"""Loss reductions of the ``CausalLM`` contract."""


@final
class MegaIncrementalState(IncrementalState):
    """The core :class:`MegaState` (EMA state + cached chunk keys/values per layer) in a state bag."""

    def __init__(self, state: MegaState) -> None:
        self.state = state

    def reorder(self, new_order: Tensor) -> None:
        self.state.reorder(new_order)

    def size_bytes(self) -> int:
        return self.state.size_bytes()

    def capacity_bytes(self) -> int:
        # The state grows by concatenation: nothing is reserved beyond what is held.
        return self.state.size_bytes()


class MegaFrontend(nn.Module):
    """Token embedding (``embed``: a fairseq2 ``StandardEmbedding``, or the core's
    :class:`~mega_plugin.core.adaptive_input.AdaptiveInput`), plus the optional type-0 row.

    The token-type handling is the core's (:func:`~mega_plugin.core.embeddings.add_token_type_embeddings`);
    fairseq2 batches carry no type ids, so every position gets type 0, as in HF without ids.
    ``scale`` (core ``scale_embeddings``: sqrt(D), or None) multiplies the token embeddings.
    """

    def __init__(
        self,
        embed: StandardEmbedding | AdaptiveInput,
        token_type_embed: StandardEmbedding | None,
        *,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.embed = embed
        self.token_type_embed = token_type_embed
        self.scale = scale

    def forward(self, seqs: Tensor) -> Tensor:
        """(*) token ids -> (*, D)."""
        return add_token_type_embeddings(scale_token_embeddings(self.embed(seqs), self.scale), self.token_type_embed)


class MegaDecoder(nn.Module):
    """The core :class:`MegaLayerStack` (``layers``) and the optional ``final_norm`` (core
    ``add_final_norm``), with the reference initialisation."""

    def __init__(self, layers: MegaLayerStack, *, init_std: float, final_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = layers
        self.final_norm = final_norm
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        initialize_tree(self.layers, std=self.init_std)

    def forward(
        self, hidden: Tensor, *, key_mask: Tensor | None = None, state: MegaState | None = None
    ) -> tuple[Tensor, MegaState | None]:
        """(B, L, D) -> (B, L, D) and the new streaming state when ``state`` is given."""
        result = self.layers(hidden, key_mask=key_mask, state=state, use_cache=state is not None)
        result = apply_final_norm(result, self.final_norm)
        return result.hidden, result.state


class MegaCausalLM(CausalLM):
    """A causal MEGA language model that fairseq2 trains, loads and generates with.

    ``final_proj`` is a fairseq2 ``Projection`` (logits), or the core's
    :class:`~mega_plugin.core.adaptive_softmax.AdaptiveSoftmax`, whose outputs are full-vocabulary
    log-probabilities (the loss's log-softmax leaves them unchanged).
    """

    def __init__(
        self,
        decoder_frontend: MegaFrontend,
        decoder: MegaDecoder,
        head: MegaLMHeadTransform,
        final_proj: Projection | AdaptiveSoftmax,
        *,
        pad_idx: int | None,
        max_seq_len: int,
        model_dim: int | None = None,
    ) -> None:
        super().__init__(max_seq_len)
        self.model_dim = model_dim if model_dim is not None else final_proj.input_dim
        self.decoder_frontend = decoder_frontend
        self.decoder = decoder
        self.head = head
        self.final_proj = final_proj
        self.pad_idx = pad_idx

    def forward(  # type: ignore[override]
        self,
        seqs: Tensor,
        seqs_layout: BatchLayout,
        targets: Tensor | None = None,
        *,
        state_bag: IncrementalStateBag | None = None,
        label_smoothing: float = 0.0,
        target_mask: Tensor | None = None,
        reduction: Literal["sum", "mean"] = "sum",
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (``targets`` None), the loss, or ``(loss, logits)`` with ``return_logits``.

        ``seqs`` is (N, S) with a padded layout or (S,) with a packed one; logits have the
        shape of ``seqs`` plus the vocabulary dimension.
        """
        check_loss_arguments("seqs", seqs, targets, target_mask, reduction)
        if seqs_layout.packed:
            if state_bag is not None:
                raise ValueError("incremental decoding takes padded (N, S) batches, not packed ones")
            hidden = self._forward_packed(seqs, seqs_layout)
        else:
            hidden = self._forward_padded(seqs, seqs_layout, state_bag)
        return logits_or_loss(
            self.project(self.head(hidden)),
            targets,
            pad_idx=self.pad_idx,
            label_smoothing=label_smoothing,
            target_mask=target_mask,
            reduction=reduction,
            return_logits=return_logits,
        )

    def project(self, features: Tensor) -> Tensor:
        """(*, D) -> (*, V): logits, or log-probabilities through an adaptive softmax."""
        if isinstance(self.final_proj, AdaptiveSoftmax):
            embed = self.decoder_frontend.embed
            tied = embed if self.final_proj.tie_weights and isinstance(embed, AdaptiveInput) else None
            return self.final_proj.log_probs(features, tied_input=tied)
        return self.final_proj(features)

    def _forward_padded(self, seqs: Tensor, layout: BatchLayout, state_bag: IncrementalStateBag | None) -> Tensor:
        if seqs.dim() != 2:
            raise ValueError(f"seqs must be (N, S) with a padded layout, got shape {tuple(seqs.shape)}")
        key_mask = layout.position_indices >= 0 if layout.padded else None  # (N, S)
        hidden = self.decoder_frontend(seqs)  # (N, S, D)
        if state_bag is None:
            return self.decoder(hidden, key_mask=key_mask)[0]
        held = state_bag.maybe_get_state(self, MegaIncrementalState)
        state = held.state if held is not None else MegaState.empty(len(self.decoder.layers))
        if state.position != state_bag.step_nr:
            raise ValueError(
                f"the state bag is at step {state_bag.step_nr} but the MEGA state has consumed "
                f"{state.position} tokens; feed every step once, in order"
            )
        hidden, new_state = self.decoder(hidden, key_mask=key_mask, state=state)
        assert new_state is not None
        state_bag.set_state(self, MegaIncrementalState(new_state))
        return hidden

    def _forward_packed(self, seqs: Tensor, layout: BatchLayout) -> Tensor:
        # Unpack the documents into rows so neither the EMA nor the attention crosses a
        # document boundary, run them as a padded batch, and pack the outputs back.
        if seqs.dim() != 1:
            raise ValueError(f"seqs must be (S,) with a packed layout, got shape {tuple(seqs.shape)}")
        begins = layout.seq_begin_indices_pt[:-1].to(seqs.device, torch.long)  # (B,)
        lens = layout.seq_lens_pt.to(seqs.device, torch.long)  # (B,)
        rows = document_rows(begins, lens, total=seqs.shape[0], width=layout.max_seq_len)  # core/packing.py
        hidden = self.decoder_frontend(rows.unpack(seqs))  # (B, W, D)
        # None when every row is full (eager only: a captured graph cannot read values, and
        # an all-True mask gives the same result)
        key_mask = rows.valid if capturing_graph() or not bool(rows.valid.all()) else None
        hidden = self.decoder(hidden, key_mask=key_mask)[0]
        return rows.pack(hidden, seqs.shape[0])  # (S, D)
