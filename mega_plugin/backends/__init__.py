"""Fast paths of mega-plugin, kept out of the core and chosen once.

* :mod:`.portable`: faster kernels of the ops in plain torch (any device);
* :mod:`.cpu_fast`: the CPU schedule (row blocks, in-place no-grad layers, oneDNN GEMMs),
  applied by swapping a model's modules for subclasses.

:func:`accelerate` applies backends to a model once, when it is built (the Hugging Face and
fairseq2 adapters call it); kernels are chosen per call signature by the core's registry.
``MEGA_PLUGIN_BACKENDS`` (``auto``, ``none`` or names separated by commas) overrides the choice.
"""

from __future__ import annotations

import os
from typing import Final, Sequence

from torch import nn

from .registry import AUTO, NONE, BackendError, BackendSpec, backends, register_backend, unregister_backend

ENV_BACKENDS: Final = "MEGA_PLUGIN_BACKENDS"


def _requested(names: str | Sequence[str]) -> list[str]:
    chosen = os.environ.get(ENV_BACKENDS, "").strip() or names
    if isinstance(chosen, str):
        chosen = [part.strip() for part in chosen.split(",") if part.strip()]
    return list(chosen) or [NONE]


def accelerate(model: nn.Module, *, names: str | Sequence[str] = AUTO) -> list[str]:
    """Apply backends to ``model`` in place; returns the names of those applied.

    ``auto`` applies every available backend, highest priority first; ``none`` none; named
    backends must exist and be available (``BackendError`` names the allowed values otherwise).
    """
    requested = _requested(names)
    registered = backends()
    if requested == [NONE]:
        return []
    if requested == [AUTO]:
        chosen = [spec for spec in registered if spec.is_available().ok]
    else:
        by_name = {spec.name: spec for spec in registered}
        chosen = []
        for name in requested:
            spec = by_name.get(name)
            if spec is None:
                allowed = ", ".join([AUTO, NONE, *by_name])
                raise BackendError(f"backend {name!r} is not registered; allowed values: {allowed}")
            support = spec.is_available()
            if not support.ok:
                raise BackendError(f"backend {name!r} cannot run here: {support.reason}")
            chosen.append(spec)
    for spec in chosen:
        spec.accelerate(model)
    return [spec.name for spec in chosen]


def restore(model: nn.Module) -> int:
    """Undo every backend on ``model`` (back to the core's modules); returns how many modules changed."""
    return sum(spec.restore(model) for spec in backends())


__all__ = [
    "AUTO",
    "ENV_BACKENDS",
    "NONE",
    "BackendError",
    "BackendSpec",
    "accelerate",
    "backends",
    "register_backend",
    "restore",
    "unregister_backend",
]
