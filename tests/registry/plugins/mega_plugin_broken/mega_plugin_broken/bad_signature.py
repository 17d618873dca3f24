"""Registers an EMA kernel that cannot take the op's arguments."""

from __future__ import annotations

from typing import Any

from mega_plugin.registry import hookimpl


def ema_without_options(x: Any) -> Any:
    """Takes one argument; the ema op passes four."""
    return x


@hookimpl
def mega_plugin_register_kernels(registry: Any) -> None:
    registry.register("ema", "bad_signature", ema_without_options)
