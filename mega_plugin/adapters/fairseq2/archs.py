"""fairseq2 archs of the ``mega`` family, one per preset of the shared preset registry.

The presets come from :func:`mega_plugin.registry.list_presets` (the same source the HF side
reads), so a plugin that registers a preset also gets a fairseq2 arch. This family builds causal
language models, so every arch is the *causal form* of its preset: encoder presets (the LRA
tasks, ``mega_base_wikitext``) keep every size and option but run the EMA and the attention
causally (``bidirectional=False``, ``is_decoder=True``). Causal presets (``wikitext103``,
``enwik8``, ``tiny``) are taken unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ...core.config import MegaCoreConfig
from .config import MegaLMConfig

ArchProvider = Callable[[], MegaLMConfig]


def causal_form(core: MegaCoreConfig) -> MegaCoreConfig:
    """``core`` as a decoder: causal EMA (K = D rows) and causal attention, all else unchanged."""
    if core.is_decoder and not core.bidirectional:
        return core
    return dataclasses.replace(core, bidirectional=False, is_decoder=True)


def _provider(name: str, description: str) -> ArchProvider:
    def provide() -> MegaLMConfig:
        from ...registry import get_preset

        return MegaLMConfig.from_core(causal_form(get_preset(name)))

    provide.__name__ = f"mega_{name}"
    provide.__qualname__ = provide.__name__
    provide.__doc__ = f"Causal LM form of the ``{name}`` preset: {description}"
    return provide


def preset_archs() -> dict[str, ArchProvider]:
    """Arch name -> config provider, one per registered preset (same names as the presets)."""
    from ...registry import list_presets

    return {record.name: _provider(record.name, record.description) for record in list_presets()}
