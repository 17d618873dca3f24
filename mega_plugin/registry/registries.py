"""The registry objects handed to the hooks: thin typed wrappers that stage registrations.

Each plugin gets its own :class:`Staging`; the registries validate every call at once (so a
bad registration raises inside the plugin's hook, with the plugin named in the report) and
the manager commits the staging only when all of the plugin's hooks succeeded. Kernels of
every plugin but the built-in one are staged behind the call-time guard
(:mod:`mega_plugin.core.ops.guard`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Sequence

from ..core.config import MegaCoreConfig
from ..backends.registry import BackendSpec
from ..core.ops import AUTO, KernelError, KernelSpec, Support, adapt_kernel, as_support, guard_kernel
from .environment import ENV_STRICT, env_flag
from .records import (
    AdapterRecord,
    ConvertFn,
    ConverterRecord,
    PluginError,
    PresetRecord,
    converter_accepts,
)

NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")



def guarded_check(check: Callable[..., Support | str | None], what: str) -> Callable[..., Support | str | None]:
    """``check`` made safe to run on every call: an exception becomes the reason to decline.

    A plugin's ``is_available()``, ``supports(call)`` or ``guard()`` runs inside ``auto``
    dispatch, so one that raises would break every model; instead the kernel is skipped with
    the error as its reason. Under ``MEGA_PLUGIN_STRICT=1`` the exception propagates.
    """

    def guarded(*args: Any) -> Support | str | None:
        try:
            return check(*args)
        except Exception as error:
            if env_flag(ENV_STRICT):
                raise
            return f"{what} raised {type(error).__name__}: {error}"

    guarded.__wrapped__ = check  # type: ignore[attr-defined]
    return guarded


def guarded_support(check: Callable[[], Support | str | None], what: str) -> Callable[[], Support]:
    """:func:`guarded_check` of an availability check, answering a :class:`Support` always."""
    guarded = guarded_check(check, what)

    def support() -> Support:
        return as_support(guarded())

    return support


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a usable registry name, else raise ``PluginError``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginError(
            f"{kind} name {name!r} is invalid: use letters, digits and _ . + - (starting with a letter or digit)"
        )
    return name


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


@dataclass
class Staging:
    """Everything one plugin registered, not yet visible to anyone."""

    distribution: str
    """Distribution name filled into every record's ``source``."""

    plugin: str = ""
    """How the call-time guard's warnings name the plugin, e.g. ``'fast' from mega-plugin-fast``."""

    trusted: bool = False
    """The built-in plugin: its kernels run without the call-time guard."""

    kernels: list[KernelSpec] = field(default_factory=list)
    backends: list[BackendSpec] = field(default_factory=list)
    presets: list[PresetRecord] = field(default_factory=list)
    converters: list[ConverterRecord] = field(default_factory=list)
    adapters: list[AdapterRecord] = field(default_factory=list)

    def _check_unique(self, kind: str, name: str, existing: Sequence[str]) -> None:
        if name in existing:
            raise PluginError(f"{kind} {name!r} is registered twice by {self.distribution}")

    def summary(self) -> tuple[str, ...]:
        """Human-readable list of the staged registrations."""
        return (
            tuple(f"kernel {k.op}/{k.name}" for k in self.kernels)
            + tuple(f"backend {b.name}" for b in self.backends)
            + tuple(f"preset {p.name}" for p in self.presets)
            + tuple(f"converter {c.name}" for c in self.converters)
            + tuple(f"adapter {a.name}" for a in self.adapters)
        )


class _Registry:
    def __init__(self, staging: Staging) -> None:
        self._staging = staging

    @property
    def distribution(self) -> str:
        """Name of the distribution whose plugin is registering (``source`` of its records)."""
        return self._staging.distribution


class KernelRegistry(_Registry):
    """Passed to ``mega_plugin_register_kernels``; forwards to the core kernel registry."""

    def register(
        self,
        op: str,
        name: str,
        fn: Callable[..., Any],
        *,
        priority: int = 0,
        is_available: Callable[[], Support | str | None] | None = None,
        supports: Callable[[Any], Support | str | None] | None = None,
        guard: Callable[[], Support | str | None] | None = None,
        description: str = "",
    ) -> KernelSpec:
        """Register ``fn`` as kernel ``name`` of ``op`` (``"ema"`` or ``"attention"``); returns its spec.

        ``is_available()``, ``supports(call)`` and ``guard()`` answer a
        :class:`~mega_plugin.core.ops.Support` (or ``None`` / a reason string) ; leave them
        out when the kernel always serves. ``supports`` is asked once per distinct call,
        ``guard`` on every call (for process state such as autocast).
        """
        spec = KernelSpec(
            name=name,
            op=op,
            fn=fn,
            priority=priority,
            description=description or _first_line(getattr(fn, "__doc__", None)),
        )
        if is_available is not None:
            spec = dataclasses.replace(spec, is_available=is_available)
        if supports is not None:
            spec = dataclasses.replace(spec, supports=supports)
        if guard is not None:
            spec = dataclasses.replace(spec, guard=guard)
        return self.register_spec(spec)

    def register_spec(self, spec: KernelSpec) -> KernelSpec:
        """Register a ready :class:`KernelSpec`; its ``source`` is set to this distribution."""
        if not isinstance(spec, KernelSpec):
            raise PluginError(f"register_spec expects a KernelSpec, got {type(spec).__name__}")
        spec = adapt_kernel(spec)  # first: an unknown or removed op; a keyword-convention kernel comes back wrapped
        check_name("kernel", spec.name)
        if spec.name == AUTO:
            raise KernelError(f"kernel name {AUTO!r} is reserved")
        label = f"kernel {spec.op}/{spec.name} of {self.distribution}"
        staged = dataclasses.replace(
            spec,
            source=self.distribution,
            is_available=guarded_check(spec.is_available, f"{label}: is_available()"),
            supports=guarded_check(spec.supports, f"{label}: supports(call)"),
            guard=None if spec.guard is None else guarded_check(spec.guard, f"{label}: guard()"),
        )
        if not self._staging.trusted:
            staged = guard_kernel(
                staged, plugin=self._staging.plugin or self.distribution, strict=lambda: env_flag(ENV_STRICT)
            )
        self._staging._check_unique(
            "kernel", f"{spec.op}/{spec.name}", [f"{k.op}/{k.name}" for k in self._staging.kernels]
        )
        self._staging.kernels.append(staged)
        return staged


