"""Architecture presets: small functions that return a :class:`MegaCoreConfig`.

One source of truth for both ecosystems: the built-in plugin registers :data:`PRESETS` through
the ``mega_plugin_register_presets`` hook, and the HF and fairseq2 adapters read them back with
:func:`mega_plugin.registry.get_preset`.

Paper presets follow Ma et al., "Mega: Moving Average Equipped Gated Attention" (ICLR 2023),
Appendix D, and the released training scripts of facebookresearch/mega: EMA dimension 16 and
intermediate (value) size = NFFN size = 2 x hidden unless stated. ``<name>_chunk`` is the
Mega-chunk variant of ``<name>`` (chunk 128; Path-X 4096).

Vocabulary sizes are ours where the original had no fixed token table: the LRA image-like tasks
(Image, Pathfinder, Path-X) fed pixel values through a real-number embedding in the original;
here they are 256 intensity ids. The LRA tasks use the simple relative bias and the original
``max_positions`` (ListOps 2002, Text/Retrieval 4002, Image/Pathfinder 1024, Path-X 16384).
The released scripts truncate the EMA kernel (1024 lags for LRA, 8192 for the language models);
the presets leave ``truncation=None`` (exact EMA): pass ``truncation=...`` to match them.
"""

from __future__ import annotations

from .language import enwik8, mega_base_wikitext, tiny, wikitext103
from .lra import LRA_CHUNK, PATHX_CHUNK, lra_image, lra_listops, lra_pathfinder, lra_pathx, lra_retrieval, lra_text
from .table import PRESETS, PresetFactory, preset

__all__ = [
    "LRA_CHUNK",
    "PATHX_CHUNK",
    "PRESETS",
    "PresetFactory",
    "enwik8",
    "lra_image",
    "lra_listops",
    "lra_pathfinder",
    "lra_pathx",
    "lra_retrieval",
    "lra_text",
    "mega_base_wikitext",
    "preset",
    "tiny",
    "wikitext103",
]
