"""Kernel dispatch: backends are data, not if-chains.

A kernel implements one *op* (``"ema"``, ``"attention"`` or ``"linear"``, signatures in
:mod:`mega_plugin.core.kernels.signatures`). Kernels are registered here as
:class:`KernelSpec` records, by the built-in plugin and by third-party plugins (through
:mod:`mega_plugin.registry`), and chosen per call:

* a model asks for a name from its config (``ema_kernel`` / ``attention_kernel``,
  saved with the checkpoint), ``"auto"`` by default;
* the environment variable ``MEGA_PLUGIN_KERNEL_<OP>`` (e.g. ``MEGA_PLUGIN_KERNEL_EMA=reference``)
  overrides the config;
* ``auto`` tries the available kernels by descending priority; each may decline a call
  through ``supports(call)`` returning a reason; the ``reference`` kernel accepts every call.

This module imports torch only. Plugin discovery is installed as a callback
(:func:`set_discovery`) so the core never imports pluggy or entry points itself.
"""

from __future__ import annotations

import inspect
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Mapping

OPS: Final = ("ema", "attention", "linear")
AUTO: Final = "auto"
REFERENCE: Final = "reference"


class KernelError(ValueError):
    """A kernel was asked for by a name that does not exist or cannot serve the call."""


@dataclass(frozen=True)
class KernelSpec:
    """One kernel implementation of one op."""

    name: str
    """Unique name within the op, e.g. ``"reference"``, ``"chunked_scan"``."""

    op: str
    """``"ema"``, ``"attention"`` or ``"linear"``."""

    fn: Callable[..., Any]
    """The implementation; must accept the op's signature."""

    priority: int = 0
    """``auto`` tries higher priorities first; the reference kernel has priority 0."""

    is_available: Callable[[], str | None] = field(default=lambda: None)
    """Returns ``None`` when usable on this machine, else the reason it is not."""

    supports: Callable[[Mapping[str, Any]], str | None] = field(default=lambda call: None)
    """Returns ``None`` when the kernel accepts this call, else the reason it declines."""

    description: str = ""
    """One line shown by ``mega-plugin info``."""

    source: str = "mega_plugin"
    """Distribution that registered it (filled in by the plugin registry)."""


_lock = threading.RLock()
_kernels: dict[str, dict[str, KernelSpec]] = {op: {} for op in OPS}
_discovery: list[Callable[[], None]] = []
_version = 0
"""Bumped by every registration and removal: lookups cache their sorted lists per version."""
_sorted: dict[str, tuple[int, tuple[KernelSpec, ...]]] = {}
_REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {}
_REQUIRED_KEYWORDS: dict[str, tuple[str, ...]] = {}


def set_signature(op: str, *, positional: tuple[str, ...], keywords: tuple[str, ...]) -> None:
    """Declare the parameters every kernel of ``op`` must accept (checked at registration)."""
    _REQUIRED_PARAMS[op] = positional
    _REQUIRED_KEYWORDS[op] = keywords


