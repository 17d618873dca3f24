"""mega-plugin: MEGA for Hugging Face transformers and fairseq2 from one backend-neutral core.

Importing the package registers MEGA with transformers' Auto classes when transformers is
installed, and does nothing else when it is not (``mega_plugin.core`` needs torch only).
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


_register_hf()
