"""Kernels are chosen once per distinct call; a guard is the only check left per call."""

from __future__ import annotations

from typing import Iterator

import pytest

from _support.calls import attention_call
from mega_plugin.core.ops import (
    SUPPORTED,
    AttentionCall,
    KernelError,
    KernelSpec,
    Support,
    declined,
    reference_attention,
    register_kernel,
    select,
    unregister_kernel,
)


def _call(query_length: int = 8) -> AttentionCall:
    return attention_call(query_length=query_length, key_length=query_length)


class Counting:
    """A kernel whose checks count how often they are asked; the guard says what ``allow`` says."""

    def __init__(self) -> None:
        self.supports_asked = 0
        self.guard_asked = 0
        self.allow = True

    def supports(self, call: AttentionCall) -> Support:
        self.supports_asked += 1
        return SUPPORTED

    def guard(self) -> Support:
        self.guard_asked += 1
        return SUPPORTED if self.allow else declined("not now")


@pytest.fixture
def counting() -> Iterator[Counting]:
    checks = Counting()
    register_kernel(
        KernelSpec(
            name="test_counting",
            op="attention",
            fn=reference_attention,
            priority=100,
            supports=checks.supports,
            guard=checks.guard,
        )
    )
    yield checks
    unregister_kernel("attention", "test_counting")


def test_supports_is_asked_once_per_distinct_call(counting: Counting) -> None:
    for _ in range(5):
        assert select("attention", "auto", _call()).name == "test_counting"
    assert counting.supports_asked == 1
    select("attention", "auto", _call(query_length=16))
    assert counting.supports_asked == 2  # another call, asked once more


def test_a_registry_change_forgets_the_choices(counting: Counting) -> None:
    select("attention", "auto", _call())
    register_kernel(KernelSpec(name="test_other", op="attention", fn=reference_attention, priority=-5))
    try:
        select("attention", "auto", _call())
        assert counting.supports_asked == 2
    finally:
        unregister_kernel("attention", "test_other")


def test_the_guard_is_asked_every_call_and_auto_falls_back_when_it_declines(counting: Counting) -> None:
    assert select("attention", "auto", _call()).name == "test_counting"
    counting.allow = False
    fallback = select("attention", "auto", _call())
    assert fallback.name != "test_counting"
    counting.allow = True
    assert select("attention", "auto", _call()).name == "test_counting"
    assert counting.guard_asked == 3 and counting.supports_asked == 1


def test_a_named_kernel_whose_guard_declines_raises_with_the_reason(counting: Counting) -> None:
    counting.allow = False
    with pytest.raises(KernelError, match=r"attention kernel 'test_counting' cannot serve this call now: not now"):
        select("attention", "test_counting", _call())


def test_plugin_style_answers_are_accepted(counting: Counting) -> None:
    register_kernel(
        KernelSpec(
            name="test_says_no",
            op="attention",
            fn=reference_attention,
            priority=200,
            supports=lambda call: "declines everything",  # a reason string, as plugins answered before
        )
    )
    try:
        assert select("attention", "auto", _call()).name == "test_counting"
        with pytest.raises(KernelError, match="declines everything"):
            select("attention", "test_says_no", _call())
    finally:
        unregister_kernel("attention", "test_says_no")
