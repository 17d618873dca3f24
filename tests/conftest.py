"""Shared test setup for mega-plugin.

Helpers live in the package ``tests/_support`` (``pyproject.toml`` puts ``tests/`` on
``sys.path``): import them as ``from _support.<module> import ...`` from any folder.

- Every test starts from ``torch.manual_seed(0)`` and runs with one intra-op thread
  (:mod:`_support.threads`; the previous thread setting is restored afterwards).
- The markers declared in pyproject.toml skip by themselves when their ecosystem is
  missing: ``@pytest.mark.hf`` (transformers), ``@pytest.mark.fairseq2`` (fairseq2),
  ``@pytest.mark.reference`` (the transformers 4.57 deprecated MEGA, the parity oracle).
- ``requires_transformers_5()`` / ``requires_reference()`` (``from _support.environment import ...``)
  return ``skipif`` markers.
"""

from __future__ import annotations

import pytest

from _support.environment import MARKER_CHECKS, MEGA_PLUGIN_ENV, ecosystem_versions

pytest_plugins = ("_support.threads",)


def pytest_report_header(config: pytest.Config) -> str:
    return f"mega-plugin env: {MEGA_PLUGIN_ENV or 'unset'} ({', '.join(ecosystem_versions())})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    verdicts: dict[str, bool] = {}
    for item in items:
        for marker, (check, reason) in MARKER_CHECKS.items():
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
