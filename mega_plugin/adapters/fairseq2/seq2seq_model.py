"""``MegaSeq2SeqModel``: the fairseq2 face of an encoder-decoder MEGA (translation).

fairseq2's seq2seq generators (``BeamSearchSeq2SeqGenerator``, ``SamplingSeq2SeqGenerator``)
call the whole model at every step with the source batch and the target tokens not yet fed; the
model encodes the source once per state bag and keeps, in one :class:`MegaSeq2SeqState`, the
encoder output, its key mask and the decoder's core :class:`~mega_plugin.core.state.MegaState`
(EMA states, self-attention chunk keys/values, and the cross-attention's projected encoder keys
and values). Beam search reorders all of them. The math is the core's.
"""

from __future__ import annotations

from typing import Literal, final

from fairseq2.models.seq2seq import Seq2SeqModel
from fairseq2.nn import BatchLayout, IncrementalState, IncrementalStateBag, Projection
from torch import Tensor, nn

from ...core.init import initialize_tree
from ...core.stack import MegaLayerStack
from ...core.state import MegaState
from .loss import check_loss_arguments, logits_or_loss
from .model import MegaFrontend


@final
class MegaSeq2SeqState(IncrementalState):
    """Encoder output (B, S, D), its (B, S) key mask, and the decoder's streaming state."""

    def __init__(self, encoder_output: Tensor, encoder_mask: Tensor | None, decoder: MegaState) -> None:
        self.encoder_output = encoder_output
        self.encoder_mask = encoder_mask
        self.decoder = decoder

    def reorder(self, new_order: Tensor) -> None:
        self.encoder_output = self.encoder_output.index_select(0, new_order)
        if self.encoder_mask is not None:
            self.encoder_mask = self.encoder_mask.index_select(0, new_order)
        self.decoder.reorder(new_order)

    def size_bytes(self) -> int:
        encoder = self.encoder_output.numel() * self.encoder_output.element_size()
        return encoder + self.decoder.size_bytes()

    def capacity_bytes(self) -> int:
        return self.size_bytes()  # grows by concatenation: nothing reserved beyond what is held


class MegaStack(nn.Module):
    """A core :class:`MegaLayerStack` (``layers``) with the reference initialisation."""

    def __init__(self, layers: MegaLayerStack, *, init_std: float) -> None:
        super().__init__()
        self.layers = layers
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        initialize_tree(self.layers, std=self.init_std)

    def forward(
        self,
        hidden: Tensor,
        *,
        key_mask: Tensor | None = None,
        encoder_output: Tensor | None = None,
        encoder_mask: Tensor | None = None,
        state: MegaState | None = None,
    ) -> tuple[Tensor, MegaState | None]:
        """(B, L, D) -> (B, L, D) and the new streaming state when ``state`` is given."""
        result = self.layers(
            hidden,
            key_mask=key_mask,
            state=state,
            use_cache=state is not None,
            encoder_hidden=encoder_output,
            encoder_attention_mask=encoder_mask,
        )
        return result.hidden, result.state


def key_mask_of(layout: BatchLayout) -> Tensor | None:
    """(N, S) bool, True at real tokens, for a padded layout; None when nothing is padded."""
    if layout.packed:
        raise ValueError("MegaSeq2SeqModel takes padded (N, S) batches, not packed ones")
    return layout.position_indices >= 0 if layout.padded else None


