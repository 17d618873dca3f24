"""A plugin that fails while loading leaves nothing registered, wherever it put it: staged through
the hook registries, or straight into the kernel and backend registries (at import, or from a
hook). One warning names the plugin, the error and what was rolled back; plugins loaded before it
keep everything."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Final

import pytest

from _support.calls import ema_call
from _support.plugins import fake_imports, forwarding_ema
from mega_plugin.backends import BackendSpec, register_backend
from mega_plugin.backends.registry import lookup
from mega_plugin.core.ops import KernelSpec, is_registered, register_kernel, registered_kernels, select, unregister_kernel
from mega_plugin.core.presets import tiny
from mega_plugin.registry import PluginError, hookimpl
from mega_plugin.registry.records import FAILED, LOADED

BROKEN: Final = "mega-plugin-broken"


def _no_change(model: Any) -> int:
    return 0


class GoodPlugin:
    """Loaded first: a kernel and a preset that must survive the failures after it."""

    @hookimpl
    def mega_plugin_register_kernels(self, registry: Any) -> None:
        registry.register("ema", "good_kernel", forwarding_ema, priority=40)

    @hookimpl
    def mega_plugin_register_presets(self, registry: Any) -> None:
        registry.register("good_preset", tiny)


class HalfwayPlugin:
    """Registers two kernels (one through its registry, one straight into the core, as a kernel
    library that registers itself would), a backend and a preset, then raises."""

    @hookimpl
    def mega_plugin_register_kernels(self, registry: Any) -> None:
        registry.register("ema", "halfway_staged", forwarding_ema, priority=60)
        register_kernel(KernelSpec(name="halfway_direct", op="ema", fn=forwarding_ema, priority=60, source="fake-halfway"))
        register_backend(BackendSpec(name="halfway_backend", accelerate=_no_change, restore=_no_change))

    @hookimpl
    def mega_plugin_register_presets(self, registry: Any) -> None:
        registry.register("halfway_preset", tiny)
        raise RuntimeError("halfway through")


def _messages(caplog: pytest.LogCaptureFixture, plugin: str) -> list[str]:
    return [m for m in caplog.messages if f"plugin {plugin!r} from fake-{plugin}" in m]


def test_a_plugin_whose_hook_raises_loses_every_registration_and_earlier_plugins_keep_theirs(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_imports(monkeypatch, ("good", GoodPlugin), ("halfway", HalfwayPlugin))
    with caplog.at_level(logging.WARNING, logger="mega_plugin.registry"):
        statuses = {p.name: p for p in fresh_registry.list_plugins()}
    assert statuses["good"].status == LOADED and statuses["halfway"].status == FAILED
    assert statuses["halfway"].error == "RuntimeError: halfway through"
    assert not is_registered("ema", "halfway_staged") and not is_registered("ema", "halfway_direct")
    assert lookup("halfway_backend") is None
    assert "halfway_preset" not in [p.name for p in fresh_registry.list_presets()]
    [message] = _messages(caplog, "halfway")
    assert "failed and was skipped: RuntimeError: halfway through" in message
    rolled_back = message.split("its registrations were rolled back: ")[1].split(", ")
    assert set(rolled_back) == {
        "kernel ema/halfway_staged", "kernel ema/halfway_direct", "backend halfway_backend", "preset halfway_preset",
    }  # fmt: skip
    assert select("ema", "auto", ema_call()).name == "good_kernel"  # the earlier plugin is untouched
    assert fresh_registry.get_preset("good_preset").hidden_size == tiny().hidden_size
    assert not _messages(caplog, "good")


def test_an_import_that_fails_after_changing_the_registries_puts_them_back(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kept: dict[str, Any] = {}

    def failing_import() -> object:
        kept["good"] = registered_kernels()[("ema", "good_kernel")]
        unregister_kernel("ema", "good_kernel")  # takes an earlier plugin's kernel away ...
        for name in ("early_a", "early_b"):  # ... and adds two of its own
            register_kernel(KernelSpec(name=name, op="ema", fn=forwarding_ema, priority=70, source="fake-failing"))
        raise ImportError("cannot import name 'kernels' from partially initialized module")

    fake_imports(monkeypatch, ("good", GoodPlugin), ("failing", failing_import))
    before = None
    with caplog.at_level(logging.WARNING, logger="mega_plugin.registry"):
        records = {p.name: p for p in fresh_registry.list_plugins()}
        before = registered_kernels()
    assert records["failing"].status == FAILED and records["failing"].registered == ()
    assert not is_registered("ema", "early_a") and not is_registered("ema", "early_b")
    assert before[("ema", "good_kernel")] is kept["good"]  # the very same spec is back
    [message] = _messages(caplog, "failing")
    assert "ImportError: cannot import name 'kernels'" in message
    assert message.endswith(
        "its registrations were rolled back: kernel ema/early_a, kernel ema/early_b, kernel ema/good_kernel"
    ), message


def test_strict_mode_raises_after_rolling_back(fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_STRICT", "1")
    fake_imports(monkeypatch, ("halfway", HalfwayPlugin))
    with pytest.raises(PluginError, match="plugin 'halfway' from fake-halfway .* failed: RuntimeError: halfway through"):
        fresh_registry.load_plugins()
    assert not is_registered("ema", "halfway_direct") and not is_registered("ema", "halfway_staged")
    assert lookup("halfway_backend") is None


def test_an_installed_entry_point_that_registers_then_fails_to_import_leaves_nothing(
    with_test_plugins: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mega_plugin.registry"):
        records = {p.name: p for p in with_test_plugins.list_plugins() if p.distribution == BROKEN}
    assert records["import_after_register"].status == FAILED
    assert not is_registered("ema", "broken_early_a") and not is_registered("ema", "broken_early_b")
    assert lookup("broken_early") is None
    assert any(
        "plugin 'import_after_register' from mega-plugin-broken" in m
        and m.endswith(
            "its registrations were rolled back: kernel ema/broken_early_a, kernel ema/broken_early_b, "
            "backend broken_early"
        )
        for m in caplog.messages
    ), caplog.messages
    assert is_registered("ema", "example_scan")  # the other installed plugin is unaffected
