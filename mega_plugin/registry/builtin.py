"""The built-in plugin: registers mega-plugin's own kernels, presets, converter and adapters.

It goes through the same hooks as third-party plugins (and is named by the ``builtin`` entry
point of the ``mega_plugin`` group); the manager loads it first, directly, so it also works
from a source checkout that is not pip-installed.
"""

from __future__ import annotations

from ..backends import cpu_fast, portable
from ..converters.fairseq_mega import NAME as FAIRSEQ_MEGA
from ..converters.fairseq_mega import convert_fairseq_mega
from ..core.presets import PRESETS
from .hookspecs import hookimpl
from .registries import AdapterRegistry, BackendRegistry, ConverterRegistry, KernelRegistry, PresetRegistry


@hookimpl
def mega_plugin_register_kernels(registry: KernelRegistry) -> None:
    """The fast kernels of the backends (the core registers its reference kernels itself)."""
    for spec in (*portable.KERNELS, *cpu_fast.KERNELS):
        registry.register_spec(spec)


@hookimpl
def mega_plugin_register_backends(registry: BackendRegistry) -> None:
    """``cpu_fast``: row-blocked, in-place and oneDNN modules for CPU models."""
    registry.register(
        cpu_fast.NAME,
        accelerate=cpu_fast.accelerate,
        restore=cpu_fast.restore,
        description="CPU schedule: row blocks of whole frames, in-place no-grad layers, oneDNN fp32 GEMMs",
    )


@hookimpl
def mega_plugin_register_presets(registry: PresetRegistry) -> None:
    """The paper presets (Appendix D), their Mega-chunk variants, mega_base_wikitext and tiny."""
    for name, factory in PRESETS.items():
        registry.register(name, factory)


@hookimpl
def mega_plugin_register_converters(registry: ConverterRegistry) -> None:
    """The original facebookresearch/mega checkpoint layout."""
    registry.register(
        FAIRSEQ_MEGA,
        convert_fairseq_mega,
        description="original facebookresearch/mega (fairseq) checkpoints: LM (decoder.) and LRA (encoder.)",
    )


@hookimpl
def mega_plugin_register_adapters(registry: AdapterRegistry) -> None:
    """The Hugging Face transformers and fairseq2 adapters (described, never imported here)."""
    registry.register(
        "hf",
        module="mega_plugin.adapters.hf",
        requires=("transformers",),
        description="transformers MegaConfig / MegaModel / heads, registered with the Auto classes",
    )
    registry.register(
        "fairseq2",
        module="mega_plugin.adapters.fairseq2",
        requires=("fairseq2",),
        description="fairseq2 model family 'mega' (entry point fairseq2.extension)",
    )
