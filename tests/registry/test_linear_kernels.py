"""Third-party ``linear`` kernels: registered through the plugin registry, checked at load,
and run by every projection of a model (self-attention, NFFN, cross-attention)."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mega_plugin.core.kernels import KernelError, is_registered, unregister_kernel
from mega_plugin.core.kernels.registry import register_kernel
from mega_plugin.core.presets import tiny
from mega_plugin.core.stack import MegaBackbone
from mega_plugin.registry.registries import KernelRegistry, Staging


@pytest.fixture
def staged() -> Iterator[KernelRegistry]:
    registry = KernelRegistry(Staging("test-linear-plugin"))
    yield registry
    for spec in registry._staging.kernels:
        unregister_kernel(spec.op, spec.name)
        assert not is_registered(spec.op, spec.name)


def test_a_linear_kernel_with_the_wrong_call_is_refused_at_load(staged: KernelRegistry) -> None:
    def takes_activation(input: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
        return F.linear(input, weight, bias)

    with pytest.raises(KernelError, match="fn\\(input, weight, bias"):
        staged.register("linear", "needs_more", takes_activation)


def test_every_projection_runs_a_registered_linear_kernel(staged: KernelRegistry) -> None:
    shapes: list[tuple[int, int]] = []

    def counting(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """Counts the projections it serves."""
        shapes.append(tuple(weight.shape))
        return F.linear(input, weight, bias)

    spec = staged.register(
        "linear",
        "counting",
        counting,
        priority=100,
        supports=lambda call: None if call["dtype"] == torch.float32 else f"dtype {call['dtype']}",
    )
    register_kernel(spec)
    config = dataclasses.replace(tiny(), add_cross_attention=True)
    model = MegaBackbone(config).eval()
    hidden, value, shared, ffn = (
        config.hidden_size,
        config.intermediate_size,
        config.shared_representation_size,
        config.nffn_hidden_size,
    )
    encoder = torch.randn(2, 5, hidden)
    with torch.no_grad():
        model(torch.randint(3, config.vocab_size, (2, 7)), encoder_hidden=encoder)
    per_layer = {
        (value, hidden),  # mega_layer.v_proj
        (2 * hidden + shared + value, hidden),  # mega_layer.mx_proj
        (hidden, value),  # mega_layer.h_proj
        (ffn, hidden),  # nffn.fc1
        (hidden, ffn),  # nffn.fc2
        (shared, hidden),  # cross_attn.k_proj
        (2 * hidden + shared, hidden),  # cross_attn.q_proj
        (hidden, hidden),  # cross_attn.v_proj, cross_attn.h_proj
    }
    assert set(shapes) == per_layer
    assert len(shapes) == config.num_hidden_layers * 9  # nine projections per layer


def test_lookups_see_every_registration_and_removal(staged: KernelRegistry) -> None:
    """The sorted lists are cached per registry version: both changes must show at once."""
    from mega_plugin.core.kernels import kernels, registry_version

    before = registry_version()
    assert kernels("linear")[0].name != "newest"
    def newest(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(input, weight, bias)

    spec = staged.register("linear", "newest", newest, priority=1000)
    register_kernel(spec)
    assert registry_version() != before
    assert kernels("linear")[0].name == "newest"
    unregister_kernel("linear", "newest")
    assert kernels("linear")[0].name != "newest"
    assert [s.name for s in kernels("linear")][-1] == "reference"
