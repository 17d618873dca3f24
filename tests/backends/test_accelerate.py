"""``mega_plugin.backends.accelerate`` / ``restore``: which backends apply, what they swap, and that a
model keeps its parameters, state-dict keys and outputs (row blocks are exact; oneDNN rounds as fp32)."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch
from torch import nn

from _support.backends import BLOCKED, reference_copy
from _support.configs import tiny_config
from mega_plugin.backends import ENV_BACKENDS, BackendError, BackendSpec, accelerate, register_backend, restore
from mega_plugin.backends import registry as backend_registry
from mega_plugin.backends.cpu_fast import NAME as CPU_FAST
from mega_plugin.backends.cpu_fast.ownership import HandOverStack
from mega_plugin.core import MegaBackbone
from mega_plugin.core.ffn import NormalizedFeedForward
from mega_plugin.core.gated_attention import MovingAverageGatedAttention
from mega_plugin.core.ops import declined
from mega_plugin.core.stack import MegaLayerStack


@pytest.fixture(autouse=True)
def _no_backend_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BACKENDS, raising=False)


@pytest.fixture
def unavailable_backend() -> Iterator[str]:
    """A registered backend whose hardware is missing."""
    spec = BackendSpec(
        name="needs_npu", accelerate=lambda model: 0, restore=lambda model: 0, is_available=lambda: declined("no NPU here")
    )
    register_backend(spec)
    yield spec.name
    backend_registry.unregister_backend(spec.name)


def core_classes(model: nn.Module) -> list[type[nn.Module]]:
    return [type(module) for module in model.modules()]


def test_a_bare_model_is_the_reference_until_accelerated() -> None:
    model = MegaBackbone(tiny_config()).eval()
    classes = core_classes(model)
    assert MovingAverageGatedAttention in classes and NormalizedFeedForward in classes and MegaLayerStack in classes
    assert not any(isinstance(module, BLOCKED) for module in model.modules())
    parameters = {name: parameter for name, parameter in model.named_parameters()}
    keys = list(model.state_dict())
    assert CPU_FAST in accelerate(model)
    assert isinstance(model.layers, HandOverStack)
    assert sum(isinstance(module, BLOCKED) for module in model.modules()) == 4
    assert list(model.state_dict()) == keys
    assert all(parameter is parameters[name] for name, parameter in model.named_parameters())  # swapped in place
    assert restore(model) > 0 and core_classes(model) == classes


def test_accelerated_outputs_and_gradients_match_the_reference() -> None:
    torch.manual_seed(0)
    reference = MegaBackbone(tiny_config(use_chunking=True, chunk_size=8)).train()
    model = reference_copy(reference)
    accelerate(model, names=[CPU_FAST])
    tokens = torch.randint(3, 50, (2, 40))
    results = []
    for network in (reference, model):
        hidden = network(tokens).hidden
        hidden.square().mean().backward()
        results.append((hidden.detach(), [parameter.grad for parameter in network.parameters()]))
    (expected, expected_grads), (got, got_grads) = results
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, atol=2e-5, rtol=1e-4)


def test_none_and_names_choose_the_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    model = MegaBackbone(tiny_config())
    assert accelerate(model, names="none") == []
    assert accelerate(model, names=[]) == []
    monkeypatch.setenv(ENV_BACKENDS, "none")  # the environment wins over the caller
    assert accelerate(model, names=[CPU_FAST]) == []
    assert not any(isinstance(module, BLOCKED) for module in model.modules())
    monkeypatch.setenv(ENV_BACKENDS, f" {CPU_FAST} ")
    assert accelerate(model, names="none") == [CPU_FAST]


def test_unknown_and_unavailable_backends_fail_clearly(unavailable_backend: str) -> None:
    model = MegaBackbone(tiny_config())
    with pytest.raises(BackendError, match=r"backend 'warp' is not registered; allowed values: auto, none, .*cpu_fast"):
        accelerate(model, names=["warp"])
    with pytest.raises(BackendError, match="backend 'needs_npu' cannot run here: no NPU here"):
        accelerate(model, names=[unavailable_backend])
    assert unavailable_backend not in accelerate(model)  # auto skips it
