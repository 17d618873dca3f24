"""Static decoding: a causal MEGA language model decoded token by token with fixed buffers.

* :class:`~.decoder.StaticDecoder`: prompt through the model's forward, then one step per token
  (eager, or one ``torch.compile`` graph for every position);
* the step itself, its weights and its buffers: :mod:`~mega_plugin.backends.token_step`.

Plain torch, any device. The adapters build it for their language models
(``mega_plugin.adapters.hf.static_decoder``, ``mega_plugin.adapters.fairseq2.static_decoding.static_decoder``).
"""

from __future__ import annotations

from .decoder import Embed, Head, StaticDecoder

__all__ = ["Embed", "Head", "StaticDecoder"]
