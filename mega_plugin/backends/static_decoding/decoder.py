"""``StaticDecoder``: token-by-token decoding of a causal MEGA language model with a fixed state.

The prompt runs through the model's own forward (the core stack, with whatever backend it has);
its streaming state is then copied into fixed buffers (:mod:`~mega_plugin.backends.token_step.buffers`), and every new token
runs :func:`~mega_plugin.backends.token_step.step.block_step` through the layers and the caller's head. A step is a few dozen
tensor ops per layer against the ~230 of a step through the stack's general path (chunk framing,
state objects, mask merging, kernel selection), and with ``compile=True`` one compiled graph
serves every position of every chunk (the position is a tensor; no recompilation per step).

    decoder = StaticDecoder(backbone.embedding_layer, backbone.layers, head=lm_head)
    tokens = decoder.greedy(prompt_ids, max_new_tokens=128)

The decoder reads the weights when it is built; call :meth:`refresh` after changing them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Final

import torch
from torch import Tensor, nn

from ...core.backbone import apply_final_norm
from ...core.masks import padding_to_key_mask
from ...core.ops import EmaOptions, run_ema
from ...core.state import LayerState
from ...core.stack import MegaLayerStack
from ..cpu_fast.threads import fitted_threads
from ..token_step.buffers import LayerBuffers, size_bytes
from ..token_step.step import block_step
from ..token_step.weights import BlockWeights, Projection, block_weights, token_norm

Embed = Callable[[Tensor], Tensor]
"""The token embedding: ids (B, L) -> (B, L, D), scaled and normalised as the model does it."""

Head = Callable[[Tensor], Tensor]
"""The language-model head: last hidden states (B, D) -> logits (B, vocabulary); an ``nn.Linear``
is read as a :class:`~mega_plugin.backends.token_step.weights.Projection` like the layers' projections."""

COMPILE_OPTIONS: Final = dict(fullgraph=True, dynamic=False)


