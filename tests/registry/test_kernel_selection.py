"""Kernel choice without touching model code: config name, environment override, ``auto``."""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any, Final

import pytest
from registry_helpers import fake_entry_points

from mega_plugin.core.config import MegaCoreConfig
from mega_plugin.core.kernels import KernelError, KernelSpec, reference_attention, reference_ema, resolve_kernel
from mega_plugin.core.kernels import registry as core_registry
from mega_plugin.registry import hookimpl

CAUSAL: Final[dict[str, Any]] = {"bidirectional": False, "truncation": None, "length": 64, "has_state": False}
BIDIRECTIONAL: Final = {**CAUSAL, "bidirectional": True}
SOFTMAX: Final[dict[str, Any]] = {
    "activation": "softmax", "causal": True, "query_length": 8, "key_length": 8, "num_chunks": 1,
    "need_weights": False, "dropout_p": 0.0,
}
LAPLACE: Final = {**SOFTMAX, "activation": "laplace"}


def test_config_defaults_to_auto() -> None:
    config = MegaCoreConfig()
    assert (config.ema_kernel, config.attention_kernel) == ("auto", "auto")


def test_selection_by_config_name(example_plugin: ModuleType) -> None:
    import mega_plugin.registry as registry

    config = registry.get_preset("example_small")
    assert resolve_kernel("ema", config.ema_kernel, CAUSAL).fn is example_plugin.block_scan_ema
    assert resolve_kernel("attention", config.attention_kernel, SOFTMAX).fn is example_plugin.sdpa_attention
    forced = dataclasses.replace(config, ema_kernel="reference")
    assert resolve_kernel("ema", forced.ema_kernel, CAUSAL).name == "reference"


def test_a_named_kernel_that_declines_raises_with_its_reason(example_plugin: ModuleType) -> None:
    with pytest.raises(KernelError, match="bidirectional EMA is not implemented by example_scan"):
        resolve_kernel("ema", "example_scan", BIDIRECTIONAL)
    with pytest.raises(KernelError, match="example_sdpa serves softmax only, not 'laplace'"):
        resolve_kernel("attention", "example_sdpa", LAPLACE)


def test_environment_overrides_the_config(example_plugin: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_EMA", "reference")
    assert resolve_kernel("ema", "example_scan", CAUSAL).name == "reference"
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_ATTENTION", "example_sdpa")
    assert resolve_kernel("attention", "auto", SOFTMAX).name == "example_sdpa"
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_ATTENTION", "reference")
    assert resolve_kernel("attention", "example_sdpa", SOFTMAX).name == "reference"


def _builtin(op: str, call: dict[str, Any]) -> str:
    """Source of the kernel ``auto`` picks for ``call`` (the plugin's kernels must not be it)."""
    spec = resolve_kernel(op, "auto", call)
    return spec.source


def test_auto_prefers_the_plugin_kernel_and_skips_it_when_it_declines(example_plugin: ModuleType) -> None:
    assert resolve_kernel("ema", "auto", CAUSAL).name == "example_scan"
    assert resolve_kernel("attention", "auto", SOFTMAX).name == "example_sdpa"
    declined = [
        ("ema", BIDIRECTIONAL), ("ema", {**CAUSAL, "truncation": 16}),
        ("attention", LAPLACE), ("attention", {**SOFTMAX, "need_weights": True}),
    ]
    for op, call in declined:  # a built-in kernel serves what the plugin declines
        assert _builtin(op, call) == "mega-plugin", (op, call)


class DecliningPlugin:
    """Registers the highest-priority kernels of both ops, which decline every call."""

    @hookimpl
    def mega_plugin_register_kernels(self, registry: Any) -> None:
        registry.register("ema", "never_ema", _always_ema, priority=1000, supports=lambda call: "declines everything")
        registry.register(
            "attention", "never_attention", reference_attention, priority=1000, supports=lambda call: "declines everything"
        )


def test_auto_falls_back_to_the_reference_kernel_when_every_other_kernel_declines(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points(monkeypatch, ("declining", DecliningPlugin()))
    originals: list[KernelSpec] = []
    try:
        for op in ("ema", "attention"):
            assert fresh_registry.list_kernels(op)[0].name == f"never_{op}"
            for spec in fresh_registry.list_kernels(op):  # make every other built-in decline too
                if spec.name != "reference" and spec.source == "mega-plugin":
                    originals.append(spec)
                    declining = dataclasses.replace(spec, supports=lambda call: "declines in this test")
                    core_registry.register_kernel(declining, replace=True)
        assert resolve_kernel("ema", "auto", CAUSAL).name == "reference"
        assert resolve_kernel("attention", "auto", SOFTMAX).name == "reference"
        with pytest.raises(KernelError, match="declines everything"):
            resolve_kernel("ema", "never_ema", CAUSAL)
    finally:  # through the registry, so its lookups see the built-ins again
        for spec in originals:
            core_registry.register_kernel(spec, replace=True)


def test_unknown_name_lists_the_registered_kernels(example_plugin: ModuleType) -> None:
    with pytest.raises(KernelError, match=r"ema_kernel='missing' is not registered; allowed values: auto, .*example_scan"):
        resolve_kernel("ema", "missing", CAUSAL)


def test_without_the_plugin_its_kernels_are_unknown(fresh_registry: ModuleType) -> None:
    assert resolve_kernel("ema", "auto", CAUSAL).source == "mega-plugin"
    with pytest.raises(KernelError, match="not registered"):
        resolve_kernel("ema", "example_scan", CAUSAL)


def _always_ema(x: Any, coefficients: Any, **options: Any) -> Any:
    return reference_ema(x, coefficients, **options)


class UnavailablePlugin:
    """Registers the best EMA kernel, but one whose hardware is missing."""

    @hookimpl
    def mega_plugin_register_kernels(self, registry: Any) -> None:
        registry.register("ema", "needs_gpu", _always_ema, priority=100, is_available=lambda: "no GPU here")


def test_auto_skips_an_unavailable_kernel_and_naming_it_says_why(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points(monkeypatch, ("unavailable", UnavailablePlugin()))
    assert fresh_registry.list_kernels("ema")[0].name == "needs_gpu"
    assert resolve_kernel("ema", "auto", BIDIRECTIONAL).source == "mega-plugin"  # a built-in, not needs_gpu
    with pytest.raises(KernelError, match="ema kernel 'needs_gpu' cannot serve this call: no GPU here"):
        resolve_kernel("ema", "needs_gpu", BIDIRECTIONAL)
