"""The environment variables that steer plugin loading, and how they are read.

Read each time plugins are loaded, so tests can change them and call
:func:`mega_plugin.registry.reset`:

* ``MEGA_PLUGIN_STRICT=1``: a failing plugin raises :class:`PluginError` instead of being
  reported and skipped (for plugin authors and CI).
* ``MEGA_PLUGIN_BLOCK=name1,name2``: skip these plugins, by entry-point name or distribution
  name (``-``, ``_`` and ``.`` are equivalent, case does not matter). The built-in plugin
  cannot be blocked.
* ``MEGA_PLUGIN_DISABLE_AUTOLOAD=1``: load only the built-in plugin.
* ``MEGA_PLUGIN_TRACE=1``: print each plugin load and what it registered to stderr.

A leaf module (standard library only): discovery, the manager and the registry objects all
read these switches without importing one another for them.
"""

from __future__ import annotations

import os
import re
from typing import Final

ENV_STRICT: Final = "MEGA_PLUGIN_STRICT"
ENV_BLOCK: Final = "MEGA_PLUGIN_BLOCK"
ENV_DISABLE_AUTOLOAD: Final = "MEGA_PLUGIN_DISABLE_AUTOLOAD"
ENV_TRACE: Final = "MEGA_PLUGIN_TRACE"

_TRUE: Final = frozenset({"1", "true", "yes", "on"})


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def canonical(name: str) -> str:
    """Normalised plugin/distribution name (PEP 503 style): lower case, runs of -_. become -."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def blocked_names() -> frozenset[str]:
    """Canonical names listed in ``MEGA_PLUGIN_BLOCK``."""
    raw = os.environ.get(ENV_BLOCK, "")
    return frozenset(canonical(part) for part in raw.split(",") if part.strip())
