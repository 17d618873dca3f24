"""``position_ids``: counting positions are accepted (MEGA has no absolute positions, so they
change nothing); positions that restart inside a row (a packed, padding-free batch) are refused
instead of letting the EMA and attention run across document boundaries (4.57 and 5.x)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega_plugin  # noqa: E402,F401
from mega_hf_helpers import TINY  # noqa: E402
from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM, MegaModel  # noqa: E402

pytestmark = pytest.mark.hf


def ids(batch: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(3, 60, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("offset", [0, 5], ids=["from0", "from5"])
def test_counting_positions_change_nothing(offset: int) -> None:
    torch.manual_seed(0)
    model = MegaModel(MegaConfig(**TINY)).eval()
    inputs = ids()
    positions = (torch.arange(inputs.shape[1]) + offset).expand_as(inputs)
    with torch.no_grad():
        assert torch.equal(model(inputs, position_ids=positions)[0], model(inputs)[0])


def test_left_padding_may_carry_any_position() -> None:
    torch.manual_seed(0)
    model = MegaModel(MegaConfig(**TINY)).eval()
    inputs = ids()
    mask = torch.ones_like(inputs)
    mask[0, :2] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [0, 0, 0, 1, 2, 3] for the padded row
    positions[0, :2] = 1
    with torch.no_grad():
        assert torch.equal(
            model(inputs, attention_mask=mask, position_ids=positions)[0], model(inputs, attention_mask=mask)[0]
        )


@pytest.mark.parametrize("model_class", [MegaModel, MegaForCausalLM])
def test_a_packed_batch_is_refused(model_class: type) -> None:
    model = model_class(MegaConfig(**TINY, is_decoder=True, bidirectional=False)).eval()
    packed = ids(batch=1, length=7)
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1]])  # three documents in one row
    with pytest.raises(ValueError, match="packed \\(padding-free\\) batch"):
        model(packed, position_ids=positions)


def test_a_4d_attention_mask_is_refused_naming_the_shapes() -> None:
    model = MegaModel(MegaConfig(**TINY)).eval()
    inputs = ids()
    with pytest.raises(ValueError, match="attention_mask has shape \\(2, 1, 6, 6\\)"):
        model(inputs, attention_mask=torch.ones(2, 1, 6, 6))
