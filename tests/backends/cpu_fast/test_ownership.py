"""The in-place hand-over between layers never overwrites a tensor someone else can still read."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mega_plugin.backends import accelerate, restore
from mega_plugin.backends.cpu_fast.layer import BlockedGatedAttention
from mega_plugin.backends.cpu_fast.ownership import HandOverStack
from _support.configs import tiny_config
from mega_plugin.core import MegaBackbone


def _model() -> MegaBackbone:
    torch.manual_seed(0)
    return MegaBackbone(tiny_config(num_hidden_layers=3, use_chunking=True, chunk_size=4)).eval()


def _layer_outputs(model: nn.Module, tokens: Tensor) -> list[Tensor]:
    """Every block's output as a forward hook sees it (kept, not copied)."""
    seen: list[Tensor] = []
    handles = [block.register_forward_hook(lambda module, args, result: seen.append(result.hidden)) for block in model.layers]
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_the_backend_swaps_the_stack_and_hands_over_in_place() -> None:
    model = _model()
    tokens = torch.randint(3, 50, (2, 12))
    with torch.no_grad():
        reference = model(tokens).hidden
    assert "cpu_fast" in accelerate(model)
    assert type(model.layers) is HandOverStack and type(model.layers[0].mega_layer) is BlockedGatedAttention
    with torch.no_grad():
        fast = model(tokens).hidden
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)


def test_outputs_kept_by_forward_hooks_are_not_overwritten_by_later_layers() -> None:
    model = _model()
    tokens = torch.randint(3, 50, (2, 12))
    expected = [tensor.clone() for tensor in _layer_outputs(model, tokens)]
    accelerate(model)
    kept = _layer_outputs(model, tokens)
    assert len(kept) == len(expected)
    for got, want in zip(kept, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_callers_embeddings_and_kept_hidden_states_are_never_overwritten() -> None:
    model = _model()
    accelerate(model)
    embeds = torch.randn(2, 12, 16)  # hidden 16 (tiny_config)
    given = embeds.clone()
    with torch.no_grad():
        output = model(inputs_embeds=embeds, output_hidden_states=True)
    assert torch.equal(embeds, given)
    restore(model)
    with torch.no_grad():
        want = model(inputs_embeds=embeds, output_hidden_states=True)
    for got, expected in zip(output.hidden_states, want.hidden_states):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_restore_gives_back_the_core_modules_with_the_same_state() -> None:
    model = _model()
    keys = list(model.state_dict())
    classes = [type(module) for module in model.modules()]
    accelerate(model)
    assert list(model.state_dict()) == keys
    assert restore(model) > 0
    assert [type(module) for module in model.modules()] == classes
