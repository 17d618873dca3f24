"""Broken plugins are reported (log + list_plugins) and skipped; strict and block switches work."""

from __future__ import annotations

import dataclasses
import logging
import sys
from types import ModuleType
from typing import Any

import pytest

from _support.calls import ema_call
from _support.plugins import fake_entry_points, forwarding_ema, kernel_plugin
from mega_plugin.core.ops import KernelError, is_registered, reference_ema, select
from mega_plugin.registry import PluginError, hookimpl
from mega_plugin.registry.records import BLOCKED, FAILED, LOADED

BROKEN = "mega-plugin-broken"
EXPECTED_ERRORS = {
    "import_error": "ModuleNotFoundError: No module named 'mega_plugin_broken_missing_dependency'",
    "import_after_register": "ModuleNotFoundError: No module named 'mega_plugin_broken_missing_dependency'",
    "raises": "RuntimeError: this plugin fails halfway through registering",
    "duplicate": "PluginError: preset 'tiny' is already registered by mega-plugin",
    "bad_signature": "KernelError: kernel ema/bad_signature: cannot be called as fn(x, coefficients, initial_state, "
    "options): too many positional arguments",
    "unknown_hook": "PluginError: implements unknown hook 'mega_plugin_register_kernel'",
}


def _records(registry: ModuleType) -> dict[str, object]:
    return {p.name: p for p in registry.list_plugins() if p.distribution == BROKEN}


