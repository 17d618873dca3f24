"""Kernel choice without touching model code: config name, environment override, ``auto``."""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any, Final

import pytest

from _support.calls import attention_call, ema_call
from _support.plugins import fake_entry_points, forwarding_ema, unavailable_plugin
from mega_plugin.core.config import MegaCoreConfig
from mega_plugin.core.ops import AttentionCall, EmaCall, KernelError, KernelSpec, reference_attention, select
from mega_plugin.core.ops import registry as core_registry
from mega_plugin.registry import hookimpl

CAUSAL: Final = ema_call()
BIDIRECTIONAL: Final = ema_call(bidirectional=True)
SOFTMAX: Final = attention_call(causal=True)
LAPLACE: Final = attention_call(causal=True, activation="laplace")


def test_config_defaults_to_auto() -> None:
    config = MegaCoreConfig()
    assert (config.ema_kernel, config.attention_kernel) == ("auto", "auto")


def test_selection_by_config_name(example_plugin: ModuleType) -> None:
    import mega_plugin.registry as registry

    config = registry.get_preset("example_small")
    assert select("ema", config.ema_kernel, CAUSAL).fn.__wrapped__ is example_plugin.block_scan_ema
    assert select("attention", config.attention_kernel, SOFTMAX).fn.__wrapped__ is example_plugin.sdpa_attention
    forced = dataclasses.replace(config, ema_kernel="reference")
    assert select("ema", forced.ema_kernel, CAUSAL).name == "reference"


def test_a_named_kernel_that_declines_raises_with_its_reason(example_plugin: ModuleType) -> None:
    with pytest.raises(KernelError, match="bidirectional EMA is not implemented by example_scan"):
        select("ema", "example_scan", BIDIRECTIONAL)
    with pytest.raises(KernelError, match="example_sdpa serves softmax only, not 'laplace'"):
        select("attention", "example_sdpa", LAPLACE)


def test_environment_overrides_the_config(example_plugin: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_EMA", "reference")
    assert select("ema", "example_scan", CAUSAL).name == "reference"
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_ATTENTION", "example_sdpa")
    assert select("attention", "auto", SOFTMAX).name == "example_sdpa"
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_ATTENTION", "reference")
    assert select("attention", "example_sdpa", SOFTMAX).name == "reference"


def _builtin(op: str, call: EmaCall | AttentionCall) -> str:
    """Source of the kernel ``auto`` picks for ``call`` (the plugin's kernels must not be it)."""
    spec = select(op, "auto", call)
    return spec.source


def test_auto_prefers_the_plugin_kernel_and_skips_it_when_it_declines(example_plugin: ModuleType) -> None:
    assert select("ema", "auto", CAUSAL).name == "example_scan"
    assert select("attention", "auto", SOFTMAX).name == "example_sdpa"
    declined = [
        ("ema", BIDIRECTIONAL), ("ema", dataclasses.replace(CAUSAL, truncation=16)),
        ("attention", LAPLACE), ("attention", dataclasses.replace(SOFTMAX, need_weights=True)),
    ]
    for op, call in declined:  # a built-in kernel serves what the plugin declines
        assert _builtin(op, call) == "mega-plugin", (op, call)


class DecliningPlugin:
    """Registers the highest-priority kernels of both ops, which decline every call."""

    @hookimpl
    def mega_plugin_register_kernels(self, registry: Any) -> None:
        registry.register("ema", "never_ema", forwarding_ema, priority=1000, supports=lambda call: "declines everything")
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
        assert select("ema", "auto", CAUSAL).name == "reference"
        assert select("attention", "auto", SOFTMAX).name == "reference"
        with pytest.raises(KernelError, match="declines everything"):
            select("ema", "never_ema", CAUSAL)
    finally:  # through the registry, so its lookups see the built-ins again
        for spec in originals:
            core_registry.register_kernel(spec, replace=True)


def test_unknown_name_lists_the_registered_kernels(example_plugin: ModuleType) -> None:
    with pytest.raises(KernelError, match=r"ema_kernel='missing' is not registered; allowed values: auto, .*example_scan"):
        select("ema", "missing", CAUSAL)


def test_without_the_plugin_its_kernels_are_unknown(fresh_registry: ModuleType) -> None:
    assert select("ema", "auto", CAUSAL).source == "mega-plugin"
    with pytest.raises(KernelError, match="not registered"):
        select("ema", "example_scan", CAUSAL)


def test_auto_skips_an_unavailable_kernel_and_naming_it_says_why(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points(monkeypatch, ("unavailable", unavailable_plugin()))
    assert fresh_registry.list_kernels("ema")[0].name == "needs_gpu"
    assert select("ema", "auto", BIDIRECTIONAL).source == "mega-plugin"  # a built-in, not needs_gpu
    with pytest.raises(KernelError, match="ema kernel 'needs_gpu' cannot serve this call: no GPU here"):
        select("ema", "needs_gpu", BIDIRECTIONAL)
