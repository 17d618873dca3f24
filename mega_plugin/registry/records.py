"""The records the registry holds: presets, converters, adapters and plugin load reports."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Mapping, Sequence

from ..core.config import MegaCoreConfig

LOADED: Final = "loaded"
FAILED: Final = "failed"
BLOCKED: Final = "blocked"
DISABLED: Final = "disabled"
STATUSES: Final = (LOADED, FAILED, BLOCKED, DISABLED)

ConvertFn = Callable[..., "tuple[dict[str, Any], dict[str, Any]]"]


class PluginError(RuntimeError):
    """A plugin could not be loaded (raised only under ``MEGA_PLUGIN_STRICT=1``) or broke a rule."""


class NotRegisteredError(LookupError):
    """A preset, converter or adapter was asked for by a name nobody registered."""


class ConversionError(ValueError):
    """A checkpoint cannot be converted; lists every key that would otherwise be lost."""

    def __init__(self, message: str, *, unmapped: Sequence[str] = (), unrepresentable: Sequence[str] = ()):
        super().__init__(message)
        self.unmapped = tuple(unmapped)
        self.unrepresentable = tuple(unrepresentable)


def not_registered(kind: str, name: str, known: Sequence[str]) -> NotRegisteredError:
    """The error for an unknown ``name``, listing the allowed values."""
    allowed = ", ".join(sorted(known)) or "(none)"
    return NotRegisteredError(f"{kind} {name!r} is not registered; allowed values: {allowed}")


@dataclass(frozen=True)
class PresetRecord:
    """A named architecture preset."""

    name: str
    """Unique preset name, e.g. ``"lra_image"``."""

    factory: Callable[[], MegaCoreConfig]
    """Returns a fresh config each call."""

    description: str
    """One line shown by ``mega-plugin info`` (the factory's first docstring line by default)."""

    source: str
    """Distribution that registered it."""

    def build(self, **overrides: Any) -> MegaCoreConfig:
        """A fresh config, with ``overrides`` applied (and validated) through ``dataclasses.replace``."""
        config = self.factory()
        if not isinstance(config, MegaCoreConfig):
            raise TypeError(f"preset {self.name!r} returned {type(config).__name__}, not MegaCoreConfig")
        return dataclasses.replace(config, **overrides) if overrides else config


@dataclass(frozen=True)
class ConverterRecord:
    """A checkpoint converter into the Hugging Face MEGA layout."""

    name: str
    """Unique converter name, used as ``mega-plugin convert --from NAME``."""

    convert: ConvertFn
    """``convert(state_dict, original_args[, *, allow_drop]) -> (hf_config_dict, hf_state_dict)``."""

    description: str
    """One line shown by ``mega-plugin info``."""

    source: str
    """Distribution that registered it."""

    accepts_allow_drop: bool = False
    """Whether ``convert`` takes the ``allow_drop`` keyword."""

    def run(
        self,
        state_dict: Mapping[str, Any],
        original_args: Mapping[str, Any] | None,
        *,
        allow_drop: Sequence[str] = (),
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the converter; ``allow_drop`` is refused for converters that do not take it."""
        if self.accepts_allow_drop:
            result = self.convert(state_dict, original_args, allow_drop=tuple(allow_drop))
        elif allow_drop:
            raise ConversionError(f"converter {self.name!r} does not support --allow-drop")
        else:
            result = self.convert(state_dict, original_args)
        if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(p, dict) for p in result)):
            raise TypeError(f"converter {self.name!r} must return (hf_config_dict, hf_state_dict)")
        return result


def converter_accepts(convert: Callable[..., Any]) -> tuple[str | None, bool]:
    """(why ``convert`` cannot be a converter or None, whether it takes ``allow_drop``)."""
    try:
        signature = inspect.signature(convert)
    except (TypeError, ValueError) as error:
        return f"cannot inspect its signature ({error})", False
    try:
        signature.bind(None, None)
    except TypeError:
        return f"convert{signature} must accept (state_dict, original_args)", False
    params = signature.parameters.values()
    takes_keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return None, takes_keywords or "allow_drop" in signature.parameters


def modules_missing(requires: Sequence[str]) -> str | None:
    """``None`` when every top-level module in ``requires`` is importable, else which are not.

    Uses ``importlib.util.find_spec`` on top-level names only, so nothing is imported.
    """
    missing = [name for name in requires if importlib.util.find_spec(name.partition(".")[0]) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class AdapterRecord:
    """A descriptive record of a framework adapter (nothing of the framework is imported)."""

    name: str
    """Unique adapter name, e.g. ``"hf"``."""

    module: str
    """Dotted module implementing the adapter."""

    requires: tuple[str, ...]
    """Top-level packages the adapter needs."""

    description: str
    """One line shown by ``mega-plugin info``."""

    source: str
    """Distribution that registered it."""

    is_available: Callable[[], str | None] | None = None
    """Extra availability check (``None`` = usable, else the reason); runs after ``requires``."""

    def availability(self) -> str | None:
        """``None`` when usable here, else the reason it is not."""
        reason = modules_missing(self.requires)
        if reason is None and self.is_available is not None:
            reason = self.is_available()
        return reason


@dataclass(frozen=True)
class PluginRecord:
    """What happened to one entry point of the ``mega_plugin`` group."""

    name: str
    """Entry-point name (``builtin`` for the built-in plugin)."""

    distribution: str
    """Distribution (pip package) that declares the entry point."""

    version: str
    """Version of that distribution."""

    entry_point: str
    """The entry point's target, ``module`` or ``module:attribute``."""

    status: str
    """``loaded``, ``failed``, ``blocked`` (``MEGA_PLUGIN_BLOCK``) or ``disabled``
    (``MEGA_PLUGIN_DISABLE_AUTOLOAD``)."""

    error: str | None = None
    """Why it failed (exception type and message), when it did."""

    registered: tuple[str, ...] = field(default=())
    """What it registered, e.g. ``("kernel ema/scan", "preset foo")``."""