def test_each_broken_plugin_is_reported_with_distribution_entry_point_and_error(
    with_test_plugins: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mega_plugin.registry"):
        records = _records(with_test_plugins)
    assert set(records) == set(EXPECTED_ERRORS)
    for name, expected in EXPECTED_ERRORS.items():
        record = records[name]
        assert record.status == FAILED
        assert record.entry_point == f"mega_plugin_broken.{name}"
        assert record.version == "0.0.1"
        assert record.error.startswith(expected), record.error
        assert record.registered == ()
        assert any(
            f"plugin {name!r} from {BROKEN} 0.0.1 (mega_plugin_broken.{name}) failed and was skipped" in message
            for message in caplog.messages
        )


def test_everything_else_keeps_working(with_test_plugins: ModuleType) -> None:
    statuses = {(p.distribution, p.name): p.status for p in with_test_plugins.list_plugins()}
    assert statuses[("mega-plugin", "builtin")] == LOADED
    assert statuses[("mega-plugin-example", "example")] == LOADED
    assert with_test_plugins.get_preset("tiny").hidden_size == 32  # the built-in one, not the duplicate
    assert with_test_plugins.preset_record("tiny").source == "mega-plugin"
    assert with_test_plugins.get_preset("example_small").ema_kernel == "example_scan"
    assert is_registered("ema", "example_scan")


def test_a_plugin_that_fails_halfway_leaves_nothing_behind(with_test_plugins: ModuleType) -> None:
    with_test_plugins.load_plugins()
    assert not is_registered("ema", "broken_partial")  # registered in its kernels hook, then its presets hook raised
    assert "broken_partial" not in [p.name for p in with_test_plugins.list_presets()]
    assert not is_registered("ema", "bad_signature")


def test_strict_mode_raises_naming_the_plugin(with_test_plugins: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_STRICT", "1")
    with pytest.raises(PluginError, match=r"plugin '(bad_signature|duplicate|import_after_register|import_error|raises|unknown_hook)' from mega-plugin-broken"):
        with_test_plugins.list_presets()
    assert not with_test_plugins.is_loaded()
    assert not is_registered("ema", "example_scan")  # rolled back: nothing half-loaded
    with pytest.raises(PluginError):  # and it keeps failing until fixed
        with_test_plugins.load_plugins()


def test_strict_mode_with_the_broken_package_blocked_loads(
    with_test_plugins: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_STRICT", "1")
    monkeypatch.setenv("MEGA_PLUGIN_BLOCK", BROKEN)
    assert with_test_plugins.get_preset("example_small")


def test_block_by_entry_point_name_skips_without_importing(
    with_test_plugins: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "mega_plugin_broken.raises", raising=False)
    monkeypatch.setenv("MEGA_PLUGIN_BLOCK", "raises, import_error")
    records = _records(with_test_plugins)
    assert records["raises"].status == BLOCKED and records["import_error"].status == BLOCKED
    assert records["raises"].error == "named in MEGA_PLUGIN_BLOCK"
    assert records["duplicate"].status == FAILED
    assert "mega_plugin_broken.raises" not in sys.modules


def test_block_by_distribution_name_in_any_spelling(with_test_plugins: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_BLOCK", "Mega_Plugin.Broken")
    assert {r.status for r in _records(with_test_plugins).values()} == {BLOCKED}


def test_the_builtin_plugin_cannot_be_blocked(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_BLOCK", "builtin")
    with caplog.at_level(logging.WARNING, logger="mega_plugin.registry"):
        assert fresh_registry.list_plugins()[0].status == LOADED
    assert "the built-in plugin cannot be blocked" in caplog.text


def _extra_required(x: object, coefficients: object, extra: object, **options: object) -> None:
    """Needs a third positional argument the ema op never passes."""


def _positional_only(x, coefficients, initial_state, options, extra, /):  # noqa: ANN001, ANN202
    """Takes the op's arguments positionally only, and needs one more the op never passes."""


@pytest.mark.parametrize(
    "name, plugin, expected",
    [
        ("extra_required", kernel_plugin("ema", "extra_required", _extra_required),
         "cannot be called as fn(x, coefficients, initial_state, options)"),
        ("positional_only", kernel_plugin("ema", "positional_only", _positional_only),
         "missing a required argument: 'extra'"),
        ("takes_reference", kernel_plugin("ema", "reference", forwarding_ema),
         "kernel ema/reference is already registered by mega-plugin"),
        ("same_function", kernel_plugin("ema", "reference", reference_ema, priority=50),
         "kernel ema/reference is already registered by mega-plugin"),
    ],
    ids=["extra-required-parameter", "keywords-positional-only", "duplicate-kernel-name", "duplicate-name-same-function"],
)
def test_kernels_the_core_could_not_call_or_names_already_taken_fail_the_plugin(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch, name: str, plugin: object, expected: str
) -> None:
    fake_entry_points(monkeypatch, (name, plugin))
    record = {p.name: p for p in fresh_registry.list_plugins()}[name]
    assert record.status == FAILED and expected in record.error, record.error
    assert (record.distribution, record.entry_point) == (f"fake-{name}", f"fake:{name}")
    specs = {spec.name: spec for spec in fresh_registry.list_kernels("ema")}
    assert name not in specs and specs["reference"].fn is reference_ema
    assert specs["reference"].source == "mega-plugin" and specs["reference"].priority == 0


class RaisingChecksPlugin:
    """A kernel whose ``supports`` breaks on every call and one whose ``is_available`` does."""

    @hookimpl
    def mega_plugin_register_kernels(self, registry: Any) -> None:
        registry.register("ema", "bad_supports", forwarding_ema, priority=100, supports=lambda call: call["nope"])
        registry.register("ema", "bad_available", forwarding_ema, priority=99, is_available=lambda: 1 / 0)


CAUSAL_CALL = ema_call(length=8)


def test_kernel_checks_that_raise_decline_the_call_instead_of_breaking_models(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points(monkeypatch, ("raising_checks", RaisingChecksPlugin()))
    assert [s.name for s in fresh_registry.list_kernels("ema")][:2] == ["bad_supports", "bad_available"]
    assert select("ema", "auto", CAUSAL_CALL).source == "mega-plugin"  # skipped, not crashed
    with pytest.raises(KernelError, match=r"kernel ema/bad_supports of fake-raising_checks: supports\(call\) raised KeyError"):
        select("ema", "bad_supports", CAUSAL_CALL)
    with pytest.raises(KernelError, match=r"is_available\(\) raised ZeroDivisionError"):
        select("ema", "bad_available", CAUSAL_CALL)
    monkeypatch.setenv("MEGA_PLUGIN_STRICT", "1")  # plugin authors see the real exception
    with pytest.raises(KeyError, match="nope"):
        # another call: the choice for CAUSAL_CALL is remembered, its checks are not asked again
        select("ema", "auto", dataclasses.replace(CAUSAL_CALL, length=9))
