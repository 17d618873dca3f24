"""The typed calls of the ops: frozen, hashable, equal by value, and readable like the old dict calls."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from _support.calls import attention_call, ema_call
from mega_plugin.core.ops import SUPPORTED, AttentionCall, EmaCall, Support, as_support, declined


def test_calls_are_frozen_and_equal_by_value() -> None:
    call = ema_call(length=12)
    assert call == ema_call(length=12) and hash(call) == hash(ema_call(length=12))
    assert call != ema_call(length=13)
    assert len({attention_call(), attention_call(), attention_call(causal=True)}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.length = 3  # type: ignore[misc]


def test_every_field_must_be_given() -> None:
    """A caller must say everything a kernel may decline for: a call that leaves out whether keys are
    masked (which ``sdpa`` must decline) cannot be made."""
    fields = {field.name: getattr(attention_call(), field.name) for field in dataclasses.fields(AttentionCall)}
    del fields["has_key_mask"]
    with pytest.raises(TypeError, match="has_key_mask"):
        AttentionCall(**fields)


def test_calls_read_like_the_old_dict_calls() -> None:
    call = ema_call(length=5, truncation=3)
    assert call["length"] == 5 and call.get("truncation") == 3
    assert call.get("missing") is None and call.get("missing", 7) == 7
    with pytest.raises(KeyError, match="missing"):
        call["missing"]  # noqa: B018
    assert call.keys() == [field.name for field in dataclasses.fields(EmaCall)]
    assert attention_call(device=torch.device("meta"))["device"] == torch.device("meta")


def test_support_answers() -> None:
    assert SUPPORTED.ok and SUPPORTED == Support() and SUPPORTED.reason is None
    no = declined("because")
    assert not no.ok and no.reason == "because"
    assert as_support(None) == SUPPORTED and as_support("why") == declined("why") and as_support(no) is no
