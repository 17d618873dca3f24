"""``MegaCache``: MEGA's streaming state as a ``transformers.Cache``.

The state itself is the core's (:class:`~mega_plugin.core.state.MegaState`: per layer the EMA
state and the current chunk's keys and values, plus the position); this module only gives it the
shape transformers expects of a cache, on 4.57 and 5.x alike:

* ``MegaCache`` subclasses ``transformers.Cache`` and holds one :class:`MegaCacheLayer` (a
  ``CacheLayerMixin`` wrapping one :class:`~mega_plugin.core.state.LayerState`) per model layer,
  so ``generate()`` reads ``layers``, ``is_compileable``, ``is_sliding``, ``is_linear`` (5.x),
  ``get_seq_length``, ``reorder_cache`` (beam search) and ``crop`` as it does for its own caches.
  A MEGA layer holds an EMA state *and* attention keys/values, so it is not a "linear" layer;
  it is not compileable in HF's sense (its keys grow within a chunk, no static addresses).
* ``crop`` rolls the cache back to where an earlier forward call left it. The EMA state cannot
  be un-consumed, so rolling back needs the earlier states: ``activate_past_recording()`` (which
  5.x ``generate()`` calls when it may roll back) keeps them, by reference (nothing is copied).
* The cache is a pytree (registered by :mod:`.cache_pytree`): its leaves are the state's tensors,
  so it passes through ``torch.export`` as an input and an output.

The model's forward reads ``cache.state`` and assigns the new one; everything else goes through
the layers.
"""

from __future__ import annotations

from typing import Any, Final

import torch
import transformers
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin

from ...core.state import LayerState, MegaState
from .cache_pytree import register_pytree

CROP_TAKES_A_LENGTH: Final = int(transformers.__version__.split(".")[0]) < 5
"""4.57's ``crop(max_length)`` takes the length to keep (negative: tokens to remove); 5.x's
``crop(tokens_to_remove)`` takes only the (non-positive) number of tokens to remove."""


