"""mega-plugin: MEGA for Hugging Face transformers and fairseq2 from one backend-neutral core.

Importing the package installs plugin discovery for kernel dispatch (lazy: entry points are read
at the first kernel lookup) and registers MEGA with transformers' Auto classes when transformers
is installed; it needs torch and pluggy only (``mega_plugin.core`` needs torch only).
"""

from __future__ import annotations

import importlib.util
import logging

__version__ = "0.1.0"

_logger = logging.getLogger(__name__)


def _register_hf() -> None:
    if importlib.util.find_spec("transformers") is None:
        return
    from .adapters.hf import register_with_transformers

    register_with_transformers()


# Kernel dispatch must see plugin kernels whichever way a model is built or loaded (a saved config
# may name one), so the registry installs its discovery callback on import; nothing loads yet.
from . import registry as _registry  # noqa: E402,F401

_register_hf()
