"""Startup hook of mega-plugin: register MEGA with transformers when transformers needs it.

An installed wheel puts ``mega_plugin_autoregister.pth`` into site-packages; its one line,
``import _mega_plugin_autoregister``, runs this module when any interpreter starts. It costs
almost nothing: it reads one environment variable and puts a finder at the front of
``sys.meta_path``. The finder answers only two imports, each time by wrapping the loader another
finder found, so that something runs right after the module's own code:

- ``transformers``: the lazy module's class learns the MEGA names (``from transformers import
  MegaModel`` then imports mega_plugin, which registers, and returns our class); nothing heavy;
- ``transformers.models.auto`` (imported by every Auto class and ``pipeline``): ``import
  mega_plugin`` registers MEGA with the Auto classes; the finder then removes itself.

So a plain ``import transformers`` stays as fast as without mega-plugin, and the registration
(our model classes, ``transformers.modeling_utils``, torch) is paid only where the Auto classes or
the MEGA names are used. Without transformers nothing ever happens.

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
"""The import after which the MEGA names are taught to transformers' lazy module class."""

AUTO_TARGET = "transformers.models.auto"
"""The import after which MEGA is registered with the Auto classes."""

MEGA_NAMES = frozenset(
    (
        "MegaConfig",
        "MegaPreTrainedModel",
        "MegaModel",
        "MegaForCausalLM",
        "MegaForMaskedLM",
        "MegaForSequenceClassification",
        "MegaForMultipleChoice",
        "MegaForTokenClassification",
        "MegaForQuestionAnswering",
        "MegaForImageClassification",
    )
)
"""What ``from transformers import ...`` gives from mega_plugin (as in the registration's table)."""

_OFF_VALUES = ("0", "false", "no", "off")
_state = {"warned": False, "registered": False}


def enabled() -> bool:
    """Whether the hook is on (the environment switch is read at each call)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF_VALUES


class _RegisterAfterLoad:
    """Wraps transformers' real loader: runs it, then registers mega_plugin."""

    def __init__(self, inner: object, after: object) -> None:
        self.inner = inner
        self.after = after

    def create_module(self, spec: object) -> object:
        create = getattr(self.inner, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: object) -> None:
        try:
            self.inner.exec_module(module)  # type: ignore[attr-defined]
        finally:
            # Later readers of __loader__ / __spec__.loader see transformers' own loader.
            _restore_loader(module, self.inner)
        self.after(module)  # type: ignore[operator]

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
        if name != TARGET and name != AUTO_TARGET:
            return None
        try:
            return _wrapped_spec(self, name, path, target, _after_transformers if name == TARGET else _after_auto)
        except Exception:  # noqa: BLE001 - fall back to the normal import (which reports its own errors)
            return None

    def invalidate_caches(self) -> None:
        return None


def _wrapped_spec(finder: AutoRegisterFinder, name: str, path: object, target: object, after: object) -> object:
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
        spec.loader = _RegisterAfterLoad(loader, after)
        return spec
    return None


def _after_transformers(module: object) -> None:
    # transformers' __init__ may have replaced itself in sys.modules by a lazy module: teach that one.
    _teach_mega_names(sys.modules.get(TARGET, module))


def _after_auto(module: object) -> None:
    uninstall()
    register()


def _teach_mega_names(module: object) -> None:
    """Make the lazy module class answer the MEGA names by importing mega_plugin (once per class)."""
    try:
        lazy_class = type(module)
        own_getattr = getattr(lazy_class, "__getattr__", None)
        if lazy_class is type(sys) or own_getattr is None or getattr(lazy_class, "_mega_plugin_hook", False):
            return

        def __getattr__(self: object, name: str) -> object:
            if name in MEGA_NAMES and getattr(self, "__name__", None) == TARGET and register():
                for bound_in in (sys.modules.get(TARGET), self):
                    value = getattr(bound_in, "__dict__", {}).get(name)
                    if value is not None:
                        return value
            return own_getattr(self, name)

        lazy_class.__getattr__ = __getattr__
        lazy_class._mega_plugin_hook = True
    except Exception:  # noqa: BLE001 - names stay as transformers has them
        pass


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
        if AUTO_TARGET in sys.modules:
            register()
            return True
        if TARGET in sys.modules:
            _teach_mega_names(sys.modules[TARGET])
        if not any(isinstance(finder, AutoRegisterFinder) for finder in sys.meta_path):
            sys.meta_path.insert(0, AutoRegisterFinder())
        return True
    except Exception:  # noqa: BLE001
        return False


def uninstall() -> None:
    """Remove the finder from ``sys.meta_path``."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, AutoRegisterFinder)]


install()
