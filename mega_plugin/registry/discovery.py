"""Finding plugins: the built-in plugin and the entry points of the ``mega_plugin`` group.

The environment switches that block or disable plugins (``MEGA_PLUGIN_BLOCK``, ...) are in
:mod:`mega_plugin.registry.environment`.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Callable, Final

from .environment import canonical
from .hookspecs import PROJECT_NAME

ENTRY_POINT_GROUP: Final = PROJECT_NAME
BUILTIN_MODULE: Final = "mega_plugin.registry.builtin"
BUILTIN_NAME: Final = "builtin"
BUILTIN_DISTRIBUTION: Final = "mega-plugin"


@dataclass(frozen=True)
class Candidate:
    """One plugin to load: the built-in module or an installed entry point."""

    name: str
    """Entry-point name."""

    distribution: str
    """Distribution that declares it."""

    version: str
    """That distribution's version."""

    target: str
    """``module`` or ``module:attribute``."""

    load: Callable[[], object]
    """Imports and returns the plugin object."""

    def is_blocked(self, blocked: frozenset[str]) -> bool:
        """Whether ``MEGA_PLUGIN_BLOCK`` names this plugin or its distribution."""
        return canonical(self.name) in blocked or canonical(self.distribution) in blocked


def _builtin_version() -> str:
    try:
        return importlib.metadata.version(BUILTIN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def builtin_candidate() -> Candidate:
    """The built-in plugin, loaded directly (it works from a source checkout too)."""

    def load() -> object:
        import importlib

        return importlib.import_module(BUILTIN_MODULE)

    return Candidate(BUILTIN_NAME, BUILTIN_DISTRIBUTION, _builtin_version(), BUILTIN_MODULE, load)


def entry_point_candidates() -> list[Candidate]:
    """Installed ``mega_plugin`` entry points except the built-in one, sorted, de-duplicated.

    Reads metadata only (``importlib.metadata``); nothing is imported until ``load()``.
    """
    found: dict[tuple[str, str], Candidate] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.module == BUILTIN_MODULE:
            continue
        dist = entry_point.dist
        distribution = (dist.metadata["Name"] if dist is not None else None) or "<unknown distribution>"
        version = (dist.version if dist is not None else None) or ""
        key = (canonical(distribution), entry_point.name)
        if key not in found:  # the same distribution seen twice on sys.path: first one wins
            found[key] = Candidate(entry_point.name, distribution, version, entry_point.value, entry_point.load)
    return [found[key] for key in sorted(found)]
