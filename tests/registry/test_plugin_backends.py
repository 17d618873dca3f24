"""Third-party backends: registered through ``mega_plugin_register_backends``, applied by
``mega_plugin.backends.accelerate``, serving every projection of a model (self-attention, NFFN,
cross-attention) with its hooks and state-dict keys intact. The ``linear`` kernel op they
replace is refused with where it moved.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any, Final

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mega_plugin.registry as registry
from _support.calls import ema_call
from _support.plugins import fake_entry_points
from mega_plugin.backends import accelerate, restore
from mega_plugin.backends.cpu_fast.ffn import BlockedFeedForward
from mega_plugin.core import MegaBackbone
from mega_plugin.core.ops import is_registered, select
from mega_plugin.core.presets import tiny
from mega_plugin.registry import hookimpl
from mega_plugin.registry.records import FAILED, LOADED

SERVED: list[tuple[int, int]] = []
"""The weight shape of every projection :class:`CountingLinear` ran, in call order."""


class CountingLinear(nn.Linear):
    """A third-party projection: ``nn.Linear`` that logs what it serves (a faster GEMM would go here)."""

    def forward(self, input: Tensor) -> Tensor:
        SERVED.append(tuple(self.weight.shape))
        return F.linear(input, self.weight, self.bias)


def swap_linears(model: nn.Module) -> int:
    """The backend's ``accelerate``: every exact ``nn.Linear`` becomes a :class:`CountingLinear`."""
    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = CountingLinear
            changed += 1
    return changed


def restore_linears(model: nn.Module) -> int:
    """The backend's ``restore``."""
    changed = 0
    for module in model.modules():
        if type(module) is CountingLinear:
            module.__class__ = nn.Linear
            changed += 1
    return changed


class CountingBackendPlugin:
    """Registers the ``counting`` backend, above the built-in ones."""

    @hookimpl
    def mega_plugin_register_backends(self, registry: Any) -> None:
        registry.register("counting", accelerate=swap_linears, restore=restore_linears, priority=100)


PROJECTIONS_PER_LAYER: Final = 9
"""v_proj, mx_proj, h_proj; the NFFN's fc1, fc2; the cross-attention's k_proj, q_proj, v_proj, h_proj."""


@pytest.fixture
def counting_backend(fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The registry with the ``counting`` plugin discovered; the log of served projections emptied."""
    fake_entry_points(monkeypatch, ("counting", CountingBackendPlugin()))
    SERVED.clear()
    return fresh_registry


def test_hook_mega_plugin_register_backends(counting_backend: ModuleType) -> None:
    record = {p.name: p for p in counting_backend.list_plugins()}["counting"]
    assert record.status == LOADED and record.registered == ("backend counting",)
    backends = {spec.name: spec for spec in counting_backend.list_backends()}
    assert backends["counting"].source == "fake-counting" and backends["counting"].priority == 100
    assert backends["counting"].description == "The backend's ``accelerate``: every exact ``nn.Linear`` becomes a :class:`CountingLinear`."
    assert backends["cpu_fast"].source == "mega-plugin"
    assert counting_backend.list_backends()[0].name == "counting"  # highest priority first


def cross_attention_model() -> tuple[MegaBackbone, Any]:
    config = dataclasses.replace(tiny(), add_cross_attention=True)
    torch.manual_seed(0)
    return MegaBackbone(config).eval(), config


def test_a_backend_serves_every_projection_with_hooks_and_keys_intact(counting_backend: ModuleType) -> None:
    model, config = cross_attention_model()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    calls: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda module, args, out, name=name: calls.update({name: calls.get(name, 0) + 1}))
    ids = torch.randint(3, config.vocab_size, (2, 7))
    encoder = torch.randn(2, 5, config.hidden_size)
    with torch.no_grad():
        expected = model(ids, encoder_hidden=encoder).hidden
    calls.clear()

    assert accelerate(model, names=["counting"]) == ["counting"]
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert len(linears) == config.num_hidden_layers * PROJECTIONS_PER_LAYER
    assert all(type(module) is CountingLinear for module in linears)
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(tensor, state[name]) for name, tensor in model.state_dict().items())
    with torch.no_grad():
        got = model(ids, encoder_hidden=encoder).hidden
    hidden, value, shared, ffn = (
        config.hidden_size,
        config.intermediate_size,
        config.shared_representation_size,
        config.nffn_hidden_size,
    )
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
    assert set(SERVED) == per_layer
    assert len(SERVED) == config.num_hidden_layers * PROJECTIONS_PER_LAYER  # each projection once
    assert set(calls) == {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    assert set(calls.values()) == {1}  # the hooks registered before the swap saw every call
    assert torch.equal(got, expected)
    assert restore(model) == len(linears) and all(type(module) is nn.Linear for module in linears)


def test_auto_applies_the_plugin_backend_first_and_the_built_in_one_leaves_its_modules_alone(
    counting_backend: ModuleType,
) -> None:
    model, config = cross_attention_model()
    assert accelerate(model) == ["counting", "cpu_fast"]
    assert all(type(module) is CountingLinear for module in model.modules() if isinstance(module, nn.Linear))
    assert any(isinstance(module, BlockedFeedForward) for module in model.modules())  # cpu_fast swapped the rest
    with torch.no_grad():
        model(torch.randint(3, config.vocab_size, (2, 7)), encoder_hidden=torch.randn(2, 5, config.hidden_size))
    assert len(SERVED) == config.num_hidden_layers * PROJECTIONS_PER_LAYER


def test_the_environment_picks_the_backends(counting_backend: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = cross_attention_model()
    monkeypatch.setenv("MEGA_PLUGIN_BACKENDS", "none")
    assert accelerate(model) == [] and not any(type(module) is CountingLinear for module in model.modules())
    monkeypatch.setenv("MEGA_PLUGIN_BACKENDS", "counting")
    assert accelerate(model) == ["counting"]
    assert not any(isinstance(module, BlockedFeedForward) for module in model.modules())


class LinearKernelPlugin:
    """Registers a kernel of the removed ``linear`` op, as plugins once could."""

    @hookimpl
    def mega_plugin_register_kernels(self, registry: Any) -> None:
        def old_linear(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
            return F.linear(input, weight, bias)

        registry.register("linear", "old_linear", old_linear, priority=100)


def test_a_linear_kernel_fails_its_plugin_with_where_projections_went(
    fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points(monkeypatch, ("linear_kernel", LinearKernelPlugin()))
    record = {p.name: p for p in fresh_registry.list_plugins()}["linear_kernel"]
    assert record.status == FAILED, record
    assert "op='linear' no longer exists" in record.error
    assert "nn.Linear modules called as modules" in record.error and "mega_plugin_register_backends" in record.error


def test_plugin_kernels_leave_the_remembered_choices_when_the_registry_is_reset(example_plugin: ModuleType) -> None:
    """Loading and resetting plugins are registry changes too: no choice outlives the kernel it chose."""
    call = ema_call(length=13)
    assert select("ema", "auto", call).name == "example_scan"
    registry.reset()
    assert not is_registered("ema", "example_scan")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEGA_PLUGIN_DISABLE_AUTOLOAD", "1")  # the next lookup loads the built-in plugin only
        assert select("ema", "auto", call).name != "example_scan"
