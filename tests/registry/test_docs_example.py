"""The example plugin printed in docs/plugins.md works as printed: its pyproject declares the
entry point, and its module, loaded as a plugin, registers a kernel that agrees with the
reference EMA, a preset, a converter and an adapter."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import torch

from _support.calls import ema_call
from _support.plugins import fake_entry_points
from mega_plugin.core.ops import EmaCoefficients, EmaOptions, reference_ema, select
from mega_plugin.registry.records import LOADED

DOCS = Path(__file__).parent.parent.parent / "docs" / "plugins.md"


def _block(language: str, must_contain: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    matching = [block for block in blocks if must_contain in block]
    assert len(matching) == 1, f"expected one ```{language} block containing {must_contain!r} in {DOCS}"
    return matching[0]


@pytest.fixture
def docs_plugin() -> ModuleType:
    module = ModuleType("mega_plugin_loop")
    exec(compile(_block("python", "def mega_plugin_register_kernels"), "docs/plugins.md", "exec"), module.__dict__)
    return module


def test_the_pyproject_declares_the_entry_point_of_the_module() -> None:
    project = tomllib.loads(_block("toml", "[project.entry-points.mega_plugin]"))
    assert project["project"]["entry-points"]["mega_plugin"] == {"loop": "mega_plugin_loop"}
    assert project["tool"]["setuptools"]["packages"] == ["mega_plugin_loop"]


def test_the_module_loads_as_a_plugin_and_registers_through_every_hook(
    docs_plugin: ModuleType, fresh_registry: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points(monkeypatch, ("loop", docs_plugin))
    record = {p.name: p for p in fresh_registry.list_plugins()}["loop"]
    assert record.status == LOADED, record.error
    assert set(record.registered) == {"kernel ema/loop", "preset loop_small", "converter prefixless", "adapter my-framework"}
    assert fresh_registry.get_preset("loop_small").ema_kernel == "loop"
    assert fresh_registry.get_adapter("my-framework").availability() == "not installed: my_framework"
    config, state = fresh_registry.get_converter("prefixless").run(
        {"layers.0.mega_layer.qk_bias": torch.ones(2, 4)}, {"vocab_size": 10, "hidden_size": 8}
    )
    assert config["vocab_size"] == 10 and list(state) == ["mega.layers.0.mega_layer.qk_bias"]
    assert select("ema", "loop", ema_call(length=8)).fn.__wrapped__ is docs_plugin.loop_ema
    assert select("ema", "auto", ema_call(length=65)).name != "loop"  # declines long calls


@pytest.mark.parametrize("length, with_state", [(0, True), (1, False), (13, True)], ids=["L0-state", "L1", "L13-state"])
def test_the_printed_kernel_matches_the_reference_ema(docs_plugin: ModuleType, length: int, with_state: bool) -> None:
    dim, ema = 6, 4
    damping, decay = torch.sigmoid(torch.randn(dim, ema)), torch.sigmoid(torch.randn(dim, ema))
    coefficients = EmaCoefficients(
        input_gain=damping * torch.randn(dim, ema), decay=1 - damping * decay,
        output_gain=torch.randn(dim, ema) / math.sqrt(ema),
    )
    x = torch.randn(2, length, dim)
    initial_state = torch.randn(2, dim, ema) if with_state else None
    options = EmaOptions(bidirectional=False, truncation=None, return_state=True)
    output, state = docs_plugin.loop_ema(x, coefficients, initial_state, options)
    expected, expected_state = reference_ema(x, coefficients, initial_state, options)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state, expected_state, atol=1e-5, rtol=1e-5)
