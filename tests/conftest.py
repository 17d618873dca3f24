"""Shared test setup for mega-plugin.

- ``MEGA_PLUGIN_ENV``: ``"hf"`` or ``"fairseq2"`` when run by ``scripts/test.sh``, ``None``
  when pytest is run by hand.
- Every test starts from ``torch.manual_seed(0)`` (thread settings are left alone).
- The markers declared in pyproject.toml skip by themselves when their ecosystem is
  missing: ``@pytest.mark.hf`` (transformers), ``@pytest.mark.fairseq2`` (fairseq2),
  ``@pytest.mark.reference`` (the transformers 4.57 deprecated MEGA, the parity oracle).
- ``requires_transformers_5()`` / ``requires_reference()`` return ``skipif`` markers.
  Import them with ``from mega_testing import requires_reference`` (this module is
  registered under that name too, so the import keeps working when a test folder has
  its own conftest.py, which shadows the plain name ``conftest``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Final

import pytest

MEGA_PLUGIN_ENV: Final[str | None] = os.environ.get("MEGA_PLUGIN_ENV") or None

REFERENCE_MODULE: Final = "transformers.models.deprecated.mega"


def installed_version(distribution: str) -> str | None:
    """Version of an installed distribution, without importing it; None if absent."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def module_available(name: str) -> bool:
    """True if ``name`` could be imported; imports at most its parent packages."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


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


sys.modules.setdefault("mega_testing", sys.modules[__name__])

_MARKER_CHECKS: Final = {
    # By distribution, not find_spec: the test folder tests/fairseq2 is importable as "fairseq2".
    "hf": (lambda: installed_version("transformers") is not None, "transformers is not installed"),
    "fairseq2": (lambda: installed_version("fairseq2") is not None, "fairseq2 is not installed"),
    "reference": (reference_available, f"{REFERENCE_MODULE} is not importable"),
}


def pytest_report_header(config: pytest.Config) -> str:
    found = [
        f"{name} {installed_version(name)}"
        for name in ("torch", "transformers", "fairseq2")
        if installed_version(name)
    ]
    return f"mega-plugin env: {MEGA_PLUGIN_ENV or 'unset'} ({', '.join(found)})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    verdicts: dict[str, bool] = {}
    for item in items:
        for marker, (check, reason) in _MARKER_CHECKS.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in verdicts:
                verdicts[marker] = check()
            if not verdicts[marker]:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    import torch

    torch.manual_seed(0)
