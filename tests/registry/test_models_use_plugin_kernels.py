"""HF and fairseq2 MEGA models run the example plugin's kernels when selected, with the same outputs.

The plugin kernels are re-implementations (block scan EMA, SDPA softmax attention), so a model
that runs them must agree with the same weights run by the built-in reference kernels. Which
kernel ran is observed by wrapping the core's choosing function (``mega_plugin.core.ops.select``),
not by trusting the config. HF and fairseq2 models are accelerated at build (``cpu_fast``): its
layers run the kernels the config names too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import pytest
import torch

from _support.calls import record_kernel_choices
from _support.environment import distribution_installed

PLUGIN_KERNELS: Final = {"ema/example_scan", "attention/example_sdpa"}
REFERENCE_KERNELS: Final = {"ema/reference", "attention/reference"}
ATOL = RTOL = 1e-5

requires_fairseq2: Final = pytest.mark.skipif(not distribution_installed("fairseq2"), reason="fairseq2 is not installed")


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every kernel the layers run, as ``op/name``, in call order."""
    return record_kernel_choices(monkeypatch)


def _ids(vocab: int, batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _hf_models(hf: ModuleType) -> tuple[Any, Any]:
    """(model on the plugin's kernels, same weights on the reference kernels), from the plugin preset."""
    plugin_model = hf.MegaForCausalLM(hf.MegaConfig.from_preset("example_small")).eval()
    reference_config = hf.MegaConfig.from_preset("example_small", ema_kernel="reference", attention_kernel="reference")
    reference_model = hf.MegaForCausalLM(reference_config).eval()
    reference_model.load_state_dict(plugin_model.state_dict())
    return plugin_model, reference_model


@pytest.mark.hf
def test_hf_model_runs_the_kernels_named_in_its_config(example_plugin: ModuleType, dispatched: list[str]) -> None:
    hf = pytest.importorskip("mega_plugin.adapters.hf")
    plugin_model, reference_model = _hf_models(hf)
    assert (plugin_model.config.ema_kernel, plugin_model.config.attention_kernel) == ("example_scan", "example_sdpa")
    ids = _ids(plugin_model.config.vocab_size)
    with torch.no_grad():
        plugin_logits = plugin_model(ids).logits
        assert set(dispatched) == PLUGIN_KERNELS
        dispatched.clear()
        reference_logits = reference_model(ids).logits
        assert set(dispatched) == REFERENCE_KERNELS
    torch.testing.assert_close(plugin_logits, reference_logits, atol=ATOL, rtol=RTOL)


@pytest.mark.hf
def test_hf_environment_variables_override_the_config(
    example_plugin: ModuleType, dispatched: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = pytest.importorskip("mega_plugin.adapters.hf")
    _, reference_model = _hf_models(hf)
    ids = _ids(reference_model.config.vocab_size)
    with torch.no_grad():
        expected = reference_model(ids).logits
        dispatched.clear()
        monkeypatch.setenv("MEGA_PLUGIN_KERNEL_EMA", "example_scan")
        monkeypatch.setenv("MEGA_PLUGIN_KERNEL_ATTENTION", "example_sdpa")
        overridden = reference_model(ids).logits
    assert reference_model.config.ema_kernel == "reference" and set(dispatched) == PLUGIN_KERNELS
    torch.testing.assert_close(overridden, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.hf
def test_hf_auto_picks_the_plugin_kernels_and_the_choice_is_saved_with_the_model(
    example_plugin: ModuleType, dispatched: list[str], tmp_path: Path
) -> None:
    hf = pytest.importorskip("mega_plugin.adapters.hf")
    plugin_model, _ = _hf_models(hf)
    auto = hf.MegaForCausalLM(hf.MegaConfig.from_preset("example_small", ema_kernel="auto", attention_kernel="auto"))
    with torch.no_grad():
        auto.eval()(_ids(auto.config.vocab_size))
    assert set(dispatched) == PLUGIN_KERNELS  # priority 20 beats the built-in kernels
    plugin_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert (saved["ema_kernel"], saved["attention_kernel"]) == ("example_scan", "example_sdpa")
    dispatched.clear()
    reloaded = hf.MegaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        reloaded(_ids(reloaded.config.vocab_size))
    assert set(dispatched) == PLUGIN_KERNELS


LOAD_SAVED_MODEL: Final = """
import sys, torch
import mega_plugin
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    model(torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]]))
print(model.config.ema_kernel, model.config.attention_kernel)
"""


@pytest.mark.hf
def test_a_saved_model_naming_plugin_kernels_loads_after_import_mega_plugin_alone(
    example_plugin: ModuleType, installed_test_plugins: Any, tmp_path: Path
) -> None:
    hf = pytest.importorskip("mega_plugin.adapters.hf")
    plugin_model, _ = _hf_models(hf)
    plugin_model.save_pretrained(tmp_path)
    env = installed_test_plugins.subprocess_env(MEGA_PLUGIN_BLOCK="mega-plugin-broken")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SAVED_MODEL, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["example_scan", "example_sdpa"]


def _fairseq2_models() -> tuple[Any, Any]:
    from mega_plugin.adapters.fairseq2.config import MegaLMConfig
    from mega_plugin.adapters.fairseq2.factory import create_mega_model
    from mega_plugin.registry import get_preset

    plugin_model = create_mega_model(MegaLMConfig.from_core(get_preset("example_small"))).eval()
    reference = get_preset("example_small", ema_kernel="reference", attention_kernel="reference")
    reference_model = create_mega_model(MegaLMConfig.from_core(reference)).eval()
    reference_model.load_state_dict(plugin_model.state_dict())
    return plugin_model, reference_model


@requires_fairseq2
def test_fairseq2_model_runs_the_kernels_named_in_its_config(example_plugin: ModuleType, dispatched: list[str]) -> None:
    from fairseq2.nn import BatchLayout

    plugin_model, reference_model = _fairseq2_models()
    ids = _ids(64)
    with torch.no_grad():
        plugin_logits = plugin_model(ids, BatchLayout.of(ids))
        assert set(dispatched) == PLUGIN_KERNELS
        dispatched.clear()
        reference_logits = reference_model(ids, BatchLayout.of(ids))
        assert set(dispatched) == REFERENCE_KERNELS
    torch.testing.assert_close(plugin_logits, reference_logits, atol=ATOL, rtol=RTOL)


@requires_fairseq2
def test_fairseq2_environment_variables_override_the_config(
    example_plugin: ModuleType, dispatched: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fairseq2.nn import BatchLayout

    _, reference_model = _fairseq2_models()
    ids = _ids(64)
    with torch.no_grad():
        expected = reference_model(ids, BatchLayout.of(ids))
        dispatched.clear()
        monkeypatch.setenv("MEGA_PLUGIN_KERNEL_EMA", "example_scan")
        monkeypatch.setenv("MEGA_PLUGIN_KERNEL_ATTENTION", "example_sdpa")
        overridden = reference_model(ids, BatchLayout.of(ids))
    assert set(dispatched) == PLUGIN_KERNELS
    torch.testing.assert_close(overridden, expected, atol=ATOL, rtol=RTOL)


FAIRSEQ2_HUB_SCRIPT: Final = """
import torch
from fairseq2 import init_fairseq2
from fairseq2.models.hub import ModelHubAccessor
from fairseq2.nn import BatchLayout

import mega_plugin.core.ops as ops
from mega_plugin.adapters.fairseq2.config import MegaLMConfig
from mega_plugin.adapters.fairseq2.model import MegaCausalLM

chosen = set()
select = ops.select
def spy(op, requested, call):
    spec = select(op, requested, call)
    chosen.add(op + "/" + spec.name)
    return spec
ops.select = spy

init_fairseq2()
hub = ModelHubAccessor("mega", MegaCausalLM, MegaLMConfig)()
config = hub.get_arch_config("example_small")
model = hub.create_new_model(config, device=torch.device("cpu"), dtype=torch.float32).eval()
ids = torch.randint(3, config.vocab_size, (2, 8))
with torch.no_grad():
    model(ids, BatchLayout.of(ids))
print("example_small" in hub.get_archs(), config.ema_kernel, config.attention_kernel, *sorted(chosen))
"""


@requires_fairseq2
def test_the_plugin_preset_is_a_fairseq2_arch_whose_model_runs_the_plugin_kernels(installed_test_plugins: Any) -> None:
    env = installed_test_plugins.subprocess_env(MEGA_PLUGIN_BLOCK="mega-plugin-broken")
    done = subprocess.run([sys.executable, "-c", FAIRSEQ2_HUB_SCRIPT], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found, ema_kernel, attention_kernel, *kernels = done.stdout.split()
    assert (found, ema_kernel, attention_kernel) == ("True", "example_scan", "example_sdpa")
    assert set(kernels) == PLUGIN_KERNELS
