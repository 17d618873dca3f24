"""A call on a recording cache ends where ``crop`` may need to roll back to: one call per token
at the end.

Assisted decoding (transformers 5.x: an assistant model or prompt lookup drafts tokens, the
model verifies them in one forward) asks the cache to record the last ``k`` states
(``activate_past_recording(k)``) and then crops the rejected drafts: it rolls back to a position
*inside* the last call. A transformer's key/value cache just forgets keys; MEGA's EMA state
cannot be un-consumed, and :class:`~.cache.MegaCache` can only return to a state it kept. So
while recording, a call after the prompt runs one token at a time, each leaving its state
behind (the number of drafts changes from one round to the next, and ``k`` does not always
bound it), and the prompt's call does so for its last ``max(k, PREFILL_TAIL)`` tokens (the first
round drafts after the prompt); the cache then keeps at least as many states as the call left.
Outputs are the same as one call (the streaming path equals the whole-sequence one, tested in the
core), only the positions are computed in pieces.
"""

from __future__ import annotations

from typing import Callable, Final

import torch
from torch import Tensor

from ...core.stack import StackOutput
from .cache import MegaCache


PREFILL_TAIL: Final = 64
"""Tokens at the end of a recorded prompt call that run one at a time (drafts of the first round)."""


def recorded_pieces(cache: MegaCache | None, length: int) -> list[tuple[int, int]]:
    """[start, end) pieces of a call of ``length`` new tokens on ``cache``: one piece unless recording."""
    if cache is None or not cache.recording or length <= 1:
        return [(0, length)]
    if cache.get_seq_length() > 0:
        tail = length - 1
    else:
        tail = min(length - 1, max(cache.keep or 0, PREFILL_TAIL))
    head = length - tail
    return [(0, head), *((position, position + 1) for position in range(head, length))]


def run_in_pieces(
    run: Callable[..., StackOutput],
    cache: MegaCache,
    pieces: list[tuple[int, int]],
    *,
    per_position: dict[str, Tensor | None],
    attention_mask: Tensor | None,
) -> StackOutput:
    """``run`` (``run_backbone`` with its other keywords bound) over each piece, the cache's state
    stored after each.

    ``per_position`` are (B, L, ...) inputs cut per piece; ``attention_mask`` (B, consumed + L)
    spans the whole sequence and is cut to each piece's end.
    """
    consumed = cache.get_seq_length()
    cache.activate_past_recording(recurrent_states_to_keep=len(pieces))  # never fewer than it keeps
    outputs: list[StackOutput] = []
    for start, end in pieces:
        inputs = {name: None if value is None else value[:, start:end] for name, value in per_position.items()}
        mask = None if attention_mask is None else attention_mask[:, : consumed + end]
        result = run(**inputs, attention_mask=mask, state=cache.state, use_cache=True)
        cache.state = result.state
        outputs.append(result)
    hidden_states = None
    if outputs[0].hidden_states is not None:
        hidden_states = tuple(torch.cat(layer, dim=1) for layer in zip(*(out.hidden_states for out in outputs)))
    return StackOutput(
        hidden=torch.cat([out.hidden for out in outputs], dim=1),
        hidden_states=hidden_states,
        attentions=None,
        state=outputs[-1].state,
        cross_attentions=None,
    )
