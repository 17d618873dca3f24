"""Implements a misspelt hook (singular 'kernel'); pluggy alone would accept it silently."""

from __future__ import annotations

from typing import Any

from mega_plugin.registry import hookimpl


@hookimpl
def mega_plugin_register_kernel(registry: Any) -> None:
    raise AssertionError("a hook without a specification must never be called")
