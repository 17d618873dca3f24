"""The preset table: :data:`PRESETS` and the ``@preset`` decorator that fills it."""

from __future__ import annotations

from typing import Callable

from ..config import MegaCoreConfig

PresetFactory = Callable[[], MegaCoreConfig]

PRESETS: dict[str, PresetFactory] = {}
"""Preset name -> function returning a fresh config (registered by the built-in plugin)."""


def preset(name: str) -> Callable[[PresetFactory], PresetFactory]:
    """Decorator adding a preset function to :data:`PRESETS` under ``name``."""

    def add(factory: PresetFactory) -> PresetFactory:
        if name in PRESETS:
            raise ValueError(f"preset {name!r} is defined twice")
        PRESETS[name] = factory
        return factory

    return add
