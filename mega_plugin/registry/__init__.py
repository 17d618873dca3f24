"""Plugins for mega-plugin (pluggy project and entry-point group ``mega_plugin``).

Plugins register kernels, presets, checkpoint converters and adapter descriptions through four
hooks (:mod:`mega_plugin.registry.hookspecs`); the built-in implementations use the same hooks
(:mod:`mega_plugin.registry.builtin`). Discovery is lazy and idempotent: nothing is imported
until the first lookup (a kernel dispatch, :func:`get_preset`, ...). See ``docs/plugins.md``.

Importing this module installs :func:`load_plugins` as the discovery callback of the core
kernel registry (:func:`install`), so ``auto`` kernel selection sees plugin kernels.

``hf_config_dict`` moved to :mod:`mega_plugin.formats.hf`; reading it here still works but warns
(:class:`DeprecationWarning`).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Final

from ..core.config import MegaCoreConfig
from ..backends import registry as backend_store
from ..core.ops import KernelSpec, kernels, set_discovery
from .hookspecs import HOOK_NAMES, PROJECT_NAME, hookimpl, hookspec
from .manager import host, is_loaded, load_plugins, reset
from .records import (
    AdapterRecord,
    ConversionError,
    ConverterRecord,
    NotRegisteredError,
    PluginError,
    PluginRecord,
    PresetRecord,
    not_registered,
)
from .registries import AdapterRegistry, BackendRegistry, ConverterRegistry, KernelRegistry, PresetRegistry


def install() -> None:
    """Make the kernel and backend registries load plugins before their first lookup (idempotent, cheap)."""
    set_discovery(load_plugins)
    backend_store.set_discovery(load_plugins)


def get_preset(name: str, **overrides: Any) -> MegaCoreConfig:
    """A fresh config for preset ``name``, with keyword ``overrides`` applied and validated."""
    return preset_record(name).build(**overrides)


def preset_record(name: str) -> PresetRecord:
    """The registered record of preset ``name`` (factory, description, source)."""
    presets = host().presets
    if name not in presets:
        raise not_registered("preset", name, list(presets))
    return presets[name]


def list_presets() -> list[PresetRecord]:
    """Every registered preset, sorted by name."""
    return sorted(host().presets.values(), key=lambda r: r.name)


def get_converter(name: str) -> ConverterRecord:
    """The converter registered as ``name`` (``mega-plugin convert --from NAME``)."""
    converters = host().converters
    if name not in converters:
        raise not_registered("converter", name, list(converters))
    return converters[name]


def list_converters() -> list[ConverterRecord]:
    """Every registered converter, sorted by name."""
    return sorted(host().converters.values(), key=lambda r: r.name)


def get_adapter(name: str) -> AdapterRecord:
    """The adapter description registered as ``name`` (``hf``, ``fairseq2``, ...)."""
    adapters = host().adapters
    if name not in adapters:
        raise not_registered("adapter", name, list(adapters))
    return adapters[name]


def list_adapters() -> list[AdapterRecord]:
    """Every registered adapter description, sorted by name."""
    return sorted(host().adapters.values(), key=lambda r: r.name)


def list_kernels(op: str) -> list[KernelSpec]:
    """Kernels of ``op`` (``"ema"`` or ``"attention"``), best first, after loading plugins."""
    load_plugins()
    return kernels(op)


def list_backends() -> list[backend_store.BackendSpec]:
    """Every registered backend, highest priority first, after loading plugins."""
    return backend_store.backends()


def list_plugins() -> list[PluginRecord]:
    """One record per plugin: distribution, version, entry point, status and error."""
    return list(host().plugins)


_MOVED_NAMES: Final[dict[str, str]] = {"hf_config_dict": "mega_plugin.formats.hf"}
"""Names this module no longer defines -> the module that holds them now."""


def __getattr__(name: str) -> Any:
    """A moved name, with a :class:`DeprecationWarning` naming its new module; else ``AttributeError``."""
    new_module = _MOVED_NAMES.get(name)
    if new_module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__}.{name} is deprecated; import it from {new_module} instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(new_module), name)


install()

__all__ = [
    "HOOK_NAMES",
    "PROJECT_NAME",
    "AdapterRecord",
    "AdapterRegistry",
    "BackendRegistry",
    "ConversionError",
    "ConverterRecord",
    "ConverterRegistry",
    "KernelRegistry",
    "NotRegisteredError",
    "PluginError",
    "PluginRecord",
    "PresetRecord",
    "PresetRegistry",
    "get_adapter",
    "get_converter",
    "get_preset",
    "hf_config_dict",
    "hookimpl",
    "hookspec",
    "install",
    "is_loaded",
    "list_adapters",
    "list_backends",
    "list_converters",
    "list_kernels",
    "list_plugins",
    "list_presets",
    "load_plugins",
    "preset_record",
    "reset",
]
