"""The kernel calling conventions: the options convention, the shim for keyword kernels, removed ops.

A kernel of the earlier keyword convention must still register (with a DeprecationWarning naming
the new convention) and compute exactly what it computed before, called the new way.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import pytest
import torch
from torch import Tensor

from mega_plugin.core.ops import (
    AttentionOptions,
    EmaCoefficients,
    EmaOptions,
    KernelError,
    KernelSpec,
    adapt_kernel,
    reference_attention,
    reference_ema,
    register_kernel,
    select,
    unregister_kernel,
)

from _support.attention import attention_options
from _support.calls import attention_call, ema_call


def keyword_ema(x: Tensor, coefficients: EmaCoefficients, **keywords: Any) -> tuple[Tensor, Tensor | None]:
    """An EMA kernel of the earlier convention (bidirectional, truncation, initial_state and
    return_state as keywords): the reference, called with what it was given."""
    initial_state = keywords.pop("initial_state")
    return reference_ema(x, coefficients, initial_state, EmaOptions(**keywords))


def keyword_attention(
    query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, **keywords: Any
) -> tuple[Tensor, Tensor | None]:
    """An attention kernel of the earlier convention (every option a keyword): the reference."""
    return reference_attention(query, key, value, bias, key_mask, AttentionOptions(**keywords))


@pytest.fixture
def registered() -> Iterator[list[tuple[str, str]]]:
    names: list[tuple[str, str]] = []
    yield names
    for op, name in names:
        unregister_kernel(op, name)


def _coefficients(channels: int, components: int) -> EmaCoefficients:
    generator = torch.Generator().manual_seed(1)
    return EmaCoefficients(
        input_gain=torch.randn(channels, components, generator=generator),
        decay=torch.rand(channels, components, generator=generator) * 0.8 + 0.1,
        output_gain=torch.randn(channels, components, generator=generator),
    )


def test_a_keyword_ema_kernel_registers_with_a_warning_and_computes_the_same(registered: list) -> None:
    spec = KernelSpec(name="test_keyword_ema", op="ema", fn=keyword_ema)
    with pytest.warns(DeprecationWarning, match=r"fn\(x, coefficients, initial_state, options\)"):
        register_kernel(spec)
    registered.append(("ema", "test_keyword_ema"))
    chosen = select("ema", "test_keyword_ema", ema_call(length=9, has_state=True))
    assert chosen.fn.__wrapped__ is keyword_ema  # the registered function, behind the shim

    x = torch.randn(2, 9, 3)
    coefficients = _coefficients(3, 4)
    state = torch.randn(2, 3, 4)
    options = EmaOptions(bidirectional=False, truncation=None, return_state=True)
    got, got_state = chosen.fn(x, coefficients, state, options)
    want, want_state = reference_ema(x, coefficients, state, options)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_state, want_state, rtol=0, atol=0)


@pytest.mark.parametrize("offset", [0, 3])
def test_a_keyword_attention_kernel_receives_every_option(registered: list, offset: int) -> None:
    with pytest.warns(DeprecationWarning):
        register_kernel(KernelSpec(name="test_keyword_attention", op="attention", fn=keyword_attention))
    registered.append(("attention", "test_keyword_attention"))
    call = attention_call(activation="laplace", causal=True, query_length=4, key_length=7, need_weights=True)
    chosen = select("attention", "test_keyword_attention", call)
    query, key, value = torch.randn(2, 1, 4, 8), torch.randn(2, 1, 7, 8), torch.randn(2, 1, 7, 5)
    bias = torch.randn(4, 7)
    options = attention_options(activation="laplace", causal=True, query_offset=offset, need_weights=True)
    got, got_weights = chosen.fn(query, key, value, bias, None, options)
    want, want_weights = reference_attention(query, key, value, bias, None, options)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_weights, want_weights, rtol=0, atol=0)


def test_a_kernel_of_the_current_convention_is_not_wrapped() -> None:
    spec = KernelSpec(name="x", op="attention", fn=reference_attention)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert adapt_kernel(spec) is spec


def test_a_kernel_that_takes_neither_convention_is_refused_naming_the_call() -> None:
    def two_arguments(x: Tensor, coefficients: EmaCoefficients) -> None:
        return None

    with pytest.raises(KernelError, match=r"ema/broken: cannot be called as fn\(x, coefficients, initial_state, options\)"):
        adapt_kernel(KernelSpec(name="broken", op="ema", fn=two_arguments))


def test_the_removed_linear_op_says_where_it_moved() -> None:
    with pytest.raises(KernelError, match=r"op='linear' no longer exists: .*mega_plugin_register_backends"):
        register_kernel(KernelSpec(name="gemm", op="linear", fn=torch.nn.functional.linear))


def test_an_unknown_op_lists_the_allowed_ones() -> None:
    with pytest.raises(KernelError, match=r"op='scan' is unknown; allowed values: ema, attention"):
        register_kernel(KernelSpec(name="x", op="scan", fn=reference_ema))
