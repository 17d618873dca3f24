"""Every hook has a test (named ``test_hook_<hook>``) and documentation; the public API is pinned."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path
from types import ModuleType

import pytest

import mega_plugin.registry as registry
from mega_plugin.registry import hookspecs
from mega_plugin.registry.registries import REGISTRY_FOR_HOOK

HERE = Path(__file__).parent
DOCS = HERE.parent.parent / "docs" / "plugins.md"
HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("mega_plugin_")]


def _test_names() -> set[str]:
    names = set()
    for path in HERE.glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    return names


def test_hook_names_constant_matches_the_hookspecs() -> None:
    assert sorted(hookspecs.HOOK_NAMES) == sorted(HOOKS)
    assert set(REGISTRY_FOR_HOOK) == set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    assert f"test_hook_{hook}" in _test_names(), f"write test_hook_{hook} in tests/registry"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_docs(hook: str) -> None:
    assert (getattr(hookspecs, hook).__doc__ or "").strip()
    assert f"`{hook}(registry)`" in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "method",
    [
        f"{cls.__name__}.{name}"
        for cls in REGISTRY_FOR_HOOK.values()
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    ],
)
def test_every_registry_method_is_documented(method: str) -> None:
    cls_name, name = method.split(".")
    assert f"`registry.{name}(" in DOCS.read_text(encoding="utf-8"), f"document {method} in docs/plugins.md"


def test_public_api_is_pinned() -> None:
    assert registry.__all__ == [
        "HOOK_NAMES", "PROJECT_NAME", "AdapterRecord", "AdapterRegistry", "BackendRegistry", "ConversionError",
        "ConverterRecord", "ConverterRegistry", "KernelRegistry", "NotRegisteredError", "PluginError", "PluginRecord",
        "PresetRecord", "PresetRegistry", "get_adapter", "get_converter", "get_preset", "hf_config_dict", "hookimpl",
        "hookspec", "install", "is_loaded", "list_adapters", "list_backends", "list_converters", "list_kernels", "list_plugins",
        "list_presets", "load_plugins", "preset_record", "reset",
    ]
    assert all(hasattr(registry, name) for name in registry.__all__)
    assert registry.PROJECT_NAME == "mega_plugin"


def test_hf_config_dict_still_resolves_from_the_registry_with_a_deprecation_warning() -> None:
    from mega_plugin.formats.hf import hf_config_dict

    with pytest.warns(DeprecationWarning, match=r"mega_plugin\.registry\.hf_config_dict .* mega_plugin\.formats\.hf"):
        assert registry.hf_config_dict is hf_config_dict
    with pytest.warns(DeprecationWarning, match=r"import it from mega_plugin\.formats\.hf"):
        from mega_plugin.registry import hf_config_dict as old_name  # noqa: F401
    assert old_name is hf_config_dict
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        registry.no_such_name  # noqa: B018


def test_hook_mega_plugin_register_kernels(example_plugin: ModuleType) -> None:
    ema = {spec.name: spec for spec in registry.list_kernels("ema")}
    attention = {spec.name: spec for spec in registry.list_kernels("attention")}
    assert ema["example_scan"].source == "mega-plugin-example"
    assert ema["example_scan"].priority == 20
    assert attention["example_sdpa"].fn.__wrapped__ is example_plugin.sdpa_attention
    assert ema["reference"].source == attention["reference"].source == "mega-plugin"
    assert registry.list_kernels("ema")[0].name == "example_scan"  # best (highest priority) first
    assert ema["example_scan"].description == "Causal EMA by blocks of 16 steps with a carried state (no FFT)."


def test_hook_mega_plugin_register_presets(example_plugin: ModuleType) -> None:
    record = registry.preset_record("example_small")
    assert record.source == "mega-plugin-example"
    assert record.description == "A small causal decoder that asks for this plugin's kernels by name."
    config = registry.get_preset("example_small")
    assert (config.ema_kernel, config.attention_kernel) == ("example_scan", "example_sdpa")
    assert {"tiny", "lra_image", "wikitext103"} <= {p.name for p in registry.list_presets()}


def test_hook_mega_plugin_register_converters(example_plugin: ModuleType) -> None:
    import torch

    converter = registry.get_converter("example-bare-hf")
    assert converter.source == "mega-plugin-example" and not converter.accepts_allow_drop
    args = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1}
    config, state = converter.run({"layers.0.x": torch.ones(1)}, args)
    assert config["model_type"] == "mega" and config["architectures"] == ["MegaModel"]
    assert config["vocab_size"] == 10 and list(state) == ["mega.layers.0.x"]
    with pytest.raises(registry.ConversionError, match="does not support --allow-drop"):
        converter.run({}, args, allow_drop=["x*"])
    assert registry.get_converter("fairseq-mega").accepts_allow_drop


def test_hook_mega_plugin_register_adapters(example_plugin: ModuleType) -> None:
    adapters = {a.name: a for a in registry.list_adapters()}
    assert {"hf", "fairseq2", "example-sentinel", "example-missing"} <= set(adapters)
    assert adapters["example-missing"].availability() == "not installed: mega_plugin_example_not_installed"
    assert adapters["example-sentinel"].availability() is None
    assert "mega_plugin_example_sentinel" not in sys.modules  # found with find_spec, never imported
    assert adapters["hf"].requires == ("transformers",) and adapters["hf"].source == "mega-plugin"
    assert registry.get_adapter("fairseq2").module == "mega_plugin.adapters.fairseq2"

