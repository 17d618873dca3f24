"""Relative position biases: the simple table lookup and the rotary bias, from their definitions."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from mega_plugin.core import RotaryRelativePositionalBias, SimpleRelativePositionalBias


def simple_bias(max_positions: int, center: int) -> SimpleRelativePositionalBias:
    module = SimpleRelativePositionalBias(max_positions=max_positions, center=center, init_std=1.0)
    with torch.no_grad():
        module.rel_pos_bias.copy_(torch.randn(2 * max_positions - 1))
    return module


@pytest.mark.parametrize(
    "shape", [(5, 5, 0), (1, 6, 5), (3, 8, 2), (4, 8, 4), (8, 8, 0)], ids=lambda s: f"Lq{s[0]}-Lk{s[1]}-off{s[2]}"
)
@pytest.mark.parametrize("center", [8, 12], ids=["center=chunk8", "center=max12"])
def test_simple_bias_reads_the_lag_entry(center: int, shape: tuple[int, int, int]) -> None:
    query_length, key_length, offset = shape
    module = simple_bias(12, center)
    table = module.rel_pos_bias.detach()
    bias = module(query_length, key_length, offset)
    assert bias.shape == (query_length, key_length)
    for i in range(query_length):
        for j in range(key_length):
            assert bias[i, j] == table[center - 1 + j - (i + offset)]


def test_simple_bias_too_long_names_the_limit() -> None:
    with pytest.raises(ValueError, match="max_positions"):
        simple_bias(6, 6)(7, 7)
    with pytest.raises(ValueError, match="chunk_size"):
        simple_bias(12, 4)(5, 5)
    simple_bias(12, 4)(4, 4)  # exactly the limit is fine


def rotated(vector: torch.Tensor, position: int) -> list[float]:
    """rot(v, p): pairs (v_k, v_{k+Z/2}) as complex numbers turned by p * 10000**(-k/(Z/2))."""
    half = vector.numel() // 2
    values = [float(v) for v in vector]
    turned = [
        complex(values[k], values[k + half]) * cmath.exp(1j * position * 10000.0 ** (-k / half)) for k in range(half)
    ]
    return [z.real for z in turned] + [z.imag for z in turned]


def rotary_bias(dim: int) -> RotaryRelativePositionalBias:
    module = RotaryRelativePositionalBias(dim=dim, init_std=1.0)
    module.reset_parameters()
    return module


@pytest.mark.parametrize("shape", [(6, 6, 0), (1, 9, 8), (3, 10, 4)], ids=lambda s: f"Lq{s[0]}-Lk{s[1]}-off{s[2]}")
def test_rotary_bias_is_dot_of_rotations(shape: tuple[int, int, int]) -> None:
    query_length, key_length, offset = shape
    module = rotary_bias(8)
    alpha, beta = module.alpha.detach()[0], module.b_param.detach()[0]
    bias = module(query_length, key_length, offset)
    assert bias.shape == (query_length, key_length)
    expected = torch.tensor(
        [
            [sum(a * b for a, b in zip(rotated(alpha, i + offset), rotated(beta, j))) for j in range(key_length)]
            for i in range(query_length)
        ]
    )
    torch.testing.assert_close(bias, expected, atol=1e-5, rtol=1e-5)


def test_rotary_bias_depends_only_on_the_lag() -> None:
    module = rotary_bias(16)
    bias = module(40, 40, 0)
    torch.testing.assert_close(bias[1:, 1:], bias[:-1, :-1], atol=1e-4, rtol=1e-4)
    shifted = module(5, 40, 17)  # queries 17..21 of the same frame
    torch.testing.assert_close(shifted, bias[17:22], atol=1e-4, rtol=1e-4)
    # Not a constant: the lag matters.
    assert (bias[0] - bias[0, 0]).abs().max() > 1e-3


def test_rotary_extrapolates_beyond_any_table() -> None:
    bias = rotary_bias(4)(2, 5000, 4990)
    assert bias.shape == (2, 5000) and torch.isfinite(bias).all()


def test_rotary_odd_dim_raises() -> None:
    with pytest.raises(ValueError, match="even"):
        RotaryRelativePositionalBias(dim=7, init_std=0.02)
    assert math.isfinite(float(rotary_bias(2)(1, 1).detach()[0, 0]))


def test_rotary_reset_after_meta_device_init_zeroes_the_placeholder() -> None:
    """fairseq2 and FSDP build on the meta device, then ``to_empty`` and ``reset_parameters``."""
    with torch.device("meta"):
        bias = RotaryRelativePositionalBias(dim=8, init_std=0.02)
    bias.to_empty(device="cpu")
    bias._float_tensor.fill_(float("nan"))  # what uninitialised memory may hold
    bias.reset_parameters()
    assert torch.equal(bias._float_tensor, torch.zeros(1))
    assert torch.isfinite(bias(4, 4)).all()