class MegaSeq2SeqModel(Seq2SeqModel):
    """An encoder-decoder MEGA that fairseq2 trains, loads and decodes with its seq2seq generators."""

    def __init__(
        self,
        encoder_frontend: MegaFrontend,
        encoder: MegaStack,
        decoder_frontend: MegaFrontend,
        decoder: MegaStack,
        final_proj: Projection,
        *,
        pad_idx: int | None,
        max_source_seq_len: int,
        max_target_seq_len: int,
    ) -> None:
        super().__init__(max_source_seq_len, max_target_seq_len)
        self.model_dim = final_proj.input_dim
        self.encoder_frontend = encoder_frontend
        self.encoder = encoder
        self.decoder_frontend = decoder_frontend
        self.decoder = decoder
        self.final_proj = final_proj
        self.pad_idx = pad_idx

    def encode(self, source_seqs: Tensor, source_seqs_layout: BatchLayout) -> tuple[Tensor, Tensor | None]:
        """(N, S) source ids -> encoder output (N, S, D) and its key mask (N, S) or None."""
        if source_seqs.dim() != 2:
            raise ValueError(f"source_seqs must be (N, S), got shape {tuple(source_seqs.shape)}")
        mask = key_mask_of(source_seqs_layout)
        return self.encoder(self.encoder_frontend(source_seqs), key_mask=mask)[0], mask

    def decode(
        self,
        target_seqs: Tensor,
        target_seqs_layout: BatchLayout,
        encoder_output: Tensor,
        encoder_mask: Tensor | None,
    ) -> Tensor:
        """Teacher forcing: (N, T) target ids -> decoder output (N, T, D)."""
        if target_seqs.dim() != 2:
            raise ValueError(f"target_seqs must be (N, T), got shape {tuple(target_seqs.shape)}")
        hidden = self.decoder_frontend(target_seqs)
        return self.decoder(
            hidden, key_mask=key_mask_of(target_seqs_layout), encoder_output=encoder_output, encoder_mask=encoder_mask
        )[0]

    def forward(  # type: ignore[override]
        self,
        source_seqs: Tensor,
        source_seqs_layout: BatchLayout,
        target_seqs: Tensor,
        target_seqs_layout: BatchLayout,
        targets: Tensor | None = None,
        *,
        state_bag: IncrementalStateBag | None = None,
        label_smoothing: float = 0.0,
        target_mask: Tensor | None = None,
        reduction: Literal["sum", "mean"] = "sum",
        return_logits: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (``targets`` None), the loss, or ``(loss, logits)`` with ``return_logits``."""
        check_loss_arguments("target_seqs", target_seqs, targets, target_mask, reduction)
        if state_bag is None:
            encoder_output, encoder_mask = self.encode(source_seqs, source_seqs_layout)
            hidden = self.decode(target_seqs, target_seqs_layout, encoder_output, encoder_mask)
        else:
            hidden = self._decode_incrementally(source_seqs, source_seqs_layout, target_seqs, state_bag)
        return logits_or_loss(
            self.final_proj(hidden),
            targets,
            pad_idx=self.pad_idx,
            label_smoothing=label_smoothing,
            target_mask=target_mask,
            reduction=reduction,
            return_logits=return_logits,
        )

    def _decode_incrementally(
        self, source_seqs: Tensor, source_layout: BatchLayout, target_seqs: Tensor, state_bag: IncrementalStateBag
    ) -> Tensor:
        # The first call encodes the source; every call feeds only the target tokens not yet seen.
        held = state_bag.maybe_get_state(self, MegaSeq2SeqState)
        if held is None:
            encoder_output, encoder_mask = self.encode(source_seqs, source_layout)
            held = MegaSeq2SeqState(encoder_output, encoder_mask, MegaState.empty(len(self.decoder.layers)))
        if held.decoder.position != state_bag.step_nr:
            raise ValueError(
                f"the state bag is at step {state_bag.step_nr} but the MEGA decoder state has consumed "
                f"{held.decoder.position} tokens; feed every step once, in order"
            )
        if target_seqs.dim() != 2 or target_seqs.shape[0] != held.encoder_output.shape[0]:
            raise ValueError(
                f"target_seqs must be (N, T) with N = {held.encoder_output.shape[0]} (the batch the state holds), "
                f"got shape {tuple(target_seqs.shape)}"
            )
        first = held.decoder.position == 0  # later steps read the cross keys/values from the state
        hidden, new_state = self.decoder(
            self.decoder_frontend(target_seqs),
            encoder_output=held.encoder_output if first else None,
            encoder_mask=held.encoder_mask if first else None,
            state=held.decoder,
        )
        assert new_state is not None
        held.decoder = new_state
        state_bag.set_state(self, held)
        return hidden
