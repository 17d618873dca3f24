"""Shared fixtures of the fairseq2 adapter tests.

fairseq2 can be initialised once per process and reads ``FAIRSEQ2_USER_ASSET_DIR`` when it
builds its asset store, so one session fixture writes every HF directory and asset card the
tests load, sets the environment, and then runs ``init_fairseq2()``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from fs2_helpers import TINY_HF, UNTIED_HF, Fs2Assets, perturb_

# Any failure of our extension must raise instead of being logged (fairseq2 reads it at init).
os.environ["FAIRSEQ2_EXTENSION_TRACE"] = "1"


def _write_ours(path: Path, values: dict[str, Any], seed: int) -> None:
    from mega_plugin.adapters.hf import MegaConfig, MegaForCausalLM

    torch.manual_seed(seed)
    model = perturb_(MegaForCausalLM(MegaConfig(**values)), seed)
    model.save_pretrained(path)


def _write_reference(path: Path, values: dict[str, Any], seed: int) -> bool:
    try:
        from transformers.models.deprecated.mega import configuration_mega, modeling_mega
    except ImportError:
        return False
    reference_values = {k: v for k, v in values.items() if k not in ("ema_kernel", "attention_kernel")}
    torch.manual_seed(seed)
    model = perturb_(modeling_mega.MegaForCausalLM(configuration_mega.MegaConfig(**reference_values)), seed)
    model.save_pretrained(path)
    return True


@pytest.fixture(scope="session")
def fs2_assets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fs2Assets]:
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from fairseq2 import init_fairseq2
    from fairseq2.error import InvalidOperationError

    from mega_plugin.commands.fairseq2_card import build_card
    import yaml

    root = tmp_path_factory.mktemp("fs2")
    asset_dir = root / "assets"
    asset_dir.mkdir()
    hf_dirs = {"mega_test_ours": root / "ours", "mega_test_untied": root / "untied"}
    _write_ours(hf_dirs["mega_test_ours"], TINY_HF, seed=1)
    _write_ours(hf_dirs["mega_test_untied"], UNTIED_HF, seed=2)
    reference = _write_reference(root / "reference", TINY_HF, seed=3)
    if reference:
        hf_dirs["mega_test_reference"] = root / "reference"
    elif os.environ.get("MEGA_PLUGIN_ENV") == "fairseq2":
        pytest.fail("the fairseq2 environment must provide transformers' deprecated MEGA (the parity oracle)")
    cards = [build_card(path, name) for name, path in hf_dirs.items()]
    (asset_dir / "mega_test.yaml").write_text(yaml.safe_dump_all(cards, sort_keys=False))

    os.environ["FAIRSEQ2_USER_ASSET_DIR"] = str(asset_dir)
    os.environ["FAIRSEQ2_EXTENSION_TRACE"] = "1"
    try:
        init_fairseq2()
    except InvalidOperationError:
        # fairseq2 reads FAIRSEQ2_USER_ASSET_DIR once, at init: our cards would be invisible.
        pytest.fail("fairseq2 was initialised before the fairseq2 tests could set their asset directory")
    yield Fs2Assets(root=root, hf_dirs=hf_dirs, reference_available=reference)


@pytest.fixture()
def tiny_config() -> Any:
    from mega_plugin.adapters.fairseq2.config import MegaLMConfig

    return MegaLMConfig.from_hf_config({**TINY_HF, "model_type": "mega"})
