"""On-disk formats that mega-plugin writes: one module per layout.

* :mod:`mega_plugin.formats.hf`: the Hugging Face MEGA checkpoint directory (``config.json``
  and ``model.safetensors`` or ``pytorch_model.bin``), written without importing transformers.

These modules need torch and :mod:`mega_plugin.core` only; the converters
(:mod:`mega_plugin.converters`), the adapters and the CLI build on them.
"""

from __future__ import annotations

from . import hf

__all__ = ["hf"]
