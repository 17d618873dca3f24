"""The plugin manager: lazy, idempotent loading with per-plugin fault isolation.

Loading runs once per process (or after :func:`reset`): the built-in plugin first, then every
installed entry point of the ``mega_plugin`` group, sorted by distribution and name. Each plugin
is imported, registered with pluggy, and its hooks are called with registries bound to a
private :class:`~mega_plugin.registry.registries.Staging`; the staging is committed only when
all of that succeeded. A plugin that fails at any step is logged (with what was rolled back),
recorded in :func:`list_plugins` with its distribution, entry point and error, and skipped,
unless ``MEGA_PLUGIN_STRICT=1`` makes the failure raise. Either way nothing it registered
stays: a :class:`~mega_plugin.registry.rollback.Snapshot` taken before it loaded also undoes
what it put straight into the kernel or backend registry (at import, or from a hook).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import pluggy

from ..backends import registry as backend_store
from ..core.ops import is_registered, kernels, register_kernel, unregister_kernel
from . import hookspecs
from .discovery import BUILTIN_MODULE, BUILTIN_NAME, Candidate, builtin_candidate, entry_point_candidates
from .environment import ENV_DISABLE_AUTOLOAD, ENV_STRICT, ENV_TRACE, blocked_names, canonical, env_flag
from .records import (
    BLOCKED,
    DISABLED,
    FAILED,
    LOADED,
    AdapterRecord,
    ConverterRecord,
    PluginError,
    PluginRecord,
    PresetRecord,
)
from .registries import REGISTRY_FOR_HOOK, Staging
from .rollback import Snapshot

logger = logging.getLogger("mega_plugin.registry")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class PluginHost:
    """One loading of all plugins: the pluggy manager, the committed records and the reports."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.presets: dict[str, PresetRecord] = {}
        self.converters: dict[str, ConverterRecord] = {}
        self.adapters: dict[str, AdapterRecord] = {}
        self.plugins: list[PluginRecord] = []
        self.owned_kernels: list[tuple[str, str]] = []
        self.owned_backends: list[str] = []
        self.loaded = False
        self.loading = False

    def load(self) -> None:
        """Load the built-in plugin and, unless autoload is disabled, every installed entry point."""
        strict, trace = env_flag(ENV_STRICT), env_flag(ENV_TRACE)
        self._load_one(builtin_candidate(), strict=strict, trace=trace)
        try:
            candidates = entry_point_candidates()
        except Exception as error:  # unreadable metadata must not take the built-ins down
            if strict:
                raise PluginError(f"cannot read the mega_plugin entry points: {_describe(error)}") from error
            logger.warning("mega_plugin: cannot read the mega_plugin entry points: %s", _describe(error))
            return
        if env_flag(ENV_DISABLE_AUTOLOAD):
            for candidate in candidates:
                self._report(candidate, DISABLED, trace=trace, error=f"{ENV_DISABLE_AUTOLOAD} is set")
            return
        blocked = blocked_names()
        if canonical(BUILTIN_NAME) in blocked:
            logger.warning("mega_plugin: the built-in plugin cannot be blocked; ignoring it in MEGA_PLUGIN_BLOCK")
        for candidate in candidates:
            if candidate.is_blocked(blocked):
                self._report(candidate, BLOCKED, trace=trace, error="named in MEGA_PLUGIN_BLOCK")
            else:
                self._load_one(candidate, strict=strict, trace=trace)

    def _load_one(self, candidate: Candidate, *, strict: bool, trace: bool) -> None:
        start = time.perf_counter()
        plugin: Any = None
        before = Snapshot.take(self)
        staging = Staging(
            candidate.distribution,
            plugin=f"{candidate.name!r} from {candidate.distribution}",
            trusted=candidate.target == BUILTIN_MODULE,
        )
        try:
            plugin = candidate.load()
            self.pm.register(plugin, name=f"{candidate.distribution}/{candidate.name}")
            self._check_hooks(plugin)
            others = [p for p in self.pm.get_plugins() if p is not plugin]
            for hook_name in hookspecs.HOOK_NAMES:
                caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
                caller(registry=REGISTRY_FOR_HOOK[hook_name](staging))
            self._commit(staging)
        except (Exception, SystemExit) as error:
            if plugin is not None and self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            # Staged registrations were never committed; whatever reached a registry goes back.
            undone = tuple(dict.fromkeys((*staging.summary(), *before.restore(self))))
            self._report(candidate, FAILED, trace=trace, error=_describe(error), start=start)
            logger.warning(
                "mega_plugin: plugin %r from %s %s (%s) failed and was skipped: %s%s",
                candidate.name, candidate.distribution, candidate.version, candidate.target, _describe(error),
                f"; its registrations were rolled back: {', '.join(undone)}" if undone else "",
            )
            if strict:
                raise PluginError(
                    f"plugin {candidate.name!r} from {candidate.distribution} ({candidate.target}) failed: "
                    f"{_describe(error)}"
                ) from error
            return
        self._report(candidate, LOADED, trace=trace, registered=staging.summary(), start=start)

    def _check_hooks(self, plugin: object) -> None:
        for caller in self.pm.get_hookcallers(plugin) or []:
            if not caller.has_spec():
                raise PluginError(
                    f"implements unknown hook {caller.name!r}; known hooks: {', '.join(hookspecs.HOOK_NAMES)}"
                )

    def _commit(self, staging: Staging) -> None:
        # Check every name first so a conflict leaves nothing behind.
        for kind, records, store in (
            ("preset", staging.presets, self.presets),
            ("converter", staging.converters, self.converters),
            ("adapter", staging.adapters, self.adapters),
        ):
            for record in records:
                if record.name in store:
                    raise PluginError(f"{kind} {record.name!r} is already registered by {store[record.name].source}")
        for spec in staging.kernels:
            # The core accepts re-registering the very same function; a name is still owned by one distribution.
            owner = next((k.source for k in kernels(spec.op) if k.name == spec.name), None)
            if owner is not None and canonical(owner) != canonical(staging.distribution):
                raise PluginError(f"kernel {spec.op}/{spec.name} is already registered by {owner}")
        for backend in staging.backends:
            present = backend_store.lookup(backend.name)
            if present is not None and canonical(present.source) != canonical(staging.distribution):
                raise PluginError(f"backend {backend.name!r} is already registered by {present.source}")
        # A failure from here on is undone by the caller's rollback snapshot.
        added: list[tuple[str, str]] = []
        for spec in staging.kernels:
            was_registered = is_registered(spec.op, spec.name)
            register_kernel(spec)  # KernelError when another distribution owns the name
            if not was_registered:
                added.append((spec.op, spec.name))
        for backend in staging.backends:
            backend_store.register_backend(backend, replace=True)
        self.owned_kernels.extend(added)
        self.owned_backends.extend(backend.name for backend in staging.backends)
        self.presets.update((p.name, p) for p in staging.presets)
        self.converters.update((c.name, c) for c in staging.converters)
        self.adapters.update((a.name, a) for a in staging.adapters)

    def _report(
        self,
        candidate: Candidate,
        status: str,
        *,
        trace: bool,
        error: str | None = None,
        registered: tuple[str, ...] = (),
        start: float | None = None,
    ) -> None:
        self.plugins.append(
            PluginRecord(
                name=candidate.name,
                distribution=candidate.distribution,
                version=candidate.version,
                entry_point=candidate.target,
                status=status,
                error=error if status != LOADED else None,
                registered=registered,
            )
        )
        if trace:
            elapsed = "" if start is None else f" in {1000 * (time.perf_counter() - start):.1f} ms"
            detail = ", ".join(registered) if status == LOADED else (error or "")
            print(
                f"mega_plugin: {status} {candidate.distribution}/{candidate.name} ({candidate.target}){elapsed}: {detail}",
                file=sys.stderr,
            )

    def unload(self) -> None:
        """Remove the kernels this host registered in the core registry."""
        for op, name in self.owned_kernels:
            unregister_kernel(op, name)
        self.owned_kernels.clear()
        for name in self.owned_backends:
            backend_store.unregister_backend(name)
        self.owned_backends.clear()


_lock = threading.RLock()
_host = PluginHost()


def load_plugins() -> None:
    """Load every plugin once (lazy and idempotent; re-entrant calls from hooks return at once)."""
    global _host
    if _host.loaded:
        return
    with _lock:
        host = _host
        if host.loaded or host.loading:
            return
        host.loading = True
        try:
            host.load()
        except BaseException:
            host.unload()  # strict mode: leave nothing half-loaded; the next call tries again
            _host = PluginHost()
            raise
        finally:
            host.loading = False
        host.loaded = True


def is_loaded() -> bool:
    """Whether plugins have been loaded in this process (since the last :func:`reset`)."""
    return _host.loaded


def reset() -> None:
    """Forget every plugin and what it registered; the next lookup loads them again (tests)."""
    global _host
    with _lock:
        _host.unload()
        _host = PluginHost()


def host() -> PluginHost:
    """The current, loaded :class:`PluginHost`."""
    load_plugins()
    return _host
