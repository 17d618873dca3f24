"""Fixtures for the plugin tests, also meant for model tests that need a plugin kernel.

* ``installed_test_plugins`` (session): builds and pip-installs the two test plugin packages
  in ``tests/registry/plugins/`` (``mega-plugin-example``, ``mega-plugin-broken``) with the
  current interpreter (``pip install --no-deps``). By default they go to a private
  ``--target`` directory that only the tests using them put on ``sys.path`` (other tests in
  the session, and other processes sharing the environment, never see them);
  ``MEGA_PLUGIN_TEST_INSTALL=site`` installs them into the environment itself and uninstalls
  them at the end of the session.

  Building a setuptools project needs ``bdist_wheel``: setuptools >= 70.1 has it, older
  setuptools needs the ``wheel`` package. A venv made by ``python -m venv`` on Python 3.11
  holds setuptools 65.5 without ``wheel`` (the fairseq2 venv), so ``--no-build-isolation``
  fails there with "invalid command 'bdist_wheel'". The fixture builds in place only when the
  environment can; otherwise pip builds in isolation, fetching ``setuptools>=68`` from the
  configured package index. If that fails too, the fixture fails with the command to run.
* ``clean_plugin_env``: removes the registry, kernel and backend environment variables.
* ``fresh_registry``: :func:`mega_plugin.registry.reset` before and after the test.
* ``with_test_plugins``: both test packages discoverable, registry reset (broken ones included).
* ``example_plugin``: only the example plugin (broken one blocked), loaded; returns its module.
  Its kernels are ``ema/example_scan`` and ``attention/example_sdpa`` (priority 20, above every built-in kernel), its
  preset ``example_small`` asks for them by name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final, Iterator

import pytest

PLUGINS_DIR: Final = Path(__file__).parent / "plugins"
PLUGIN_PROJECTS: Final = ("mega_plugin_example", "mega_plugin_broken")
EXAMPLE_DISTRIBUTION: Final = "mega-plugin-example"
BROKEN_DISTRIBUTION: Final = "mega-plugin-broken"
INSTALL_MODE_ENV: Final = "MEGA_PLUGIN_TEST_INSTALL"
REGISTRY_ENV: Final = (
    "MEGA_PLUGIN_STRICT",
    "MEGA_PLUGIN_BLOCK",
    "MEGA_PLUGIN_DISABLE_AUTOLOAD",
    "MEGA_PLUGIN_TRACE",
    "MEGA_PLUGIN_KERNEL_EMA",
    "MEGA_PLUGIN_KERNEL_ATTENTION",
    "MEGA_PLUGIN_BACKENDS",
)


@dataclass(frozen=True)
class InstalledPlugins:
    """Where the test plugin packages are installed."""

    target: Path | None
    """The ``pip install --target`` directory, or None when installed into the environment."""

    distributions: tuple[str, ...]
    """The installed distribution names."""

    def subprocess_env(self, **variables: str) -> dict[str, str]:
        """Environment for a child interpreter that sees the plugins (registry variables cleared)."""
        env = {k: v for k, v in os.environ.items() if k not in REGISTRY_ENV}
        if self.target is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.target), env.get("PYTHONPATH")]))
        env.update(variables)
        return env


def _pip(*arguments: str) -> None:
    command = [sys.executable, "-m", "pip", *arguments]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def _release(distribution: str) -> tuple[int, ...] | None:
    """The leading numeric release of an installed distribution, e.g. (65, 5, 0); None if absent."""
    try:
        text = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    numbers = []
    for part in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def can_build_in_place() -> bool:
    """Whether this environment can build the plugins without build isolation.

    The plugins declare ``setuptools>=68``; building a wheel needs ``bdist_wheel``, which
    setuptools ships from 70.1 on and older setuptools takes from the ``wheel`` package.
    """
    setuptools = _release("setuptools")
    if setuptools is None or setuptools < (68,):
        return False
    return setuptools >= (70, 1) or _release("wheel") is not None


def _install(options: tuple[str, ...], sources: list[str]) -> None:
    """``pip install`` the plugin sources, in place when possible, else in an isolated build."""
    in_place = can_build_in_place()
    try:
        _pip(*options, *(("--no-build-isolation",) if in_place else ()), *sources)
    except RuntimeError as error:
        found = importlib.metadata.version("setuptools") if _release("setuptools") else "none"
        how = (
            "in place (--no-build-isolation)"
            if in_place
            else f"in an isolated build env, because this env's setuptools ({found}) cannot build "
            "wheels in place and pip had to fetch setuptools>=68 from the package index"
        )
        pytest.fail(
            f"could not pip-install the test plugin packages {how}.\n"
            f"Fix: give the environment a setuptools that builds wheels:\n"
            f"    {sys.executable} -m pip install 'setuptools>=70.1'\n"
            f"(bootstrap: add that install to scripts/bootstrap_envs.sh for this venv).\n{error}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def installed_test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledPlugins]:
    """Build and install the test plugin packages for real (see the module docstring)."""
    work = tmp_path_factory.mktemp("mega-plugin-test-plugins")
    sources = []
    for project in PLUGIN_PROJECTS:  # build from a copy: no build/ or *.egg-info in the repository
        copy = work / "src" / project
        shutil.copytree(PLUGINS_DIR / project, copy, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        sources.append(str(copy))
    distributions = (EXAMPLE_DISTRIBUTION, BROKEN_DISTRIBUTION)
    options = ("install", "--no-deps", "--disable-pip-version-check", "-q")
    if os.environ.get(INSTALL_MODE_ENV, "target") == "site":
        _install(options, sources)
        importlib.invalidate_caches()
        try:
            yield InstalledPlugins(None, distributions)
        finally:
            _pip("uninstall", "-y", "-q", *distributions)
            importlib.invalidate_caches()
    else:
        target = work / "site"
        _install((*options, "--target", str(target)), sources)
        yield InstalledPlugins(target, distributions)


@pytest.fixture
def clean_plugin_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Unset every environment variable the registry, the kernel dispatch and ``accelerate`` read."""
    for name in REGISTRY_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def fresh_registry(clean_plugin_env: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``mega_plugin.registry``, reset before and after the test."""
    import mega_plugin.registry as registry

    registry.reset()
    yield registry
    registry.reset()


@pytest.fixture
def with_test_plugins(
    installed_test_plugins: InstalledPlugins, fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The registry with both test packages discoverable (not loaded yet)."""
    if installed_test_plugins.target is not None:
        monkeypatch.syspath_prepend(str(installed_test_plugins.target))
    importlib.invalidate_caches()
    fresh_registry.reset()
    yield fresh_registry
    fresh_registry.reset()


@pytest.fixture
def example_plugin(with_test_plugins: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example plugin loaded (the broken package blocked); returns the ``mega_plugin_example`` module."""
    monkeypatch.setenv("MEGA_PLUGIN_BLOCK", BROKEN_DISTRIBUTION)
    with_test_plugins.reset()
    with_test_plugins.load_plugins()
    return importlib.import_module("mega_plugin_example")
