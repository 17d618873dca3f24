"""Startup hook of mega-plugin: register MEGA with transformers when transformers is imported.

An installed wheel puts ``mega_plugin_autoregister.pth`` into site-packages; its one line,
``import _mega_plugin_autoregister``, runs this module when any interpreter starts. It costs
almost nothing: it reads one environment variable and puts a finder at the front of
``sys.meta_path``. The finder answers no import except ``transformers`` itself; for that one it
wraps the loader another finder found, so that right after transformers' ``__init__`` has run,
``import mega_plugin`` registers MEGA (Auto classes, ``from transformers import MegaModel``). The
finder then removes itself. Without transformers nothing ever happens.

- ``MEGA_PLUGIN_AUTOREGISTER=0`` (or ``false``, ``no``, ``off``) turns the hook off.
- The hook never raises: if mega_plugin cannot be imported or cannot register, it warns once
  (a ``RuntimeWarning`` naming the error) and transformers works as without mega-plugin; an
  error of transformers' own import propagates exactly as it would without the hook.

This module must stay tiny and import nothing that Python has not already loaded at startup
(``os``, ``sys``): ``python -m mega_plugin.benchmarks.startup`` measures what it adds.
"""

from __future__ import annotations

import os
import sys

ENV_SWITCH = "MEGA_PLUGIN_AUTOREGISTER"
"""Set to ``0``/``false``/``no``/``off`` to turn the hook off."""

TARGET = "transformers"
"""The import that triggers registration."""

_OFF_VALUES = ("0", "false", "no", "off")
_state = {"warned": False, "registered": False}


def enabled() -> bool:
    """Whether the hook is on (the environment switch is read at each call)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF_VALUES


class _RegisterAfterLoad:
    """Wraps transformers' real loader: runs it, then registers mega_plugin."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def create_module(self, spec: object) -> object:
        create = getattr(self.inner, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: object) -> None:
        try:
            self.inner.exec_module(module)  # type: ignore[attr-defined]
        finally:
            # Later readers of __loader__ / __spec__.loader see transformers' own loader.
            _restore_loader(module, self.inner)
        uninstall()
        register()

    def __getattr__(self, name: str) -> object:  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.inner, name)


def _restore_loader(module: object, inner: object) -> None:
    try:
        module.__loader__ = inner  # type: ignore[attr-defined]
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = inner
    except Exception:  # noqa: BLE001 - cosmetic only; never break the import
        pass


class AutoRegisterFinder:
    """A ``sys.meta_path`` finder that only ever answers ``transformers``, with a wrapped loader."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != TARGET:
            return None
        try:
            return _wrapped_spec(self, name, path, target)
        except Exception:  # noqa: BLE001 - fall back to the normal import (which reports its own errors)
            return None

    def invalidate_caches(self) -> None:
        return None


def _wrapped_spec(finder: AutoRegisterFinder, name: str, path: object, target: object) -> object:
    for other in list(sys.meta_path):
        if other is finder or isinstance(other, AutoRegisterFinder):
            continue
        find_spec = getattr(other, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(name, path, target)
        if spec is None:
            continue
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module") or isinstance(loader, _RegisterAfterLoad):
            return spec
        spec.loader = _RegisterAfterLoad(loader)
        return spec
    return None


def register() -> bool:
    """Import mega_plugin (which registers MEGA with transformers); never raises. True on success."""
    if not enabled():
        return False
    try:
        import mega_plugin  # noqa: F401 - importing registers
    except Exception as error:  # noqa: BLE001 - a broken install must not break transformers
        _warn_once(error)
        return False
    _state["registered"] = True
    return True


def _warn_once(error: BaseException) -> None:
    if _state["warned"]:
        return
    _state["warned"] = True
    try:
        import warnings

        warnings.warn(
            f"mega-plugin could not register MEGA with transformers ({type(error).__name__}: {error}); "
            f"transformers works without it. `import mega_plugin` shows the full error; "
            f"{ENV_SWITCH}=0 turns this startup hook off.",
            RuntimeWarning,
            stacklevel=2,
        )
    except Exception:  # noqa: BLE001
        pass


def install() -> bool:
    """Put the finder on ``sys.meta_path`` (once); register at once if transformers is already
    imported. Returns whether the hook is active. Never raises."""
    try:
        if not enabled():
            return False
        if TARGET in sys.modules:
            register()
            return True
        if not any(isinstance(finder, AutoRegisterFinder) for finder in sys.meta_path):
            sys.meta_path.insert(0, AutoRegisterFinder())
        return True
    except Exception:  # noqa: BLE001
        return False


def uninstall() -> None:
    """Remove the finder from ``sys.meta_path``."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, AutoRegisterFinder)]


install()