def op_signature(op: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """How the core calls a kernel of ``op``: (positional argument names, keyword argument names)."""
    if op not in _REQUIRED_PARAMS:
        raise KernelError(f"op={op!r} has no declared signature; declared: {', '.join(_REQUIRED_PARAMS)}")
    return _REQUIRED_PARAMS[op], _REQUIRED_KEYWORDS[op]


def set_discovery(callback: Callable[[], None]) -> None:
    """Install a callback run before the first lookup (plugin discovery; idempotent itself)."""
    with _lock:
        if callback not in _discovery:
            _discovery.append(callback)


def _discover() -> None:
    for callback in list(_discovery):
        callback()


def check_signature(spec: KernelSpec) -> None:
    """Raise ``KernelError`` if ``spec.fn`` cannot take the op's required parameters."""
    required = _REQUIRED_PARAMS.get(spec.op, ())
    try:
        params = inspect.signature(spec.fn).parameters
    except (TypeError, ValueError) as error:
        raise KernelError(f"kernel {spec.op}/{spec.name}: cannot inspect its signature ({error})") from error
    takes_var = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    positional = [
        p.name
        for p in params.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < len(required) and not any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values()
    ):
        raise KernelError(
            f"kernel {spec.op}/{spec.name}: takes positional parameters {positional}, "
            f"the op requires {list(required)}"
        )
    keyword_only = {p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    needed = set(_REQUIRED_KEYWORDS.get(spec.op, ()))
    missing = needed - keyword_only - set(positional)
    if missing and not takes_var:
        raise KernelError(
            f"kernel {spec.op}/{spec.name}: missing keyword parameters {sorted(missing)}"
        )


def register_kernel(spec: KernelSpec, *, replace: bool = False) -> None:
    """Add a kernel. Raises ``KernelError`` for an unknown op, a bad signature or a duplicate."""
    if spec.op not in OPS:
        raise KernelError(f"kernel {spec.name!r}: op={spec.op!r} is unknown; allowed values: {', '.join(OPS)}")
    if not spec.name or spec.name == AUTO:
        raise KernelError(f"kernel name {spec.name!r} is reserved or empty")
    check_signature(spec)
    with _lock:
        existing = _kernels[spec.op].get(spec.name)
        if existing is not None and not replace and existing.fn is not spec.fn:
            raise KernelError(
                f"kernel {spec.op}/{spec.name} is already registered by {existing.source}"
            )
        _kernels[spec.op][spec.name] = spec
        _bump()


def unregister_kernel(op: str, name: str) -> None:
    """Remove a kernel (tests and plugin reloads)."""
    with _lock:
        if _kernels[op].pop(name, None) is not None:
            _bump()


def _bump() -> None:
    global _version
    _version += 1


def registry_version() -> int:
    """A number that changes whenever a kernel is registered or removed (for callers' caches)."""
    return _version


def kernels(op: str) -> list[KernelSpec]:
    """Registered kernels of ``op``, best first."""
    return list(_ordered(op))


def _ordered(op: str) -> tuple[KernelSpec, ...]:
    """:func:`kernels` without the copy, for the dispatch of every call."""
    if op not in OPS:
        raise KernelError(f"op={op!r} is unknown; allowed values: {', '.join(OPS)}")
    _discover()
    # Looked up on every projection, EMA and attention call: sorted once per registry version.
    cached = _sorted.get(op)
    if cached is not None and cached[0] == _version:
        return cached[1]
    with _lock:
        ordered = tuple(sorted(_kernels[op].values(), key=lambda s: (-s.priority, s.name)))
        _sorted[op] = (_version, ordered)
        return ordered


def is_registered(op: str, name: str) -> bool:
    """Whether ``op`` has a kernel called ``name`` (no discovery)."""
    with _lock:
        return name in _kernels.get(op, {})


def env_override(op: str) -> str | None:
    """The kernel name forced by ``MEGA_PLUGIN_KERNEL_<OP>``, if set."""
    value = os.environ.get(f"MEGA_PLUGIN_KERNEL_{op.upper()}", "").strip()
    return value or None


def resolve_kernel(op: str, requested: str, call: Mapping[str, Any]) -> KernelSpec:
    """Pick the kernel for one call.

    ``requested`` comes from the config; the environment overrides it. A named kernel that
    is unavailable or declines the call raises ``KernelError`` with the reason; ``auto`` skips
    such kernels and falls back to the reference kernel.
    """
    name = env_override(op) or requested or AUTO
    candidates = _ordered(op)
    if name != AUTO:
        for spec in candidates:
            if spec.name == name:
                reason = spec.is_available() or spec.supports(call)
                if reason is not None:
                    raise KernelError(f"{op} kernel {name!r} cannot serve this call: {reason}")
                return spec
        known = ", ".join([AUTO] + [s.name for s in candidates])
        raise KernelError(f"{op}_kernel={name!r} is not registered; allowed values: {known}")
    for spec in candidates:
        if spec.is_available() is None and spec.supports(call) is None:
            return spec
    raise KernelError(f"no registered {op} kernel accepts this call (is the reference kernel registered?)")