class StaticDecoder:
    """Greedy or step-by-step decoding of ``layers`` (causal, streaming) with fixed buffers.

    ``embed`` and ``layers`` are the model's own modules (a :class:`MegaBackbone`'s or a HF
    ``MegaModel``'s ``embedding_layer``, a fairseq2 model's ``decoder_frontend``; the layer stack);
    ``final_norm`` its final norm, if any; ``head`` maps the last hidden states to logits. Without chunking, ``max_length`` bounds prompt plus generated tokens (the
    frame then holds every position); with chunking the state is one chunk and ``max_length`` is
    not needed. ``compile=True`` runs the step through ``torch.compile`` (one graph per batch size).
    """

    def __init__(
        self,
        embed: Embed,
        layers: MegaLayerStack,
        *,
        head: Head,
        final_norm: nn.Module | None = None,
        max_length: int | None = None,
        compile: bool = False,
    ) -> None:
        if not (layers.causal and layers.can_stream):
            raise ValueError(
                "static decoding needs a causal model: is_decoder=True and bidirectional=False"
            )
        chunk = layers[0].mega_layer.chunk_size
        if chunk is None and max_length is None:
            raise ValueError(
                "max_length is needed without chunking (use_chunking=False): the frame holds every position; "
                "allowed values: a positive int"
            )
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length={max_length!r}; allowed values: a positive int")
        truncation = layers[0].mega_layer.ema_gate.truncation
        if truncation is not None and (max_length is None or max_length > truncation):
            # within its first `truncation` positions a truncated EMA is the full one, whose
            # (B, D, N) state the step carries; past them it forgets, which a state cannot
            raise ValueError(
                f"truncation={truncation}: static decoding runs a truncated EMA only while the whole "
                f"sequence fits in it; allowed values: max_length <= {truncation} (got max_length={max_length})"
            )
        self.embed = embed
        self.layers = layers
        # a bare linear head (the usual LM head) runs as a Projection: split over two cores for few rows
        self.head = Projection.of(head) if isinstance(head, nn.Linear) else head
        self.final_norm = final_norm  # (B, L, D) for the prompt
        self._final_token_norm = None if final_norm is None else token_norm(final_norm)  # (B, D) per step
        self.max_length = max_length
        self.slots = chunk if chunk is not None else max_length
        self.compiled = compile
        self._step = torch.compile(self._run_layers, **COMPILE_OPTIONS) if compile else self._run_layers
        self._weights: list[BlockWeights] = []
        self.refresh()
        device = layers[0].mega_layer.qk_weight.device
        self._slot_tensors = [torch.tensor(slot, device=device) for slot in range(self.slots)]  # 0-d int64
        self._buffers: list[LayerBuffers] = []
        self._rows = 0
        self.position = 0

    # -- the prompt ---------------------------------------------------------------------------

    def prefill(self, input_ids: Tensor, *, attention_mask: Tensor | None = None) -> Tensor:
        """Run the prompt ``input_ids`` (B, L) (``attention_mask`` (B, L) 0/1 for left padding)
        and return the logits after its last token (B, vocabulary)."""
        self._check_model()
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be (batch, length) with length >= 1, got shape {tuple(input_ids.shape)}")
        if attention_mask is not None and not bool(attention_mask[:, -1].all()):
            raise ValueError("static decoding continues every row: pad prompts on the left (attention_mask[:, -1] must be 1)")
        length = input_ids.shape[1]
        self._check_room(length)
        with torch.inference_mode():
            hidden = self.embed(input_ids)  # (B, L, D)
            key_mask = padding_to_key_mask(attention_mask, batch=hidden.shape[0], length=length, position=0)
            output = apply_final_norm(self.layers(hidden, key_mask=key_mask, use_cache=True), self.final_norm)
            assert output.state is not None
            self._rows = input_ids.shape[0]
            states = [full_ema_state(block, state, position=length) for block, state in zip(self.layers, output.state.layers)]
            if len(self._buffers) == len(states) and all(b.fits(state) for b, state in zip(self._buffers, states)):
                for buffers, state in zip(self._buffers, states):
                    buffers.fill(state, position=length)  # same tensors: a compiled step keeps its graph
            else:
                self._buffers = [LayerBuffers.load(state, slots=self.slots, position=length) for state in states]
            self.position = length
            return self.head(output.hidden[:, -1])

    # -- one token --------------------------------------------------------------------------------

    def step(self, token_ids: Tensor) -> Tensor:
        """Feed one token per row, ``token_ids`` (B,) or (B, 1); returns the next logits (B, vocabulary)."""
        if not self._buffers:
            raise RuntimeError("call prefill(input_ids) before step()")
        token_ids = token_ids.reshape(-1, 1)
        if token_ids.shape[0] != self._rows:
            raise ValueError(f"token_ids has {token_ids.shape[0]} rows; the prompt had {self._rows}")
        self._check_room(self.position + 1)
        # eager steps on CPU run on the cores other processes leave free; a compiled step keeps the
        # thread count (torch guards it: another count would compile another graph mid-decoding)
        fit = token_ids.device.type == "cpu" and not self.compiled
        with torch.inference_mode(), fitted_threads() if fit else contextlib.nullcontext():
            x = self.embed(token_ids)[:, 0]  # (B, D)
            slot = self.position % self.slots
            logits = self._step(x, self._slot_tensors[slot], None if self.compiled else slot + 1)
        self.position += 1
        return logits

    def greedy(
        self, input_ids: Tensor, *, max_new_tokens: int, attention_mask: Tensor | None = None
    ) -> Tensor:
        """The prompt (B, L) followed by ``max_new_tokens`` greedy tokens: (B, L + max_new_tokens)."""
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r}; allowed values: a positive int")
        self._check_room(input_ids.shape[1] + max_new_tokens - 1)
        out = input_ids.new_empty(input_ids.shape[0], input_ids.shape[1] + max_new_tokens)
        out[:, : input_ids.shape[1]] = input_ids
        logits = self.prefill(input_ids, attention_mask=attention_mask)
        for index in range(input_ids.shape[1], out.shape[1]):
            token = logits.argmax(dim=-1)  # (B,)
            out[:, index] = token
            if index + 1 < out.shape[1]:
                logits = self.step(token)
        return out

    # -- state ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the weights again (after a training step or ``load_state_dict``); the state stays."""
        self._weights = [block_weights(block, slots=self.slots) for block in self.layers]

    def state_bytes(self) -> int:
        """Bytes of the decoding state: the same after any number of tokens."""
        return size_bytes(self._buffers)

    # -- internals -----------------------------------------------------------------------------

    def _run_layers(self, x: Tensor, slot: Tensor, visible: int | None) -> Tensor:
        for weights, buffers in zip(self._weights, self._buffers):
            x = block_step(weights, buffers, x, slot, visible)
        if self._final_token_norm is not None:
            x = self._final_token_norm(x)
        return self.head(x)

    def _check_room(self, length: int) -> None:
        if self.max_length is not None and length > self.max_length:
            raise ValueError(
                f"{length} positions exceed max_length={self.max_length} of this decoder; build it with a larger max_length"
            )

    def _check_model(self) -> None:
        training = [name for name, module in self.layers.named_modules() if module.training]
        if training:
            raise ValueError(
                f"static decoding runs the model in eval mode (no dropout, batch-norm statistics): "
                f"call model.eval() first ({training[0] or 'layers'} is in training mode)"
            )


def full_ema_state(block: nn.Module, state: LayerState, *, position: int) -> LayerState:
    """``state`` with the EMA's (B, D, N) state: a truncated EMA streams its last inputs instead
    (``ema_window``); while they are every input so far, the full recurrence over them gives the
    state the step continues (equal to the truncated EMA within its first ``truncation`` positions)."""
    if state.ema is not None or state.ema_window is None:
        return state
    window = state.ema_window  # (B, W, D): the EMA's (masked) inputs
    if window.shape[1] != position:
        raise ValueError(
            f"the prompt of {position} tokens is longer than the truncated EMA keeps ({window.shape[1]}): "
            "static decoding needs prompt + new tokens <= truncation"
        )
    ema_gate = block.mega_layer.ema_gate
    options = EmaOptions(bidirectional=False, truncation=None, return_state=True)
    _, ema_state = run_ema(window, ema_gate.coefficients(), None, options, kernel="auto")
    return dataclasses.replace(state, ema=ema_state, ema_window=None)


__all__ = ["COMPILE_OPTIONS", "Embed", "Head", "StaticDecoder", "full_ema_state"]
