"""Registers two EMA kernels and a backend straight into the registries, then fails to import.

Nothing it put there may survive: the manager rolls the registries back to what they held
before the plugin was loaded.
"""

from __future__ import annotations

from typing import Any

from mega_plugin.backends import BackendSpec, register_backend
from mega_plugin.core.ops import KernelSpec, reference_ema, register_kernel


def early_ema(x: Any, coefficients: Any, initial_state: Any, options: Any) -> Any:
    """Forwards to the reference EMA (valid signature)."""
    return reference_ema(x, coefficients, initial_state, options)


def no_change(model: Any) -> int:
    """Changes nothing."""
    return 0


for name in ("broken_early_a", "broken_early_b"):
    register_kernel(KernelSpec(name=name, op="ema", fn=early_ema, priority=50, source="mega-plugin-broken"))
register_backend(BackendSpec(name="broken_early", accelerate=no_change, restore=no_change, source="mega-plugin-broken"))

import mega_plugin_broken_missing_dependency  # noqa: E402,F401  (fails: not installed)
