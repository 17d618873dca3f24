"""The kernel registry of the core: names, signatures, ``auto`` with declines, the environment
override, and the choice remembered per distinct call (forgotten on every registry change)."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import pytest
import torch

from _support.calls import attention_call, ema_call, record_kernel_choices
from _support.configs import tiny_config
from mega_plugin.core import MegaBackbone
from mega_plugin.core.ops import (
    SUPPORTED,
    KernelError,
    KernelSpec,
    declined,
    is_registered,
    kernels,
    reference_attention,
    reference_ema,
    register_kernel,
    registry_version,
    select,
    unregister_kernel,
)


def token_ids(batch: int, length: int) -> torch.Tensor:
    return torch.randint(3, 50, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def cleanup_kernels() -> Iterator[list[tuple[str, str]]]:
    """(op, name) of the kernels a test registers: removed afterwards (and checked gone)."""
    registered: list[tuple[str, str]] = []
    yield registered
    for op, name in registered:
        unregister_kernel(op, name)
        assert not is_registered(op, name)


def test_unknown_kernel_lists_allowed_names() -> None:
    with pytest.raises(KernelError) as error:
        select("ema", "warp_speed", ema_call())
    message = str(error.value)
    assert "warp_speed" in message and "auto" in message and "reference" in message
    with pytest.raises(KernelError, match="ema, attention"):
        select("convolution", "auto", ema_call())


def test_model_with_unknown_kernel_fails_clearly() -> None:
    model = MegaBackbone(tiny_config(attention_kernel="warp_speed")).eval()
    with pytest.raises(KernelError, match="attention_kernel='warp_speed'"):
        model(token_ids(1, 3))


def test_environment_overrides_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_EMA", "reference")
    assert select("ema", "warp_speed", ema_call()).name == "reference"
    model = MegaBackbone(tiny_config(ema_kernel="warp_speed")).eval()
    model(token_ids(1, 3))  # the environment wins over the config
    monkeypatch.setenv("MEGA_PLUGIN_KERNEL_EMA", "missing")
    with pytest.raises(KernelError, match="missing"):
        select("ema", "reference", ema_call())


def test_wrong_signature_is_rejected(cleanup_kernels: list[tuple[str, str]]) -> None:
    def too_few(x):  # noqa: ANN001, ANN202 - deliberately wrong
        return x, None

    def missing_keywords(x, coefficients, *, bidirectional):  # noqa: ANN001, ANN202
        return x, None

    for function in (too_few, missing_keywords):
        cleanup_kernels.append(("ema", function.__name__))
        with pytest.raises(KernelError, match=function.__name__):
            register_kernel(KernelSpec(name=function.__name__, op="ema", fn=function))
        assert not is_registered("ema", function.__name__)
    with pytest.raises(KernelError, match="ema, attention"):
        register_kernel(KernelSpec(name="x", op="scan", fn=too_few))


def test_a_linear_kernel_is_refused_with_where_projections_went(cleanup_kernels: list[tuple[str, str]]) -> None:
    """The ``linear`` op is gone: projections are modules, and faster GEMMs come from backends."""

    def linear(input, weight, bias):  # noqa: ANN001, ANN202 - the old linear kernel signature
        return torch.nn.functional.linear(input, weight, bias)

    cleanup_kernels.append(("linear", "old_linear"))
    with pytest.raises(KernelError, match="op='linear' no longer exists: .*nn.Linear modules.*mega_plugin_register_backends"):
        register_kernel(KernelSpec(name="old_linear", op="linear", fn=linear))
    with pytest.raises(KernelError, match="op='linear' is unknown"):
        select("linear", "auto", ema_call())


def test_registered_kernel_is_dispatched_and_can_decline(
    cleanup_kernels: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def spy(query, key, value, bias, key_mask, options):  # noqa: ANN001, ANN202
        calls.append(query.shape[-2])
        return reference_attention(query, key, value, bias, key_mask, options)

    cleanup_kernels.append(("attention", "spy"))
    register_kernel(
        KernelSpec(
            name="spy",
            op="attention",
            fn=spy,
            priority=10,
            supports=lambda call: SUPPORTED if call.query_length > 1 else declined("single queries are not worth it"),
        )
    )
    assert kernels("attention")[0].name == "spy"
    with pytest.raises(KernelError, match="already registered"):
        register_kernel(KernelSpec(name="spy", op="attention", fn=reference_attention))
    model = MegaBackbone(tiny_config()).eval()
    ids = token_ids(1, 5)
    chosen = record_kernel_choices(monkeypatch)
    with torch.no_grad():
        model(ids)
        assert calls == [5, 5]  # auto picked the spy for both layers
        assert chosen.count("attention/spy") == 2
        calls.clear()
        model(ids[:, :1])
        assert calls == []  # declined: auto fell back to the reference kernel
    with pytest.raises(KernelError, match="single queries"):
        select("attention", "spy", attention_call(query_length=1))


def test_checks_may_answer_like_old_plugins(cleanup_kernels: list[tuple[str, str]]) -> None:
    """``None`` or a reason string (and dict-style reads of the call) still work for plugin checks."""

    def old_style(call: Any) -> str | None:
        return None if call.get("length") <= 4 and call["has_state"] is False else f"length {call['length']}"

    cleanup_kernels.append(("ema", "old_style"))
    register_kernel(KernelSpec(name="old_style", op="ema", fn=reference_ema, priority=1000, supports=old_style))
    assert select("ema", "auto", ema_call(length=4)).name == "old_style"
    assert select("ema", "auto", ema_call(length=5)).name != "old_style"
    with pytest.raises(KernelError, match="length 5"):
        select("ema", "old_style", ema_call(length=5))


# --- the remembered choice ---------------------------------------------------------------------


def test_the_choice_is_made_once_per_distinct_call(cleanup_kernels: list[tuple[str, str]]) -> None:
    asked: list[int] = []

    def counting(call: Any) -> Any:
        asked.append(call.length)
        return SUPPORTED

    cleanup_kernels.append(("ema", "counted"))
    register_kernel(KernelSpec(name="counted", op="ema", fn=reference_ema, priority=1000, supports=counting))
    for _ in range(3):
        assert select("ema", "auto", ema_call(length=7)).name == "counted"
    assert select("ema", "auto", ema_call(length=8)).name == "counted"
    assert asked == [7, 8]  # equal calls are answered from memory


def test_a_guard_is_checked_on_every_call(cleanup_kernels: list[tuple[str, str]]) -> None:
    """``supports`` is asked once per call; ``guard`` every time (for autocast, tracing, ...)."""
    open_ = {"now": True}

    def guard() -> Any:
        return SUPPORTED if open_["now"] else declined("closed for this call")

    cleanup_kernels.append(("ema", "guarded"))
    register_kernel(KernelSpec(name="guarded", op="ema", fn=reference_ema, priority=1000, guard=guard))
    call = ema_call(length=9)
    assert select("ema", "auto", call).name == "guarded"
    open_["now"] = False
    assert select("ema", "auto", call).name != "guarded"  # the next kernel that serves
    with pytest.raises(KernelError, match="cannot serve this call now: closed for this call"):
        select("ema", "guarded", call)
    open_["now"] = True
    assert select("ema", "auto", call).name == "guarded"


def test_every_registry_change_forgets_the_remembered_choices(cleanup_kernels: list[tuple[str, str]]) -> None:
    """Registration, replacement and removal each show in the very next lookup of a remembered call."""
    call = ema_call(length=11)
    before = select("ema", "auto", call)
    version = registry_version()
    cleanup_kernels.append(("ema", "newest"))
    newest = KernelSpec(name="newest", op="ema", fn=reference_ema, priority=1000)
    register_kernel(newest)
    assert registry_version() != version
    assert select("ema", "auto", call).name == "newest" and kernels("ema")[0].name == "newest"
    version = registry_version()
    register_kernel(dataclasses.replace(newest, supports=lambda call: declined("replaced")), replace=True)
    assert registry_version() != version
    assert select("ema", "auto", call) == before
    register_kernel(newest, replace=True)
    assert select("ema", "auto", call).name == "newest"
    version = registry_version()
    unregister_kernel("ema", "newest")
    assert registry_version() != version
    assert select("ema", "auto", call) == before
    assert "newest" not in [spec.name for spec in kernels("ema")]
    assert [spec.name for spec in kernels("ema")][-1] == "reference"


def test_a_preference_tries_each_named_kernel_then_auto(cleanup_kernels: list[tuple[str, str]]) -> None:
    """"picky,auto": the named kernel where it accepts the call (even below auto's priorities),
    auto's choice where it declines; a preference without auto ends at the reference kernel."""
    cleanup_kernels.append(("attention", "picky"))
    register_kernel(
        KernelSpec(
            name="picky",
            op="attention",
            fn=reference_attention,
            priority=-100,  # auto never picks it
            supports=lambda call: SUPPORTED if call.query_length > 1 else declined("single queries"),
        )
    )
    long_call, short_call = attention_call(query_length=4), attention_call(query_length=1)
    assert select("attention", "auto", long_call).name != "picky"
    assert select("attention", "picky,auto", long_call).name == "picky"
    assert select("attention", "picky,auto", short_call).name == select("attention", "auto", short_call).name
    assert select("attention", "picky", long_call).name == "picky"
    assert select("attention", "picky,reference", short_call).name == "reference"
    with pytest.raises(KernelError, match="'warp_speed', which is not registered; allowed values: auto"):
        select("attention", "warp_speed,auto", long_call)
