"""The five normalisations over the feature axis of (B, L, D), against their textbook formulas."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mega_plugin.core import NORMALIZATION_TYPES, SequenceNorm

EPS = 1e-5
B, L, D = 3, 7, 6


def randomise(norm: SequenceNorm) -> None:
    """Non-trivial affine parameters, so that forgetting to apply them fails."""
    with torch.no_grad():
        for parameter in norm.parameters():
            parameter.copy_(1.0 + 0.5 * torch.randn_like(parameter))


def expected_output(norm_type: str, norm: SequenceNorm, x: Tensor) -> Tensor:
    x = x.double()
    params = {name.rsplit(".", 1)[-1]: p.detach().double() for name, p in norm.named_parameters()}
    mean_square = x.square().mean(-1, keepdim=True)
    if norm_type == "scalenorm":
        return params.get("scalar", 1.0) * x / torch.sqrt(mean_square + EPS)
    if norm_type == "rmsnorm":
        return params.get("weight", 1.0) * x / torch.sqrt(mean_square + EPS)
    if norm_type == "layernorm":
        centred = x - x.mean(-1, keepdim=True)
        out = centred / torch.sqrt(centred.square().mean(-1, keepdim=True) + EPS)
    else:  # batch statistics over (B, L) per feature
        centred = x - x.mean(dim=(0, 1))
        out = centred / torch.sqrt(centred.square().mean(dim=(0, 1)) + EPS)
    return params.get("weight", 1.0) * out + params.get("bias", 0.0)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("norm_type", NORMALIZATION_TYPES)
def test_norm_formula(norm_type: str, affine: bool) -> None:
    norm = SequenceNorm(norm_type, D, eps=EPS, affine=affine).train()
    randomise(norm)
    x = 3.0 * torch.randn(B, L, D) + 1.0
    output = norm(x)
    assert output.shape == (B, L, D)
    torch.testing.assert_close(output.double(), expected_output(norm_type, norm, x), atol=1e-5, rtol=1e-5)
    if not affine:
        assert list(norm.parameters()) == []


@pytest.mark.parametrize("norm_type", ["batchnorm", "syncbatchnorm"])
def test_batchnorm_eval_uses_running_statistics_per_feature(norm_type: str) -> None:
    norm = SequenceNorm(norm_type, D, eps=EPS).train()
    randomise(norm)
    x = 2.0 * torch.randn(B, L, D) - 1.0
    norm(x)
    flat = x.reshape(-1, D).double()
    running_mean = 0.1 * flat.mean(0)  # momentum 0.1 from zeros
    running_var = 0.9 + 0.1 * flat.var(0, unbiased=True)  # from ones
    inner = norm.norm
    torch.testing.assert_close(inner.running_mean.double(), running_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inner.running_var.double(), running_var, atol=1e-5, rtol=1e-5)
    norm.eval()
    y = torch.randn(1, 4, D)
    expected = (y.double() - running_mean) / torch.sqrt(running_var + EPS) * inner.weight.double() + inner.bias.double()
    torch.testing.assert_close(norm(y).double(), expected.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_type", ["scalenorm", "rmsnorm", "layernorm"])
def test_token_norms_are_per_position(norm_type: str) -> None:
    norm = SequenceNorm(norm_type, D)
    randomise(norm)
    x = torch.randn(B, L, D)
    whole = norm(x)
    torch.testing.assert_close(norm(x[:, 2:3]), whole[:, 2:3])


def test_rmsnorm_really_normalises() -> None:
    """The HF port returned weight * x; the real RMSNorm is scale invariant."""
    norm = SequenceNorm("rmsnorm", D)
    x = torch.randn(B, L, D)
    torch.testing.assert_close(norm(100.0 * x), norm(x), atol=1e-4, rtol=1e-4)
    assert isinstance(norm.norm.weight, nn.Parameter) and norm.norm.weight.shape == (D,)


def test_checkpoint_layout() -> None:
    """State-dict names read ``norm.<param>`` (``...norm.norm.*`` inside a layer)."""
    assert set(SequenceNorm("scalenorm", D).state_dict()) == {"norm.scalar"}
    assert set(SequenceNorm("rmsnorm", D).state_dict()) == {"norm.weight"}
    assert set(SequenceNorm("layernorm", D).state_dict()) == {"norm.weight", "norm.bias"}
    assert {"norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"} <= set(
        SequenceNorm("batchnorm", D).state_dict()
    )


def test_unknown_norm_lists_allowed_values() -> None:
    with pytest.raises(ValueError) as error:
        SequenceNorm("groupnorm", D)
    message = str(error.value)
    assert "normalization_type" in message and "groupnorm" in message
    for allowed in NORMALIZATION_TYPES:
        assert allowed in message


def test_batchnorm_rejects_unbatched_input() -> None:
    with pytest.raises(ValueError, match="batch"):
        SequenceNorm("batchnorm", D)(torch.randn(L, D))
