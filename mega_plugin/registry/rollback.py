"""Rolling back a failed plugin: everything registered while it loaded is undone, wherever it went.

A plugin's hooks stage their registrations (:class:`~mega_plugin.registry.registries.Staging`),
which the manager commits only when the plugin loaded completely. A plugin may still change the
registries directly: its module may call ``mega_plugin.core.ops.register_kernel`` or
``mega_plugin.backends.register_backend`` when it is imported (and then fail to import) or from
inside a hook. A :class:`Snapshot` taken before the plugin is loaded sets every registry back
exactly: kernels and backends the plugin added are removed, ones it replaced or removed come
back, and so do the presets, converters and adapters of the plugin host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, MutableMapping, Protocol, TypeVar

from ..backends import registry as backend_store
from ..backends.registry import BackendSpec
from ..core.ops import KernelSpec, register_kernel, registered_kernels, unregister_kernel
from .records import AdapterRecord, ConverterRecord, PresetRecord

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class HoldsRecords(Protocol):
    """The plugin host's committed records (:class:`~mega_plugin.registry.manager.PluginHost`)."""

    presets: dict[str, PresetRecord]
    converters: dict[str, ConverterRecord]
    adapters: dict[str, AdapterRecord]


def _revert(
    before: Mapping[Key, Value],
    now: Mapping[Key, Value],
    *,
    put: Callable[[Key, Value], None],
    remove: Callable[[Key], None],
) -> list[Key]:
    """Make ``now`` equal ``before`` through ``put`` / ``remove``; the keys that changed, in order."""
    changed = []
    for key in now:
        if key not in before:
            remove(key)
            changed.append(key)
    for key, value in before.items():
        if now.get(key) is not value:
            put(key, value)
            changed.append(key)
    return changed


def _revert_dict(kind: str, before: dict[str, Value], store: MutableMapping[str, Value]) -> list[str]:
    changed = _revert(before, dict(store), put=store.__setitem__, remove=store.__delitem__)
    return [f"{kind} {name}" for name in changed]


@dataclass(frozen=True)
class Snapshot:
    """What every registry held before one plugin was loaded."""

    kernels: dict[tuple[str, str], KernelSpec]
    backends: dict[str, BackendSpec]
    presets: dict[str, PresetRecord]
    converters: dict[str, ConverterRecord]
    adapters: dict[str, AdapterRecord]

    @classmethod
    def take(cls, host: HoldsRecords) -> Snapshot:
        """The registries now (shallow copies: the records themselves are frozen)."""
        return cls(
            kernels=registered_kernels(),
            backends=backend_store.registered_backends(),
            presets=dict(host.presets),
            converters=dict(host.converters),
            adapters=dict(host.adapters),
        )

    def restore(self, host: HoldsRecords) -> tuple[str, ...]:
        """Set every registry back to the snapshot; what changed, e.g. ``("kernel ema/fast", "preset small")``."""
        kernels = _revert(
            self.kernels,
            registered_kernels(),
            put=lambda key, spec: register_kernel(spec, replace=True),
            remove=lambda key: unregister_kernel(*key),
        )
        backends = _revert(
            self.backends,
            backend_store.registered_backends(),
            put=lambda name, spec: backend_store.register_backend(spec, replace=True),
            remove=backend_store.unregister_backend,
        )
        return (
            *(f"kernel {op}/{name}" for op, name in kernels),
            *(f"backend {name}" for name in backends),
            *_revert_dict("preset", self.presets, host.presets),
            *_revert_dict("converter", self.converters, host.converters),
            *_revert_dict("adapter", self.adapters, host.adapters),
        )
