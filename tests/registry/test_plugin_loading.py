"""Discovery is lazy, idempotent, re-entrant, installed into the core registry, and resettable."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import pytest

from _support.plugins import fake_entry_points

from mega_plugin.core.ops import is_registered, kernels
from mega_plugin.core.ops import registry as core_registry
from mega_plugin.registry import hookimpl
from mega_plugin.registry.records import BLOCKED, DISABLED, LOADED


def _run(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_does_not_load_plugins_but_the_first_kernel_or_preset_lookup_does() -> None:
    out = _run(
        "import mega_plugin.registry as r\n"
        "from mega_plugin.core.ops import kernels\n"
        "print(r.is_loaded())\n"
        "kernels('ema')\n"  # the core registry runs the discovery installed by mega_plugin.registry
        "print(r.is_loaded())\n"
        "r.reset()\n"
        "r.list_presets()\n"
        "print(r.is_loaded())\n"
    )
    assert out.split() == ["False", "True", "True"]


def test_install_is_idempotent(fresh_registry: ModuleType) -> None:
    fresh_registry.install()
    fresh_registry.install()
    assert core_registry._discovery.count(fresh_registry.load_plugins) == 1


def test_loading_is_idempotent(example_plugin: ModuleType, with_test_plugins: ModuleType) -> None:
    before = dict(example_plugin.CALLS)
    with_test_plugins.load_plugins()
    with_test_plugins.list_presets()
    kernels("ema")
    assert example_plugin.CALLS == before
    with_test_plugins.reset()
    with_test_plugins.list_presets()
    assert example_plugin.CALLS == {hook: count + 1 for hook, count in before.items()}


def test_builtin_first_then_installed_plugins_with_distribution_and_version(example_plugin: ModuleType) -> None:
    import mega_plugin.registry as registry

    records = {(p.distribution, p.name): p for p in registry.list_plugins()}
    assert registry.list_plugins()[0].name == "builtin"
    builtin = records[("mega-plugin", "builtin")]
    assert builtin.status == LOADED and builtin.entry_point == "mega_plugin.registry.builtin"
    example = records[("mega-plugin-example", "example")]
    assert (example.status, example.version, example.entry_point, example.error) == (
        LOADED, "0.1.0", "mega_plugin_example", None
    )
    assert "kernel ema/example_scan" in example.registered and "preset example_small" in example.registered
    assert records[("mega-plugin-broken", "raises")].status == BLOCKED


def test_reset_removes_plugin_kernels_from_the_core_registry(example_plugin: ModuleType) -> None:
    import mega_plugin.registry as registry

    assert is_registered("ema", "example_scan")
    registry.reset()
    assert not is_registered("ema", "example_scan")
    assert not registry.is_loaded()
    assert "example_scan" in [spec.name for spec in kernels("ema")]  # the next lookup reloads


def test_disable_autoload_loads_only_the_builtin_plugin(with_test_plugins: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_DISABLE_AUTOLOAD", "1")
    statuses = {p.name: p.status for p in with_test_plugins.list_plugins()}
    assert statuses["builtin"] == LOADED
    assert statuses["example"] == DISABLED and statuses["raises"] == DISABLED
    assert "example_small" not in [p.name for p in with_test_plugins.list_presets()]
    assert not is_registered("ema", "example_scan")


class ReentrantPlugin:
    """An in-process plugin whose hooks look things up while plugins are loading."""

    seen: list[str] = []

    @hookimpl
    def mega_plugin_register_presets(self, registry: object) -> None:
        import mega_plugin.registry as r

        self.seen.append(",".join(spec.name for spec in r.list_kernels("ema")))
        self.seen.append(str(r.is_loaded()))


def test_hooks_may_look_things_up_while_loading(fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    ReentrantPlugin.seen = []
    fake_entry_points(monkeypatch, ("reentrant", ReentrantPlugin()))
    plugins = {p.name: p for p in fresh_registry.list_plugins()}
    assert plugins["reentrant"].status == LOADED
    names, loaded = ReentrantPlugin.seen
    assert "reference" in names.split(",") and loaded == "False"  # built-ins visible; no recursion, no deadlock


def test_trace_prints_each_plugin_to_stderr(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_TRACE", "1")
    fresh_registry.load_plugins()
    err = capsys.readouterr().err
    assert "mega_plugin: loaded mega-plugin/builtin (mega_plugin.registry.builtin) in" in err
    assert "preset tiny" in err
