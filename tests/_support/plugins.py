"""In-process plugins for the registry tests: fake entry points and small plugin objects.

The installed example/broken plugin packages (``tests/registry/plugins``) and the fixtures
that build them are in ``tests/registry/conftest.py``.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

import mega_plugin.registry.manager as manager
from mega_plugin.core.ops import reference_ema
from mega_plugin.registry import hookimpl
from mega_plugin.registry.discovery import Candidate


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *plugins: tuple[str, object]) -> None:
    """Make discovery see in-process plugin objects as entry points ``fake-<name>/<name>``."""
    candidates = [
        Candidate(name, f"fake-{name}", "1.0", f"fake:{name}", lambda plugin=plugin: plugin) for name, plugin in plugins
    ]
    monkeypatch.setattr(manager, "entry_point_candidates", lambda: candidates)


def forwarding_ema(x: Any, coefficients: Any, initial_state: Any, options: Any) -> Any:
    """An EMA kernel with a valid signature that forwards to the reference EMA."""
    return reference_ema(x, coefficients, initial_state, options)


def kernel_plugin(op: str, name: str, fn: Callable[..., Any], **options: Any) -> object:
    """A plugin object whose kernels hook registers one kernel: ``registry.register(op, name, fn, **options)``."""

    class KernelPlugin:
        @hookimpl
        def mega_plugin_register_kernels(self, registry: Any) -> None:
            registry.register(op, name, fn, **options)

    return KernelPlugin()


def unavailable_plugin() -> object:
    """Registers the best EMA kernel, ``needs_gpu``, but one whose hardware is missing (``no GPU here``)."""
    return kernel_plugin("ema", "needs_gpu", forwarding_ema, priority=100, is_available=lambda: "no GPU here")
