"""What the running environment provides, checked without importing the ecosystems.

* ``MEGA_PLUGIN_ENV``: ``"hf"`` or ``"fairseq2"`` when run by ``scripts/test.sh``, ``None`` by hand.
* :func:`requires_transformers_5` / :func:`requires_reference`: ``skipif`` markers.
* :data:`MARKER_CHECKS`: how ``tests/conftest.py`` skips the ``hf``, ``fairseq2`` and
  ``reference`` markers declared in ``pyproject.toml``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Final

import pytest

MEGA_PLUGIN_ENV: Final[str | None] = os.environ.get("MEGA_PLUGIN_ENV") or None

REFERENCE_MODULE: Final = "transformers.models.deprecated.mega"
"""The deprecated MEGA of transformers 4.57: the parity oracle (fairseq2 environment only)."""


def installed_version(distribution: str) -> str | None:
    """Version of an installed distribution, without importing it; None if absent."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def distribution_installed(distribution: str) -> bool:
    """Whether ``distribution`` is installed.

    By distribution, never ``find_spec``: with ``tests/`` on ``sys.path`` the test folder
    ``tests/fairseq2`` is importable as a namespace package named ``fairseq2``.
    """
    return installed_version(distribution) is not None




def transformers_major() -> int | None:
    found = installed_version("transformers")
    return int(found.split(".")[0]) if found else None


@functools.cache
def reference_available() -> bool:
    """True if the deprecated MEGA of transformers 4.57.x can be imported."""
    if transformers_major() != 4:
        return False
    try:
        importlib.import_module(REFERENCE_MODULE)
    except ImportError:
        return False
    return True


def requires_transformers_5() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        transformers_major() != 5,
        reason=f"needs transformers 5.x (found {installed_version('transformers')})",
    )


def requires_reference() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not reference_available(),
        reason=f"needs {REFERENCE_MODULE} (transformers 4.57.x, the fairseq2 environment)",
    )


MARKER_CHECKS: Final[dict[str, tuple[Callable[[], bool], str]]] = {
    "hf": (lambda: distribution_installed("transformers"), "transformers is not installed"),
    "fairseq2": (lambda: distribution_installed("fairseq2"), "fairseq2 is not installed"),
    "reference": (reference_available, f"{REFERENCE_MODULE} is not importable"),
}
"""Marker name -> (is its ecosystem here, the skip reason otherwise)."""


def ecosystem_versions() -> list[str]:
    """``"name version"`` of torch, transformers and fairseq2, those installed."""
    return [
        f"{name} {installed_version(name)}"
        for name in ("torch", "transformers", "fairseq2")
        if installed_version(name)
    ]
