"""HF MEGA directories load through fairseq2 asset cards and give the HF logits; export round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fs2_helpers import Fs2Assets, require_fairseq2

require_fairseq2()
pytestmark = pytest.mark.fairseq2

TOLERANCE = 1e-5


def _ids(seed: int = 0, batch: int = 2, length: int = 21) -> torch.Tensor:
    return torch.randint(2, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


def _fs2_logits(name: str, ids: torch.Tensor) -> torch.Tensor:
    from fairseq2.models import load_model
    from fairseq2.nn import BatchLayout

    model = load_model(name, device=torch.device("cpu"), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids, BatchLayout.of(ids))


@pytest.mark.parametrize("name", ["mega_test_ours", "mega_test_untied"])
def test_hf_directory_loads_with_hf_logits(fs2_assets: Fs2Assets, name: str) -> None:
    from mega_plugin.adapters.hf import MegaForCausalLM

    ids = _ids()
    hf = MegaForCausalLM.from_pretrained(fs2_assets.hf_dirs[name]).eval()
    with torch.no_grad():
        expected = hf(ids, use_cache=False).logits
    actual = _fs2_logits(name, ids)
    assert (actual - expected).abs().max().item() <= TOLERANCE


def test_reference_directory_loads_with_reference_logits(fs2_assets: Fs2Assets) -> None:
    if not fs2_assets.reference_available:
        pytest.skip("transformers' deprecated MEGA is not available")
    from transformers.models.deprecated.mega import modeling_mega

    ids = _ids(seed=1, length=24)  # the reference needs a multiple of chunk_size
    reference = modeling_mega.MegaForCausalLM.from_pretrained(fs2_assets.hf_dirs["mega_test_reference"]).eval()
    with torch.no_grad():
        expected = reference(ids, use_cache=False).logits
    actual = _fs2_logits("mega_test_reference", ids)
    assert (actual - expected).abs().max().item() <= TOLERANCE


def test_unmapped_keys_are_named(tiny_config: object) -> None:
    from mega_plugin.adapters.fairseq2.interop import convert_mega_state_dict

    state = {
        "mega.embedding_layer.word_embeddings.weight": torch.zeros(100, 32),
        "mega.pooler.dense.weight": torch.zeros(1),
    }
    with pytest.raises(ValueError, match="mega.pooler.dense.weight"):
        convert_mega_state_dict(state, tiny_config)  # type: ignore[arg-type]


def test_key_maps_are_inverse(tiny_config: object) -> None:
    from mega_plugin.adapters.fairseq2.interop import FS2_TO_HF, HF_TO_FS2, map_keys

    from fs2_helpers import build_model

    state = build_model(tiny_config).state_dict()
    back = map_keys(map_keys(state, FS2_TO_HF, "fairseq2"), HF_TO_FS2, "HF")
    assert list(back) == list(state)


def test_fairseq2_card_command(fs2_assets: Fs2Assets, tmp_path: Path) -> None:
    import yaml

    from mega_plugin.cli import main

    output = tmp_path / "card.yaml"
    hf_dir = fs2_assets.hf_dirs["mega_test_untied"]
    assert main(["fairseq2-card", str(hf_dir), "--name", "x", "--output", str(output)]) == 0
    card = yaml.safe_load(output.read_text())
    assert card["name"] == "x" and card["model_family"] == "mega"
    assert card["model_config"]["tie_embeddings"] is False
    assert card["model_config"]["truncation"] == 6
    assert Path(card["checkpoint"]) == fs2_assets.hf_dirs["mega_test_untied"].resolve()


def test_fairseq2_card_rejects_encoders(tmp_path: Path) -> None:
    import json

    from mega_plugin.cli import main

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mega", "bidirectional": True}))
    assert main(["fairseq2-card", str(tmp_path), "--name", "x"]) == 1


def _loaded_hf_config(path: Path) -> dict[str, object]:
    from mega_plugin.adapters.hf import MegaConfig

    config = MegaConfig.from_pretrained(path).to_dict()
    for key in ("transformers_version", "_name_or_path", "torch_dtype", "dtype"):
        config.pop(key, None)
    return config


@pytest.mark.parametrize("name", ["mega_test_ours", "mega_test_untied", "mega_test_reference"])
def test_export_round_trip_is_bit_identical(fs2_assets: Fs2Assets, tmp_path: Path, name: str) -> None:
    if name not in fs2_assets.hf_dirs:
        pytest.skip("transformers' deprecated MEGA is not available")
    from safetensors.torch import load_file

    from mega_plugin.cli import main

    assert main(["export-hf", name, str(tmp_path / "out")]) == 0
    original = load_file(fs2_assets.hf_dirs[name] / "model.safetensors")
    exported = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(exported) == sorted(original)
    for key, tensor in original.items():
        assert torch.equal(exported[key], tensor), key
    # config.json files differ in which defaults they spell out; the loaded configs must not.
    original_config = _loaded_hf_config(fs2_assets.hf_dirs[name])
    exported_config = _loaded_hf_config(tmp_path / "out")
    keys = original_config.keys() | exported_config.keys()
    differing = {k for k in keys if original_config.get(k) != exported_config.get(k)}
    assert not differing, {k: (original_config.get(k), exported_config.get(k)) for k in differing}

    from mega_plugin.adapters.hf import MegaForCausalLM

    ids = _ids(seed=2)
    with torch.no_grad():
        expected = MegaForCausalLM.from_pretrained(fs2_assets.hf_dirs[name]).eval()(ids, use_cache=False).logits
        actual = MegaForCausalLM.from_pretrained(tmp_path / "out").eval()(ids, use_cache=False).logits
    assert torch.equal(actual, expected)


def test_fairseq2_card_model_config_is_the_config_json(fs2_assets: Fs2Assets) -> None:
    import json

    from mega_plugin.commands.fairseq2_card import build_card

    for name, hf_dir in fs2_assets.hf_dirs.items():
        hf_config = json.loads((hf_dir / "config.json").read_text())
        model_config = build_card(hf_dir, name)["model_config"]
        renamed = {"pad_token_id": "pad_idx", "tie_word_embeddings": "tie_embeddings"}
        compared = 0
        for key, value in hf_config.items():
            field = renamed.get(key, key)
            if field in model_config:
                assert model_config[field] == value, (name, key)
                compared += 1
        assert compared >= 30, compared




def test_fairseq2_hg_export_cli_uses_our_converter(fs2_assets: Fs2Assets, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from mega_plugin.adapters.hf import MegaForCausalLM

    name = "mega_test_untied"
    out = tmp_path / "exported"
    env = {**os.environ, "FAIRSEQ2_USER_ASSET_DIR": str(fs2_assets.root / "assets"), "FAIRSEQ2_EXTENSION_TRACE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fairseq2.models.utils.hg_export", "--no-rich", name, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    original = load_file(fs2_assets.hf_dirs[name] / "model.safetensors")
    exported = load_file(out / "model.safetensors")
    assert sorted(exported) == sorted(original)
    for key, tensor in original.items():
        assert torch.equal(exported[key], tensor), key
    ids = _ids(seed=4)
    with torch.no_grad():
        expected = MegaForCausalLM.from_pretrained(fs2_assets.hf_dirs[name]).eval()(ids, use_cache=False).logits
        actual = MegaForCausalLM.from_pretrained(out).eval()(ids, use_cache=False).logits
    assert torch.equal(actual, expected)


def test_fairseq2_layout_checkpoint_loads_and_exports(
    fs2_assets: Fs2Assets, tiny_config: object, tmp_path: Path
) -> None:
    from fairseq2.models.hub import ModelHubAccessor
    from fairseq2.nn import BatchLayout

    from fs2_helpers import build_model
    from mega_plugin.adapters.fairseq2.config import MegaLMConfig
    from mega_plugin.adapters.fairseq2.model import MegaCausalLM
    from mega_plugin.adapters.hf import MegaForCausalLM
    from mega_plugin.cli import main

    trained = build_model(tiny_config, seed=9)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    hub = ModelHubAccessor("mega", MegaCausalLM, MegaLMConfig)()
    loaded = hub.load_custom_model(tmp_path / "model.pt", tiny_config).eval()
    ids = _ids(seed=5)
    with torch.no_grad():
        expected = trained(ids, BatchLayout.of(ids))
        assert torch.equal(loaded(ids, BatchLayout.of(ids)), expected)
    # export-hf --checkpoint: config from the card, weights from the fairseq2 checkpoint.
    out = tmp_path / "hf"
    assert main(["export-hf", "mega_test_ours", str(out), "--checkpoint", str(tmp_path / "model.pt")]) == 0
    with torch.no_grad():
        actual = MegaForCausalLM.from_pretrained(out).eval()(ids, use_cache=False).logits
    assert (actual - expected).abs().max().item() <= TOLERANCE
