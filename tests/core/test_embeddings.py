"""Token-type handling (``add_token_type_embeddings``) and the tensor-level reference initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mega_plugin.core.config import MegaCoreConfig
from mega_plugin.core.embeddings import MegaEmbeddings, add_token_type_embeddings
from mega_plugin.core.init import init_embedding_, init_linear_, initialize_module

B, L, D, T = 2, 4, 6, 3


def embeddings(seed: int = 0) -> Tensor:
    return torch.randn(B, L, D, generator=torch.Generator().manual_seed(seed))


def table(seed: int = 1) -> nn.Embedding:
    module = nn.Embedding(T, D)
    with torch.no_grad():
        module.weight.copy_(torch.randn(T, D, generator=torch.Generator().manual_seed(seed)))
    return module


class WeightOnlyTable(nn.Module):
    """An embedding that is not a ``torch.nn.Embedding`` (like a fairseq2 ``StandardEmbedding``)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, ids: Tensor) -> Tensor:
        return self.weight[ids]


def test_without_ids_every_position_gets_type_zero() -> None:
    types = table()
    x = embeddings()
    torch.testing.assert_close(add_token_type_embeddings(x, types), x + types.weight[0])


def test_with_ids_each_position_gets_its_row() -> None:
    types = table()
    x = embeddings()
    ids = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    torch.testing.assert_close(add_token_type_embeddings(x, types, ids), x + types.weight[ids])


def test_any_embedding_module_with_a_weight_works() -> None:
    types = table()
    other = WeightOnlyTable(types.weight.detach())
    x = embeddings()
    ids = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    torch.testing.assert_close(add_token_type_embeddings(x, other), add_token_type_embeddings(x, types))
    torch.testing.assert_close(add_token_type_embeddings(x, other, ids), add_token_type_embeddings(x, types, ids))
    with pytest.raises(ValueError, match="type_vocab_size=3"):
        add_token_type_embeddings(x, other, torch.full((B, L), T))


def test_without_a_table_zero_ids_pass_and_others_are_refused() -> None:
    x = embeddings()
    assert add_token_type_embeddings(x, None) is x
    assert add_token_type_embeddings(x, None, torch.zeros(B, L, dtype=torch.long)) is x
    with pytest.raises(ValueError, match="add_token_type_embeddings=False"):
        add_token_type_embeddings(x, None, torch.ones(B, L, dtype=torch.long))


def test_bad_ids_are_named() -> None:
    x = embeddings()
    with pytest.raises(ValueError, match="token_type_ids has shape"):
        add_token_type_embeddings(x, table(), torch.zeros(B, L + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, type_vocab_size=3\)"):
        add_token_type_embeddings(x, table(), torch.full((B, L), -1))
    with pytest.raises(TypeError, match="integer tensor"):
        add_token_type_embeddings(x, table(), torch.zeros(B, L))


def test_mega_embeddings_use_the_shared_token_type_handling() -> None:
    config = MegaCoreConfig(vocab_size=11, hidden_size=D, add_token_type_embeddings=True, type_vocab_size=T)
    module = MegaEmbeddings(config)
    ids = torch.randint(0, 11, (B, L), generator=torch.Generator().manual_seed(3))
    types = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    words = module.word_embeddings(ids)
    torch.testing.assert_close(module(ids), add_token_type_embeddings(words, module.token_type_embeddings))
    torch.testing.assert_close(
        module(ids, token_type_ids=types), add_token_type_embeddings(words, module.token_type_embeddings, types)
    )


def test_init_linear_matches_the_module_initialisation() -> None:
    layer = nn.Linear(40, 30)
    torch.manual_seed(7)
    initialize_module(layer, std=0.3)
    weight, bias = torch.empty(30, 40), torch.ones(30)
    torch.manual_seed(7)
    init_linear_(weight, bias, std=0.3)
    assert torch.equal(weight, layer.weight.detach()) and torch.equal(bias, layer.bias.detach())
    assert torch.count_nonzero(bias) == 0
    assert abs(weight.std().item() - 0.3) < 0.03


def test_init_embedding_zeroes_the_padding_row() -> None:
    module = nn.Embedding(50, 20, padding_idx=4)
    torch.manual_seed(8)
    initialize_module(module, std=0.2)
    weight = torch.empty(50, 20)
    torch.manual_seed(8)
    init_embedding_(weight, std=0.2, padding_idx=4)
    assert torch.equal(weight, module.weight.detach())
    assert torch.count_nonzero(weight[4]) == 0 and torch.count_nonzero(weight[3]) == 20
    assert abs(weight.std().item() - 0.2) < 0.03
    unpadded = torch.empty(50, 20)
    init_embedding_(unpadded, std=0.2, padding_idx=None)
    assert torch.count_nonzero(unpadded) == unpadded.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_scale_embeddings_multiplies_by_sqrt_hidden_in_the_table_dtype(dtype: torch.dtype) -> None:
    """The original's ``sqrt(d) * embed_tokens(x)``: ids and inputs_embeds alike, token types after."""
    config = MegaCoreConfig(vocab_size=11, hidden_size=9, pad_token_id=1, scale_embeddings=True,
                            add_token_type_embeddings=True)
    module = MegaEmbeddings(config).to(dtype)
    ids = torch.tensor([[4, 5, 1], [7, 8, 9]])
    rows = module.word_embeddings.weight[ids]
    expected = rows * torch.tensor(3.0, dtype=dtype) + module.token_type_embeddings.weight[0]
    assert torch.equal(module(ids), expected)
    assert torch.equal(module(inputs_embeds=rows), expected)
    unscaled = MegaEmbeddings(MegaCoreConfig(vocab_size=11, hidden_size=9, add_token_type_embeddings=True)).to(dtype)
    unscaled.load_state_dict(module.state_dict())
    assert not torch.equal(unscaled(ids), module(ids))  # the option does something
    with pytest.raises(ValueError, match="scale_embeddings must be true or false"):
        MegaCoreConfig(scale_embeddings="yes")  # type: ignore[arg-type]
