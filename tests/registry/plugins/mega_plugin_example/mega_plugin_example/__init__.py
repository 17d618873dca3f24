"""An example third-party mega-plugin plugin: two kernels, a preset, a converter, adapters.

Installed by the test suite (``tests/registry/conftest.py``); named by the entry point
``example = "mega_plugin_example"`` of the ``mega_plugin`` group.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from mega_plugin.core import MegaCoreConfig
from mega_plugin.formats.hf import hf_config_dict
from mega_plugin.registry import (
    AdapterRegistry,
    ConversionError,
    ConverterRegistry,
    KernelRegistry,
    PresetRegistry,
    hookimpl,
)

from .kernels import block_scan_ema, block_scan_supports, sdpa_attention, sdpa_supports

CALLS: dict[str, int] = {}
"""How often each hook ran in this process (the tests check loading is idempotent)."""


def _count(hook: str) -> None:
    CALLS[hook] = CALLS.get(hook, 0) + 1


@hookimpl
def mega_plugin_register_kernels(registry: KernelRegistry) -> None:
    """The block-scan EMA and the SDPA attention, above every built-in kernel (priority 20)."""
    _count("kernels")
    registry.register("ema", "example_scan", block_scan_ema, priority=20, supports=block_scan_supports)
    registry.register("attention", "example_sdpa", sdpa_attention, priority=20, supports=sdpa_supports)


def example_small() -> MegaCoreConfig:
    """A small causal decoder that asks for this plugin's kernels by name."""
    return MegaCoreConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        intermediate_size=32,
        nffn_hidden_size=32,
        shared_representation_size=8,
        ema_projection_size=2,
        bidirectional=False,
        is_decoder=True,
        use_chunking=True,
        chunk_size=4,
        max_positions=32,
        ema_kernel="example_scan",
        attention_kernel="example_sdpa",
    )


@hookimpl
def mega_plugin_register_presets(registry: PresetRegistry) -> None:
    """``example_small``: a small decoder that names this plugin's kernels."""
    _count("presets")
    registry.register("example_small", example_small)


def convert_bare_hf(
    state_dict: Mapping[str, Tensor], original_args: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A bare MegaModel state dict (keys without 'mega.') plus its config fields as original args."""
    if not original_args:
        raise ConversionError("example-bare-hf needs the config fields: pass --original-args CONFIG.json")
    core = MegaCoreConfig.from_mapping(original_args)
    state = {key if key.startswith("mega.") else f"mega.{key}": value for key, value in state_dict.items()}
    return hf_config_dict(core, architectures=["MegaModel"]), state


@hookimpl
def mega_plugin_register_converters(registry: ConverterRegistry) -> None:
    """``example-bare-hf``: bare MegaModel state dicts plus their config fields."""
    _count("converters")
    registry.register("example-bare-hf", convert_bare_hf)


@hookimpl
def mega_plugin_register_adapters(registry: AdapterRegistry) -> None:
    """Two descriptive adapters: one available (found, never imported), one missing."""
    _count("adapters")
    registry.register(
        "example-sentinel",
        module="mega_plugin_example",
        requires=("mega_plugin_example_sentinel",),
        description="available, but importing its requirement would fail: proves find_spec is used",
    )
    registry.register(
        "example-missing",
        module="mega_plugin_example",
        requires=("mega_plugin_example_not_installed",),
        description="never available",
    )
