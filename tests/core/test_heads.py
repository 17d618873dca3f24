"""The shared heads (``core/heads.py``) against their formulas, and their checkpoint names."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mega_plugin.core.heads import MegaClassificationHead, MegaLMHeadTransform, MegaPooler, tanh_dense
from mega_plugin.core.init import initialize_tree

B, L, D = 2, 5, 6


def hidden(seed: int = 0) -> Tensor:
    return torch.randn(B, L, D, generator=torch.Generator().manual_seed(seed))


def linear(in_features: int, out_features: int, seed: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
    return layer


def test_tanh_dense_is_tanh_of_the_affine_map() -> None:
    dense = linear(D, D, seed=1)
    x = hidden()
    expected = torch.tanh(x @ dense.weight.T + dense.bias)
    torch.testing.assert_close(tanh_dense(x, dense), expected)


def test_tanh_dense_without_a_layer_is_the_identity() -> None:
    x = hidden()
    assert tanh_dense(x, None) is x


@pytest.mark.parametrize("with_dense", [True, False], ids=["dense", "no-dense"])
def test_lm_head_transform(with_dense: bool) -> None:
    dense = linear(D, D, seed=2) if with_dense else None
    head = MegaLMHeadTransform(dense)
    x = hidden(1)
    expected = torch.tanh(dense(x)) if dense is not None else x
    torch.testing.assert_close(head(x), expected)
    assert sorted(head.state_dict()) == (["dense.bias", "dense.weight"] if with_dense else [])


def test_lm_head_transform_accepts_any_dense_module() -> None:
    # Adapters pass their framework's own linear layer; anything mapping (*, D) -> (*, D) works.
    head = MegaLMHeadTransform(nn.Sequential(nn.Identity()))
    x = hidden(2)
    torch.testing.assert_close(head(x), torch.tanh(x))


def test_pooler_summarises_the_first_token() -> None:
    pooler = MegaPooler(D)
    with torch.no_grad():
        pooler.dense.weight.copy_(linear(D, D, seed=3).weight)
    x = hidden(3)
    expected = torch.tanh(x[:, 0] @ pooler.dense.weight.T + pooler.dense.bias)
    torch.testing.assert_close(pooler(x), expected)
    assert sorted(pooler.state_dict()) == ["dense.bias", "dense.weight"]


def test_classification_head_scores_the_first_token() -> None:
    head = MegaClassificationHead(D, 3, dropout=0.5).eval()
    initialize_tree(head, std=0.5)
    x = hidden(4)
    first = x[:, 0]
    expected = torch.tanh(first @ head.dense.weight.T + head.dense.bias) @ head.out_proj.weight.T + head.out_proj.bias
    torch.testing.assert_close(head(x), expected)
    assert head(x).shape == (B, 3)
    assert sorted(head.state_dict()) == ["dense.bias", "dense.weight", "out_proj.bias", "out_proj.weight"]


def test_classification_head_applies_dropout_in_training() -> None:
    head = MegaClassificationHead(D, 3, dropout=0.5).train()
    x = hidden(5)
    torch.manual_seed(0)
    first = head(x)
    torch.manual_seed(1)
    assert not torch.equal(first, head(x))
