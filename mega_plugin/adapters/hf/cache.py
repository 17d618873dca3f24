"""``MegaCache``: the model-owned streaming cache handed through ``generate()``.

It wraps the core :class:`~mega_plugin.core.MegaState` (EMA state + current-chunk keys and
values per layer + position). Both generation loops treat it as an opaque object: 5.x passes
it as ``cache=`` and reorders it with ``reorder_cache``; 4.57 passes ``past_key_values=`` and
calls the model's ``_reorder_cache``.
"""

from __future__ import annotations

import torch

from ...core.state import MegaState


class MegaCache:
    """Streaming state of a causal MEGA, filled by the model's forward."""

    is_compileable = False
    is_croppable = False

    def __init__(self, state: MegaState | None = None) -> None:
        self.state = state

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens consumed so far."""
        return 0 if self.state is None else self.state.position

    def get_max_cache_shape(self, layer_idx: int = 0) -> int | None:
        return None

    def get_max_length(self) -> int | None:
        return None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch in place (beam search)."""
        if self.state is not None:
            self.state.reorder(beam_idx)

    def size_bytes(self) -> int:
        """Bytes held by the cached tensors."""
        return 0 if self.state is None else self.state.size_bytes()

    def __len__(self) -> int:
        return 0 if self.state is None else len(self.state.layers)

    def __repr__(self) -> str:
        return f"MegaCache(position={self.get_seq_length()}, bytes={self.size_bytes()})"
