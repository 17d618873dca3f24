"""Registers a preset under a name the built-in plugin already uses."""

from __future__ import annotations

from typing import Any

from mega_plugin.core.presets import tiny
from mega_plugin.registry import hookimpl


@hookimpl
def mega_plugin_register_presets(registry: Any) -> None:
    registry.register("tiny", tiny)
