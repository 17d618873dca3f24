"""The reference attention kernel against a per-(query, key) loop written from the notes.

softmax: softmax over the visible keys of q.k * scale + bias; a chunk made only of padding
is left unmasked; a query that sees no key gets zeros. laplace / relu2: f(q.k / n + bias)
for visible keys, n = number of keys the query may see (at least 1), zero elsewhere.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mega_plugin.core.ops import AttentionOptions, reference_attention
from mega_plugin.core.ops.attention.reference import laplace

ACTIVATIONS = ("softmax", "laplace", "relu2")
MU = math.sqrt(0.5)
SIGMA = math.sqrt(1.0 / (4.0 * math.pi))
B, C, Z, V = 2, 2, 4, 3


def element(activation: str, x: float) -> float:
    if activation == "relu2":
        return max(x, 0.0) ** 2
    return 0.5 * (1.0 + math.erf((x - MU) / (SIGMA * math.sqrt(2.0))))


def loop_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    bias: Tensor | None,
    key_mask: Tensor | None,
    *,
    activation: str,
    causal: bool,
    query_offset: int,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """(output, weights) one query and one key at a time, in float64."""
    batch, chunks, query_length, _ = query.shape
    key_length = key.shape[2]
    weights = torch.zeros(batch, chunks, query_length, key_length, dtype=torch.float64)
    for b in range(batch):
        for c in range(chunks):
            real = [True] * key_length if key_mask is None else [bool(m) for m in key_mask[b, c]]
            if activation == "softmax" and not any(real):
                real = [True] * key_length  # an all-padding chunk is left unmasked
            for i in range(query_length):
                visible = [j for j in range(key_length) if real[j] and (not causal or j <= query_offset + i)]
                dots = {j: float(query[b, c, i].double() @ key[b, c, j].double()) for j in visible}
                extra = {j: (0.0 if bias is None else float(bias[i, j])) for j in visible}
                if activation == "softmax":
                    scores = {j: dots[j] * scale + extra[j] for j in visible}
                    top = max(scores.values(), default=0.0)
                    total = sum(math.exp(s - top) for s in scores.values())
                    for j in visible:
                        weights[b, c, i, j] = math.exp(scores[j] - top) / total
                else:
                    count = max(len(visible), 1)
                    for j in visible:
                        weights[b, c, i, j] = element(activation, dots[j] / count + extra[j])
    return weights @ value.double(), weights


def inputs(query_length: int, key_length: int, *, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(B, C, query_length, Z, generator=generator)
    key = torch.randn(B, C, key_length, Z, generator=generator)
    value = torch.randn(B, C, key_length, V, generator=generator)
    bias = 0.3 * torch.randn(query_length, key_length, generator=generator)
    return query, key, value, bias


def padding_mask(key_length: int) -> Tensor:
    """(B, C, Lk): right padding, left padding, a hole, and a chunk with one real key."""
    mask = torch.ones(B, C, key_length, dtype=torch.bool)
    mask[0, 0, key_length - 2 :] = False
    mask[0, 1, :2] = False
    mask[1, 0, 1] = False
    mask[1, 1, :] = False
    mask[1, 1, key_length - 1] = True
    return mask


def run(query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None, key_mask: Tensor | None, **options):
    defaults = dict(query_offset=0, scale=Z**-0.5, dropout_p=0.0, training=False, need_weights=True)
    return reference_attention(query, key, value, bias, key_mask, AttentionOptions(**{**defaults, **options}))


def check(query, key, value, bias, key_mask, *, activation, causal, query_offset=0) -> Tensor:
    output, weights = run(
        query, key, value, bias, key_mask, activation=activation, causal=causal, query_offset=query_offset
    )
    expected, expected_weights = loop_attention(
        query, key, value, bias, key_mask, activation=activation, causal=causal, query_offset=query_offset,
        scale=Z**-0.5,
    )
    assert not torch.isnan(output).any()
    torch.testing.assert_close(weights.double(), expected_weights, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.double(), expected, atol=1e-5, rtol=1e-5)
    return output


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "keymask"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_square_frame(activation: str, causal: bool, with_bias: bool, masked: bool) -> None:
    query, key, value, bias = inputs(6, 6)
    check(
        query, key, value, bias if with_bias else None, padding_mask(6) if masked else None,
        activation=activation, causal=causal,
    )


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "keymask"])
@pytest.mark.parametrize("shape", [(1, 6, 5), (3, 7, 4), (2, 5, 0)], ids=lambda s: f"Lq{s[0]}-Lk{s[1]}-off{s[2]}")
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_query_offset(activation: str, shape: tuple[int, int, int], masked: bool) -> None:
    """Streaming: Lq new queries at key positions offset..offset+Lq-1 of an Lk frame."""
    query_length, key_length, offset = shape
    query, key, value, bias = inputs(query_length, key_length, seed=1)
    check(
        query, key, value, bias, padding_mask(key_length) if masked else None,
        activation=activation, causal=True, query_offset=offset,
    )


@pytest.mark.parametrize("activation", ["laplace", "relu2"])
def test_element_attention_divides_by_visible_keys(activation: str) -> None:
    """One query, keys equal to the query: every score is |q|^2 / n for n visible keys."""
    query = torch.full((1, 1, 1, Z), 0.5)
    key = query.expand(1, 1, 5, Z).clone()
    value = torch.eye(5).view(1, 1, 5, 5)
    key_mask = torch.tensor([[[True, False, True, True, False]]])
    _, weights = run(query, key, value, None, key_mask, activation=activation, causal=False)
    dot = float((query * query).sum())
    expected = element(activation, dot / 3)
    torch.testing.assert_close(weights[0, 0, 0], torch.tensor([expected, 0, expected, expected, 0]))
    # Causal at offset 1: the query sees keys 0 and 1, of which only key 0 is real: n = 1.
    _, weights = run(query, key, value, None, key_mask, activation=activation, causal=True, query_offset=1)
    torch.testing.assert_close(weights[0, 0, 0], torch.tensor([element(activation, dot), 0, 0, 0, 0]))
    # Nothing visible: n is clamped to 1 and every weight is zero (no division by zero).
    empty = torch.zeros(1, 1, 5, dtype=torch.bool)
    output, weights = run(query, key, value, None, empty, activation=activation, causal=False)
    assert torch.equal(weights, torch.zeros_like(weights)) and torch.equal(output, torch.zeros_like(output))


def test_laplace_constants() -> None:
    x = torch.tensor([MU - 2 * SIGMA, MU - SIGMA, MU, MU + SIGMA, 0.0, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.5 * (1 + math.erf(float(v - MU) / (SIGMA * math.sqrt(2)))) for v in x], dtype=torch.float64)
    torch.testing.assert_close(laplace(x), expected)
    assert float(laplace(torch.tensor(MU))) == pytest.approx(0.5)
    # One standard deviation above the mean: Phi(1).
    assert float(laplace(torch.tensor(MU + SIGMA, dtype=torch.float64))) == pytest.approx(0.8413447460685429)


def test_softmax_fully_masked_rows_are_zero() -> None:
    """Left padding under a causal mask: the first queries see no real key at all."""
    query, key, value, bias = inputs(5, 5, seed=2)
    key_mask = torch.ones(B, C, 5, dtype=torch.bool)
    key_mask[:, :, :2] = False
    output = check(query, key, value, bias, key_mask, activation="softmax", causal=True)
    assert torch.equal(output[:, :, :2], torch.zeros_like(output[:, :, :2]))
    assert output[:, :, 2:].abs().sum() > 0


def test_softmax_all_padding_chunk_is_left_unmasked() -> None:
    query, key, value, bias = inputs(4, 4, seed=3)
    key_mask = torch.ones(B, C, 4, dtype=torch.bool)
    key_mask[:, 1] = False  # chunk 1: only padding
    key_mask[:, 0, 3] = False  # chunk 0: one padded key, which stays masked
    masked, _ = run(query, key, value, bias, key_mask, activation="softmax", causal=False)
    unmasked, _ = run(query, key, value, bias, None, activation="softmax", causal=False)
    torch.testing.assert_close(masked[:, 1], unmasked[:, 1])
    assert not torch.allclose(masked[:, 0], unmasked[:, 0])
    for activation in ("laplace", "relu2"):
        output, _ = run(query, key, value, bias, key_mask, activation=activation, causal=False)
        assert torch.equal(output[:, 1], torch.zeros_like(output[:, 1]))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_need_weights_shape(activation: str) -> None:
    query, key, value, bias = inputs(3, 7)
    output, weights = run(query, key, value, bias, None, activation=activation, causal=True, query_offset=4)
    assert output.shape == (B, C, 3, V)
    assert weights is not None and weights.shape == (B, C, 3, 7)
    _, none = run(query, key, value, bias, None, activation=activation, causal=True, query_offset=4, need_weights=False)
    assert none is None


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dropout_is_off_outside_training(activation: str) -> None:
    query, key, value, bias = inputs(6, 6)
    key_mask = padding_mask(6)
    plain, _ = run(query, key, value, bias, key_mask, activation=activation, causal=True)
    evaluated, _ = run(query, key, value, bias, key_mask, activation=activation, causal=True, dropout_p=0.5)
    assert torch.equal(plain, evaluated)
    trained, _ = run(query, key, value, bias, key_mask, activation=activation, causal=True, dropout_p=0.5, training=True)
    assert not torch.equal(plain, trained)


def test_unknown_activation_names_allowed_values() -> None:
    query, key, value, _ = inputs(2, 2)
    with pytest.raises(ValueError, match="softmax, laplace, relu2"):
        run(query, key, value, None, None, activation="sigmoid", causal=False)