class BackendRegistry(_Registry):
    """Passed to ``mega_plugin_register_backends``; forwards to ``mega_plugin.backends``."""

    def register(
        self,
        name: str,
        *,
        accelerate: Callable[..., int],
        restore: Callable[..., int],
        priority: int = 0,
        is_available: Callable[[], Support | str | None] | None = None,
        description: str = "",
    ) -> BackendSpec:
        """Register backend ``name``: ``accelerate(model)`` swaps modules in place, ``restore(model)`` undoes it."""
        check_name("backend", name)
        for role, fn in (("accelerate", accelerate), ("restore", restore)):
            if not callable(fn):
                raise PluginError(f"backend {name!r}: {role} must be callable, got {type(fn).__name__}")
        label = f"backend {name} of {self.distribution}"
        spec = BackendSpec(
            name=name,
            accelerate=accelerate,
            restore=restore,
            priority=priority,
            description=description or _first_line(getattr(accelerate, "__doc__", None)),
            source=self.distribution,
        )
        if is_available is not None:
            spec = dataclasses.replace(spec, is_available=guarded_support(is_available, f"{label}: is_available()"))
        self._staging._check_unique("backend", name, [b.name for b in self._staging.backends])
        self._staging.backends.append(spec)
        return spec


class PresetRegistry(_Registry):
    """Passed to ``mega_plugin_register_presets``."""

    def register(
        self, name: str, factory: Callable[[], MegaCoreConfig], *, description: str | None = None
    ) -> PresetRecord:
        """Register preset ``name``; ``factory()`` must return a :class:`MegaCoreConfig` (checked now)."""
        check_name("preset", name)
        if not callable(factory):
            raise PluginError(f"preset {name!r}: factory must be callable, got {type(factory).__name__}")
        record = PresetRecord(
            name=name,
            factory=factory,
            description=description if description is not None else _first_line(factory.__doc__),
            source=self.distribution,
        )
        record.build()  # validates the config (MegaCoreConfig.__post_init__) and the return type
        self._staging._check_unique("preset", name, [p.name for p in self._staging.presets])
        self._staging.presets.append(record)
        return record


class ConverterRegistry(_Registry):
    """Passed to ``mega_plugin_register_converters``."""

    def register(self, name: str, convert: ConvertFn, *, description: str = "") -> ConverterRecord:
        """Register ``convert(state_dict, original_args[, *, allow_drop])`` as converter ``name``."""
        check_name("converter", name)
        if not callable(convert):
            raise PluginError(f"converter {name!r}: convert must be callable, got {type(convert).__name__}")
        problem, accepts_allow_drop = converter_accepts(convert)
        if problem is not None:
            raise PluginError(f"converter {name!r}: {problem}")
        record = ConverterRecord(
            name=name,
            convert=convert,
            description=description or _first_line(getattr(convert, "__doc__", None)),
            source=self.distribution,
            accepts_allow_drop=accepts_allow_drop,
        )
        self._staging._check_unique("converter", name, [c.name for c in self._staging.converters])
        self._staging.converters.append(record)
        return record


class AdapterRegistry(_Registry):
    """Passed to ``mega_plugin_register_adapters``."""

    def register(
        self,
        name: str,
        *,
        module: str,
        requires: Sequence[str] = (),
        description: str = "",
        is_available: Callable[[], str | None] | None = None,
    ) -> AdapterRecord:
        """Describe adapter ``name`` implemented in ``module`` and needing the packages ``requires``."""
        check_name("adapter", name)
        if isinstance(requires, str):
            raise PluginError(f"adapter {name!r}: requires must be a sequence of module names, not a string")
        record = AdapterRecord(
            name=name,
            module=module,
            requires=tuple(requires),
            description=description,
            source=self.distribution,
            is_available=is_available,
        )
        self._staging._check_unique("adapter", name, [a.name for a in self._staging.adapters])
        self._staging.adapters.append(record)
        return record


REGISTRY_FOR_HOOK: Final = {
    "mega_plugin_register_kernels": KernelRegistry,
    "mega_plugin_register_backends": BackendRegistry,
    "mega_plugin_register_presets": PresetRegistry,
    "mega_plugin_register_converters": ConverterRegistry,
    "mega_plugin_register_adapters": AdapterRegistry,
}
"""The registry class each hook receives."""
