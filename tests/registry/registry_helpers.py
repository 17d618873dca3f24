"""Helpers shared by the plugin tests (imported as ``registry_helpers``)."""

from __future__ import annotations

import pytest

import mega_plugin.registry.manager as manager
from mega_plugin.registry.discovery import Candidate


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *plugins: tuple[str, object]) -> None:
    """Make discovery see in-process plugin objects as entry points ``fake-<name>/<name>``."""
    candidates = [
        Candidate(name, f"fake-{name}", "1.0", f"fake:{name}", lambda plugin=plugin: plugin) for name, plugin in plugins
    ]
    monkeypatch.setattr(manager, "entry_point_candidates", lambda: candidates)
