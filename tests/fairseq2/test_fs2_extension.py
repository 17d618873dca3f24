"""The ``fairseq2.extension`` entry point registers the family, its archs, its HF converter and cards."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any

import pytest
import torch
from fs2_helpers import Fs2Assets, require_fairseq2

require_fairseq2()
pytestmark = pytest.mark.fairseq2

# Fields that the causal form of a preset changes on purpose.
CAUSAL_FIELDS = ("bidirectional", "is_decoder")


def _hub() -> Any:
    from fairseq2.models.hub import ModelHubAccessor

    from mega_plugin.adapters.fairseq2.config import MegaLMConfig
    from mega_plugin.adapters.fairseq2.model import MegaCausalLM

    return ModelHubAccessor("mega", MegaCausalLM, MegaLMConfig)()


def _family() -> Any:
    from fairseq2.models.family import ModelFamily
    from fairseq2.runtime.dependency import get_dependency_resolver

    return get_dependency_resolver().resolve(ModelFamily, key="mega")


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=os.getcwd()
    )


def test_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    targets = {ep.name: ep.value for ep in entry_points(group="fairseq2.extension")}
    assert targets.get("mega") == "mega_plugin.adapters.fairseq2.extension:setup_mega_extension"


def test_extension_module_imports_neither_fairseq2_nor_the_model() -> None:
    code = (
        "import sys, mega_plugin.adapters.fairseq2.extension as e; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'fairseq2' "
        "or m.startswith('mega_plugin.adapters.fairseq2.') and m != e.__name__))"
    )
    result = _run_python(code, dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_family_is_registered_with_every_hook(fs2_assets: Fs2Assets) -> None:
    from mega_plugin.adapters.fairseq2.config import MegaLMConfig
    from mega_plugin.adapters.fairseq2.model import MegaCausalLM

    family = _family()
    assert family.kls is MegaCausalLM and family.config_kls is MegaLMConfig
    assert family.supports_meta
    assert family.supports_compilation and family.supports_fsdp and family.supports_layerwise_ac


def test_hugging_face_converter_is_registered(fs2_assets: Fs2Assets) -> None:
    from fairseq2.models.hg import get_hugging_face_converter

    from mega_plugin.adapters.fairseq2.hg import MegaHuggingFaceConverter

    assert isinstance(get_hugging_face_converter("mega"), MegaHuggingFaceConverter)


def test_archs_are_the_causal_forms_of_every_shared_preset(fs2_assets: Fs2Assets) -> None:
    from mega_plugin.registry import get_preset, list_presets

    hub = _hub()
    names = {record.name for record in list_presets()}
    paper = {"lra_listops", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder", "lra_pathx"}
    assert paper | {"wikitext103", "enwik8", "mega_base_wikitext", "tiny"} <= names
    assert hub.get_archs() == names
    for name in sorted(names):
        core = hub.get_arch_config(name).to_core()
        preset = get_preset(name)
        assert not core.bidirectional and core.is_decoder, name
        for field in dataclasses.fields(preset):
            if field.name not in CAUSAL_FIELDS + ("extra",):
                assert getattr(core, field.name) == getattr(preset, field.name), (name, field.name)


def test_hub_creates_a_model_on_meta_and_cpu(fs2_assets: Fs2Assets) -> None:
    from fairseq2.nn import BatchLayout

    hub = _hub()
    config = hub.get_arch_config("tiny")
    meta = hub.create_new_model(config, device=torch.device("cpu"), meta=True)
    assert next(meta.parameters()).device.type == "meta"
    model = hub.create_new_model(config, device=torch.device("cpu"), dtype=torch.float32)
    ids = torch.randint(2, config.vocab_size, (2, 9))
    assert model(ids, BatchLayout.of(ids)).shape == (2, 9, config.vocab_size)


def test_every_lra_arch_builds_and_runs_causally(fs2_assets: Fs2Assets) -> None:
    from fairseq2.nn import BatchLayout

    hub = _hub()
    for name in ("lra_image", "lra_listops_chunk", "mega_base_wikitext"):
        config = dataclasses.replace(hub.get_arch_config(name), num_hidden_layers=1, vocab_size=64)
        model = hub.create_new_model(config, device=torch.device("cpu"), dtype=torch.float32).eval()
        ids = torch.randint(2, 64, (1, 12))
        with torch.no_grad():
            full = model(ids, BatchLayout.of(ids))
            prefix = model(ids[:, :7], BatchLayout.of(ids[:, :7]))
        # Causal: a prefix's outputs do not depend on the tokens after it.
        assert (full[:, :7] - prefix).abs().max() <= 1e-5, name


def _asset_env(fs2_assets: Fs2Assets) -> dict[str, str]:
    # The session fixture has set FAIRSEQ2_USER_ASSET_DIR to its cards' folder.
    return {**os.environ, "FAIRSEQ2_USER_ASSET_DIR": str(fs2_assets.root / "assets"), "FAIRSEQ2_EXTENSION_TRACE": "1"}


def test_asset_cli_lists_package_and_user_cards(fs2_assets: Fs2Assets) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fairseq2.assets", "list", "--kind", "model"],
        capture_output=True,
        text=True,
        env=_asset_env(fs2_assets),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for card in ("mega", "mega_enwik8", "mega_wikitext103", "mega_tiny", *fs2_assets.hf_dirs):
        assert f"model:{card}@" in result.stdout, card
    shown = subprocess.run(
        [sys.executable, "-m", "fairseq2.assets", "show", "mega_enwik8"],
        capture_output=True,
        text=True,
        env=_asset_env(fs2_assets),
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    assert "enwik8" in shown.stdout and "mega" in shown.stdout


FRESH_PROCESS = """
import sys
import torch
from fairseq2.models import load_model
from fairseq2.nn import BatchLayout

model = load_model(sys.argv[1], device=torch.device("cpu"), dtype=torch.float32).eval()
ids = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(ids, BatchLayout.of(ids)), sys.argv[3])
print(type(model).__module__, type(model).__name__)
"""


def test_load_model_in_a_fresh_process_that_never_imports_mega_plugin(fs2_assets: Fs2Assets, tmp_path: Any) -> None:
    from mega_plugin.adapters.hf import MegaForCausalLM

    name = "mega_test_ours"
    ids = torch.randint(2, 100, (2, 13), generator=torch.Generator().manual_seed(7))
    torch.save(ids, tmp_path / "ids.pt")
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, str(script), name, str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt")],
        capture_output=True,
        text=True,
        env=_asset_env(fs2_assets),
        timeout=300,
        cwd=tmp_path,  # the script never imports mega_plugin: the entry point does
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[:2] == ["mega_plugin.adapters.fairseq2.model", "MegaCausalLM"]
    hf = MegaForCausalLM.from_pretrained(fs2_assets.hf_dirs[name]).eval()
    with torch.no_grad():
        expected = hf(ids, use_cache=False).logits
    assert (torch.load(tmp_path / "logits.pt") - expected).abs().max().item() <= 1e-5
