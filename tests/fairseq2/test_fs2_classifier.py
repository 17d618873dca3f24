"""The ``mega_classifier`` family: the original LRA classifiers in fairseq2 (``convert --to fairseq2``).

The oracle is the ORIGINAL code's fixtures (tests/fixtures/original_mega/lra_*, sc_raw): the
converted directory's card builds a :class:`MegaSequenceClassifier` whose logits on the fixture's
right-padded inputs (padded ``BatchLayout``) must equal the original's within 1e-5, in fp32, fp16
and bf16; ``load_model`` finds the card in a fresh process through the entry point.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch
from fs2_helpers import require_fairseq2

from _support.original_fixtures import load_fixture
from mega_plugin.cli import main

require_fairseq2()
pytestmark = pytest.mark.fairseq2

SETUPS = ("lra_listops", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder", "lra_pathx", "sc_raw")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _convert(name: str, out: Path, *, variant: str = "fp32") -> Path:
    path = load_fixture(name).checkpoint_path(variant=variant)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = main(["convert", "--from", "fairseq-mega", str(path), "--to", "fairseq2", str(out)])
    assert code == 0
    return out


def _model(directory: Path) -> Any:
    import yaml
    from safetensors.torch import load_file

    from mega_plugin.adapters.fairseq2.classifier_config import MegaClassifierConfig
    from mega_plugin.adapters.fairseq2.classifier_model import (
        convert_mega_classifier_state_dict,
        create_mega_classifier_model,
    )

    card = yaml.safe_load((directory / f"{directory.name}.yaml").read_text())
    assert card["model_family"] == "mega_classifier" and card["checkpoint"] == str(directory.resolve())
    config = MegaClassifierConfig(**card["model_config"])  # the card alone describes the model
    model = create_mega_classifier_model(config).eval()
    state = convert_mega_classifier_state_dict(load_file(str(directory / "model.safetensors")), config)
    model.load_state_dict(state)
    return model


def _logits(model: Any, reference: dict[str, torch.Tensor]) -> torch.Tensor:
    from fairseq2.nn import BatchLayout

    tokens, lengths = reference["input.src_tokens"], reference["input.src_lengths"]
    extra = {}
    if "input.src_tokens1" in reference:
        second = reference["input.src_tokens1"]
        extra = dict(pair_seqs=second, pair_layout=BatchLayout.of(second, seq_lens=reference["input.src_lengths1"].tolist()))
    with torch.no_grad():
        return model(tokens, BatchLayout.of(tokens, seq_lens=lengths.tolist()), **extra)


@pytest.mark.parametrize("variant", ("fp32", "fp16", "bf16"))
@pytest.mark.parametrize("name", SETUPS)
def test_fairseq2_classifier_gives_the_original_logits(name: str, variant: str, tmp_path: Path) -> None:
    fixture = load_fixture(name)
    model = _model(_convert(name, tmp_path / name, variant=variant))
    reference = fixture.reference(variant=variant)
    torch.testing.assert_close(_logits(model, reference), reference["logits"], **fixture.tolerance(variant))
    with torch.no_grad():  # the comparison can fail: one changed weight
        model.layers[0].mega_layer.ema_gate.decay_factor.add_(0.05)
    assert not torch.allclose(_logits(model, reference), reference["logits"], **fixture.tolerance(variant))


FRESH_PROCESS = """
import sys
import torch
from fairseq2.models import load_model
from fairseq2.nn import BatchLayout

model = load_model(sys.argv[1], device=torch.device("cpu"), dtype=torch.float32).eval()
ref = torch.load(sys.argv[2])
tokens = ref["input.src_tokens"]
with torch.no_grad():
    torch.save(model(tokens, BatchLayout.of(tokens, seq_lens=ref["input.src_lengths"].tolist())), sys.argv[3])
print(type(model).__module__, type(model).__name__)
"""


@pytest.mark.slow
def test_load_model_finds_the_converted_card_in_a_fresh_process(tmp_path: Path) -> None:
    fixture = load_fixture("lra_image")
    directory = _convert("lra_image", tmp_path / "mega_lra_image_test")
    torch.save(fixture.reference(), tmp_path / "ref.pt")
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    env = {**os.environ, "FAIRSEQ2_USER_ASSET_DIR": str(directory), "FAIRSEQ2_EXTENSION_TRACE": "1",
           "PYTHONPATH": str(REPO_ROOT)}  # this tree's mega_plugin behind the entry point
    result = subprocess.run(
        [sys.executable, str(script), directory.name, str(tmp_path / "ref.pt"), str(tmp_path / "logits.pt")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["mega_plugin.adapters.fairseq2.classifier_model", "MegaSequenceClassifier"]
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), fixture.reference()["logits"], **fixture.tolerance())


def test_classifier_config_errors_name_the_field() -> None:
    from mega_plugin.adapters.fairseq2.classifier_config import MegaClassifierConfig

    with pytest.raises(ValueError, match="num_labels must be a positive integer"):
        MegaClassifierConfig(num_labels=0).to_core()
    with pytest.raises(ValueError, match="classifier_pooling='max'.*allowed values"):
        MegaClassifierConfig(classifier_style="lra", classifier_pooling="max").to_core()
    with pytest.raises(ValueError, match="MegaForSequenceClassification"):
        MegaClassifierConfig.from_hf_config(json.loads('{"architectures": ["MegaForCausalLM"]}'))
