"""The hooks a ``mega_plugin`` plugin may implement.

A plugin is a module (or any object) named by an entry point in the ``mega_plugin`` group::

    [project.entry-points.mega_plugin]
    my_kernels = "my_package.mega_plugin_hooks"

Each hook receives one *registry object* and calls its ``register(...)`` methods; nothing is
returned. Hooks run once per process, lazily (at the first kernel lookup, preset lookup, ...),
in the order kernels, backends, presets, converters, adapters. Everything one plugin registers is
committed together: if any hook of a plugin raises, none of its registrations are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pluggy

if TYPE_CHECKING:
    from .registries import AdapterRegistry, BackendRegistry, ConverterRegistry, KernelRegistry, PresetRegistry

PROJECT_NAME: Final = "mega_plugin"
"""The pluggy project name and the entry-point group."""

hookspec: Final = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl: Final = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def mega_plugin_register_kernels(registry: KernelRegistry) -> None:
    """Register kernel implementations of the ``ema`` and ``attention`` ops.

    Call ``registry.register(op, name, fn, *, priority=..., is_available=..., supports=...,
    guard=..., description=...)`` or ``registry.register_spec(KernelSpec(...))``. ``fn`` must
    accept the op's call (see :mod:`mega_plugin.core.ops.calls`); a wrong signature, a
    reserved name (``auto``) or a name another distribution registered makes the plugin fail.
    Models pick kernels by name from their config (``ema_kernel``, ``attention_kernel``), by
    the ``MEGA_PLUGIN_KERNEL_EMA`` / ``MEGA_PLUGIN_KERNEL_ATTENTION`` environment variables,
    or with ``auto`` (highest priority first, skipping kernels that are unavailable or decline
    the call).
    """


@hookspec
def mega_plugin_register_backends(registry: BackendRegistry) -> None:
    """Register backends: module-level fast paths applied to a model once, when it is built.

    Call ``registry.register(name, *, accelerate, restore, priority=0, is_available=None,
    description="")``. ``accelerate(model)`` swaps modules of a MEGA model in place for
    subclasses with the same parameters, state-dict keys and hooks, and returns how many it
    changed; ``restore(model)`` undoes it. ``mega_plugin.backends.accelerate(model)`` applies
    every available backend (``MEGA_PLUGIN_BACKENDS`` picks others, or ``none``).
    """


@hookspec
def mega_plugin_register_presets(registry: PresetRegistry) -> None:
    """Register architecture presets: ``registry.register(name, factory, *, description=None)``.

    ``factory()`` returns a fresh :class:`mega_plugin.core.MegaCoreConfig`; it is called once at
    registration to validate it. Presets are shared by the HF and fairseq2 adapters
    (``mega_plugin.registry.get_preset(name)``).
    """


@hookspec
def mega_plugin_register_converters(registry: ConverterRegistry) -> None:
    """Register checkpoint converters: ``registry.register(name, convert, *, description="")``.

    ``convert(state_dict, original_args)`` returns ``(hf_config_dict, hf_state_dict)`` in the
    Hugging Face MEGA layout; it may also take a keyword ``allow_drop`` (glob patterns of source
    keys the user agreed to drop). ``mega-plugin convert --from NAME CKPT --to hf OUT_DIR``
    runs it.
    """


@hookspec
def mega_plugin_register_adapters(registry: AdapterRegistry) -> None:
    """Describe framework adapters: ``registry.register(name, *, module, requires=(), ...)``.

    An adapter record is descriptive: a name, the module that implements it and the top-level
    packages it needs. Availability is checked with ``importlib.util.find_spec`` so listing
    adapters never imports a framework.
    """


HOOK_NAMES: Final = (
    "mega_plugin_register_kernels",
    "mega_plugin_register_backends",
    "mega_plugin_register_presets",
    "mega_plugin_register_converters",
    "mega_plugin_register_adapters",
)
"""Every hook, in the order they are called for each plugin."""
