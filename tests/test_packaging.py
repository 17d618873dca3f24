"""The installed distribution's metadata: name, console script, extras, entry points."""

from __future__ import annotations

import os
import shutil
import sys
from importlib.metadata import Distribution, EntryPoint, distribution
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def dist() -> Distribution:
    return distribution("mega-plugin")


def entry_points_in(dist: Distribution, group: str) -> list[EntryPoint]:
    return [ep for ep in dist.entry_points if ep.group == group]


def test_name(dist: Distribution) -> None:
    assert dist.metadata["Name"] == "mega-plugin"


def test_console_script(dist: Distribution) -> None:
    scripts = {ep.name: ep.value for ep in entry_points_in(dist, "console_scripts")}
    assert scripts.get("mega-plugin") == "mega_plugin.cli:main", scripts


def test_console_script_is_installed_next_to_the_interpreter() -> None:
    bin_dir = Path(sys.executable).parent
    assert shutil.which("mega-plugin", path=str(bin_dir)), f"no mega-plugin in {bin_dir}"


def test_extras(dist: Distribution) -> None:
    extras = set(dist.metadata.get_all("Provides-Extra") or [])
    assert {"hf", "fairseq2", "dev"} <= extras, extras


@pytest.mark.parametrize("group", ["fairseq2.extension", "mega_plugin"])
def test_entry_point_group(dist: Distribution, group: str) -> None:
    assert entry_points_in(dist, group), f"no entry point in group {group!r}"


@pytest.mark.skipif(not os.environ.get("MEGA_PLUGIN_ENV"), reason="only in the venvs of scripts/test.sh")
def test_installed_from_this_checkout() -> None:
    """The editable install points at this checkout, not at a copy elsewhere."""
    import mega_plugin.cli

    checkout = Path(__file__).resolve().parents[1]
    module = Path(mega_plugin.cli.__file__).resolve()
    assert os.path.commonpath([checkout, module]) == str(checkout), (module, checkout)
