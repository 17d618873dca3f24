"""The backend registry: module-level fast paths, applied to a model once, when it is built.

A backend (a :class:`BackendSpec`) swaps a model's core modules for subclasses with a faster
schedule (same parameters, state-dict keys and hooks) and can undo that. Kernels of the ops
are registered separately (``mega_plugin.core.ops``); a backend package usually brings both.
The built-in ``cpu_fast`` backend and third-party ones come through the plugin hook
``mega_plugin_register_backends``; discovery is installed as a callback, as for kernels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Final

from torch import nn

from ..core.ops import SUPPORTED, Support

AUTO: Final = "auto"
NONE: Final = "none"


class BackendError(ValueError):
    """A backend was asked for by a name that does not exist or cannot run here."""


def _always() -> Support:
    return SUPPORTED


@dataclass(frozen=True)
class BackendSpec:
    """One backend: how to accelerate a model and how to undo it."""

    name: str
    accelerate: Callable[[nn.Module], int]
    """Swaps modules of a model in place; returns how many it changed."""
    restore: Callable[[nn.Module], int]
    """Undoes ``accelerate``; returns how many modules it changed back."""
    priority: int = 0
    """``auto`` applies available backends by descending priority."""
    is_available: Callable[[], Support] = field(default=_always)
    description: str = ""
    source: str = "mega-plugin"


_lock = threading.RLock()
_backends: dict[str, BackendSpec] = {}
_discovery: list[Callable[[], None]] = []


def set_discovery(callback: Callable[[], None]) -> None:
    """Install a callback run before lookups (plugin discovery; idempotent and cheap)."""
    with _lock:
        if callback not in _discovery:
            _discovery.append(callback)


def register_backend(spec: BackendSpec, *, replace: bool = False) -> None:
    """Add a backend; ``BackendError`` for a reserved name or one another distribution took."""
    if spec.name in ("", AUTO, NONE):
        raise BackendError(f"backend name {spec.name!r} is reserved or empty")
    with _lock:
        existing = _backends.get(spec.name)
        if existing is not None and not replace and existing.accelerate is not spec.accelerate:
            raise BackendError(f"backend {spec.name!r} is already registered by {existing.source}")
        _backends[spec.name] = spec


def unregister_backend(name: str) -> None:
    with _lock:
        _backends.pop(name, None)


def registered_backends() -> dict[str, BackendSpec]:
    """Every registered backend by name, without discovery (a plugin load's rollback snapshot)."""
    with _lock:
        return dict(_backends)


def lookup(name: str) -> BackendSpec | None:
    """The backend registered as ``name``, if any (no discovery)."""
    with _lock:
        return _backends.get(name)


def backends() -> list[BackendSpec]:
    """Registered backends, highest priority first (after discovery)."""
    for callback in list(_discovery):
        callback()
    with _lock:
        return sorted(_backends.values(), key=lambda spec: (-spec.priority, spec.name))