class MegaCacheLayer(CacheLayerMixin):
    """One layer's streaming state (:class:`LayerState`) and the position it has reached."""

    is_compileable = False
    is_sliding = False
    supports_early_init = False  # 5.x: nothing to preallocate (shapes follow the chunk)

    def __init__(self, state: LayerState | None = None, position: int = 0) -> None:
        # CacheLayerMixin.__init__ would set keys/values attributes: here they are the state's
        self.state = state if state is not None else LayerState()
        self.position = position

    def __repr__(self) -> str:
        return f"MegaCacheLayer(position={self.position}, cached_keys={self.state.cached_length})"

    @property
    def keys(self) -> Tensor | None:  # type: ignore[override]
        """(B, T, Z) keys of the current chunk (4.57 ``cache[i]`` reads them)."""
        return self.state.keys

    @property
    def values(self) -> Tensor | None:  # type: ignore[override]
        """(B, T, V) values of the current chunk."""
        return self.state.values

    @property
    def is_initialized(self) -> bool:  # type: ignore[override]
        return bool(self.state.tensors())

    def lazy_initialization(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("a MEGA cache layer is filled by the model's forward, not preallocated")

    def update(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            "a MEGA layer replaces its whole streaming state (EMA state, current chunk) in the model's "
            "forward; the attention-cache update(key_states, value_states) does not apply"
        )

    def get_mask_sizes(self, query: Any, *args: Any) -> tuple[int, int]:
        """(keys seen by the next ``query`` tokens, offset 0); ``query`` is 5.x's length or 4.57's positions."""
        length = query.shape[0] if isinstance(query, Tensor) else int(query)
        return self.position + length, 0

    def get_seq_length(self) -> int:
        return self.position

    def get_max_length(self) -> int:
        return -1  # no maximum

    def get_max_cache_shape(self) -> int:
        return -1  # 4.57's name

    def reset(self) -> None:
        self.state, self.position = LayerState(), 0

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.state = self.state.index_select(beam_idx)

    def batch_select_indices(self, indices: Tensor) -> None:
        self.state = self.state.index_select(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        batch = self.state.batch_size
        if batch is not None:
            self.state = self.state.index_select(torch.arange(batch).repeat_interleave(repeats))

    def crop(self, *args: Any) -> None:
        raise NotImplementedError("crop the MegaCache: rolling back needs the states it recorded")


class MegaCache(Cache):
    """Streaming state of a causal MEGA, filled by the model's forward (see the module doc)."""

    is_compileable = False

    def __init__(self, state: MegaState | None = None) -> None:
        super().__init__(layers=[])
        self.position = 0
        self.recording = False
        """Whether each forward keeps the state it replaces, for :meth:`crop`."""
        self.keep: int | None = None
        """How many earlier states recording keeps (None: all)."""
        self.history: list[tuple[int, list[LayerState] | None]] = []
        """(position, layer states) of earlier forward calls, oldest first."""
        if state is not None:
            self.state = state

    # -- the core state ---------------------------------------------------------------------

    @property
    def state(self) -> MegaState | None:
        """The core state (None before the first forward); its layer states are the cache layers'."""
        if not self.layers:
            return None
        return MegaState(layers=[layer.state for layer in self.layers], position=self.position)

    @state.setter
    def state(self, state: MegaState | None) -> None:
        if self.recording:
            self._remember()
        if state is None:
            self.layers, self.position = [], 0
        else:
            self._restore(state.position, list(state.layers))

    def _remember(self) -> None:
        self.history.append((self.position, [layer.state for layer in self.layers] if self.layers else None))
        if self.keep is not None:
            self.history = self.history[len(self.history) - self.keep :] if self.keep > 0 else []

    def _restore(self, position: int, layers: list[LayerState] | None) -> None:
        self.position = position
        self.layers = [MegaCacheLayer(layer, position) for layer in layers] if layers is not None else []

    # -- transformers' Cache API ------------------------------------------------------------

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        """Tokens consumed so far (every layer has seen all of them)."""
        return self.position

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # no maximum (5.x)

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return -1  # no maximum (4.57)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch (beam search), recorded states included."""
        super().reorder_cache(beam_idx)
        self.history = [
            (position, None if layers is None else [layer.index_select(beam_idx) for layer in layers])
            for position, layers in self.history
        ]

    def batch_select_indices(self, indices: Tensor) -> None:
        super().batch_select_indices(indices)
        self.history = []

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self.history = []

    def reset(self) -> None:
        self.state = None
        self.history = []

    def activate_past_recording(self, recurrent_states_to_keep: int | None = None, **kwargs: Any) -> None:
        """Keep the state each forward replaces (the last ``recurrent_states_to_keep``, or all), so
        :meth:`crop` can roll back to it. The states are kept by reference, not copied. A second
        call never keeps fewer than the first asked for (None, all, stays all)."""
        if self.recording and (self.keep is None or recurrent_states_to_keep is None):
            self.keep = None
        elif self.recording:
            self.keep = max(self.keep, recurrent_states_to_keep)
        else:
            self.recording, self.keep = True, recurrent_states_to_keep

    def is_recording_past(self, layer_idx: int | None = None) -> bool:
        """Whether forward calls are recorded (the same for every layer)."""
        return self.recording

    def get_recurrent_states_to_keep(self, layer_idx: int | None = None) -> int:
        """How many earlier states are kept while recording (0 when not recording or when all are
        kept: 5.x asks for it to widen the recording, which "all" already is)."""
        return self.keep if self.recording and self.keep is not None else 0

    def stop_past_recording(self) -> None:
        """Stop recording and drop the recorded states."""
        self.recording, self.keep, self.history = False, None, []

    @property
    def is_croppable(self) -> bool:  # type: ignore[override]
        """Whether :meth:`crop` can roll back: only while recording (5.x asks before assisted decoding)."""
        return self.recording

    def crop(self, amount: int) -> None:
        """Roll back to the position a recorded forward call started from.

        5.x: ``crop(-n)`` removes the last ``n`` tokens and ``crop(0)`` drops the recorded states;
        4.57: ``crop(n)`` keeps the first ``n`` tokens (negative: removes ``-n``). Any other
        target than a recorded position raises ``ValueError`` naming the positions available.
        """
        if CROP_TAKES_A_LENGTH:
            target = self.position + amount if amount < 0 else amount
        else:
            if amount > 0:
                raise ValueError(
                    f"crop({amount}): pass the number of tokens to remove as a negative integer (transformers 5)"
                )
            if amount == 0:
                self.history = []
                return
            target = self.position + amount
        if target >= self.position:
            return
        for index, (position, layers) in enumerate(self.history):
            if position == target:
                self._restore(position, layers)
                self.history = self.history[:index]
                return
        recorded = ", ".join(str(position) for position, _ in self.history) or "none"
        raise ValueError(
            f"cannot crop the MEGA cache from {self.position} to {max(target, 0)} tokens: the EMA state cannot be "
            f"un-consumed, so crop rolls back only to where a recorded forward call started (recorded: {recorded}). "
            "Call cache.activate_past_recording() before the calls you may want to undo."
        )

    # -- our own ----------------------------------------------------------------------------

    def size_bytes(self) -> int:
        """Bytes held by the cached tensors (recorded states not counted)."""
        state = self.state
        return 0 if state is None else state.size_bytes()

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"MegaCache(position={self.get_seq_length()}, layers={len(self.layers)}, bytes={self.size_bytes()})"


# the cache through torch.export: its pytree functions live in cache_pytree.py
register_pytree(MegaCache)
