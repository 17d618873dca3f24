"""Registers a kernel and a preset, then raises: nothing it registered may survive."""

from __future__ import annotations

from typing import Any

from mega_plugin.core.ops import reference_ema
from mega_plugin.core.presets import tiny
from mega_plugin.registry import hookimpl


def broken_partial_ema(x: Any, coefficients: Any, initial_state: Any, options: Any) -> Any:
    """Forwards to the reference EMA (valid signature)."""
    return reference_ema(x, coefficients, initial_state, options)


@hookimpl
def mega_plugin_register_kernels(registry: Any) -> None:
    registry.register("ema", "broken_partial", broken_partial_ema)


@hookimpl
def mega_plugin_register_presets(registry: Any) -> None:
    registry.register("broken_partial", tiny)
    raise RuntimeError("this plugin fails halfway through registering")
