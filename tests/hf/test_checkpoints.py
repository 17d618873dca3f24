"""Checkpoint compatibility with transformers 4.57.6's MEGA, both ways (fairseq2 environment).

* A directory the reference wrote with ``save_pretrained`` (safetensors and ``pytorch_model.bin``)
  loads through *our* Auto classes with zero missing, unexpected or mismatched keys, and gives the
  reference's outputs (max abs diff <= 1e-5).
* What we save loads into the reference classes the same way.
* Tied embeddings behave as in the reference: tied heads share the word-embedding storage, an
  untied head keeps its own saved weights.

transformers 5.x has no reference; ``test_cross_environment.py`` covers loading these same files
there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("transformers.models.deprecated.mega", reason="needs transformers 4.57 (the deprecated MEGA)")

import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
import mega_plugin.adapters.hf as ours_hf  # noqa: E402
from mega_hf_helpers import HEADS, HEADS_BY_ID, TOLERANCE  # noqa: E402
import mega_hf_reference_checkpoints as rc  # noqa: E402

pytestmark = [pytest.mark.reference]

NAMES = [
    rc.directory_name(case, head.id, file_format)
    for case in rc.checkpoint_cases()
    for head in HEADS
    for file_format in rc.FORMATS
]
HEAD_OF = {
    rc.directory_name(case, head.id, file_format): head.id
    for case in rc.checkpoint_cases()
    for head in HEADS
    for file_format in rc.FORMATS
}


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("reference-checkpoints")
    expected = rc.write_reference_checkpoints(root)
    return root, expected


def assert_clean(info: dict[str, Any], what: str) -> None:
    problems = {key: list(value) for key, value in info.items() if key != "error_msgs" and list(value)}
    assert not problems, f"{what}: {problems}"
    assert not list(info.get("error_msgs", [])), f"{what}: {info['error_msgs']}"


def run(model: torch.nn.Module, record: dict[str, Any]) -> Any:
    call = dict(record["call"])
    if record["use_cache"]:
        call["use_cache"] = False
    with torch.no_grad():
        return model(**call)


def test_the_files_are_what_the_reference_writes(reference_dir: tuple[Path, dict]) -> None:
    root, _ = reference_dir
    safetensors = sorted(p.name for p in (root / NAMES[0]).iterdir())
    binary = sorted(p.name for p in (root / NAMES[1]).iterdir())
    assert "model.safetensors" in safetensors and "config.json" in safetensors, safetensors
    assert "pytorch_model.bin" in binary, binary


@pytest.mark.parametrize("name", NAMES)
def test_reference_checkpoint_loads_through_our_auto_classes(name: str, reference_dir: tuple[Path, dict]) -> None:
    root, expected = reference_dir
    head = HEADS_BY_ID[HEAD_OF[name]]
    auto_class = getattr(transformers, head.auto_name)
    model, info = auto_class.from_pretrained(root / name, output_loading_info=True)
    assert type(model) is getattr(ours_hf, head.class_name), type(model)
    assert type(model.config) is ours_hf.MegaConfig
    assert_clean(info, name)
    diff = rc.max_output_diff(head.id, run(model.eval(), expected[name]), expected[name])
    assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_our_checkpoint_loads_into_the_reference(name: str, reference_dir: tuple[Path, dict], tmp_path: Path) -> None:
    root, expected = reference_dir
    head = HEADS_BY_ID[HEAD_OF[name]]
    ours = getattr(ours_hf, head.class_name).from_pretrained(root / name)
    ours.save_pretrained(tmp_path, safe_serialization=name.endswith("safetensors"))
    reference, info = rc.load_into_reference(tmp_path, head.id)
    assert type(reference).__module__.startswith("transformers.models.deprecated.mega")
    assert_clean(info, name)
    diff = rc.max_output_diff(head.id, run(reference, expected[name]), expected[name])
    assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("head_id", ["CausalLM", "MaskedLM"])
@pytest.mark.parametrize("case_index", [0, 1])
def test_tied_embeddings_behave_as_in_the_reference(
    head_id: str, case_index: int, reference_dir: tuple[Path, dict]
) -> None:
    root, _ = reference_dir
    case = rc.checkpoint_cases()[case_index]
    name = rc.directory_name(case, head_id, "safetensors")
    head = HEADS_BY_ID[head_id]
    ours = getattr(ours_hf, head.class_name).from_pretrained(root / name)
    reference, _ = rc.load_into_reference(root / name, head_id)
    output_name = "lm_head" if head_id == "CausalLM" else "mlm_head"
    ours_out = getattr(ours, output_name).weight
    theirs_out = getattr(reference, output_name).weight
    ours_embed = ours.mega.embedding_layer.word_embeddings.weight
    theirs_embed = reference.mega.embedding_layer.word_embeddings.weight
    tied = case.config.get("tie_word_embeddings", True)
    assert (ours_out.data_ptr() == ours_embed.data_ptr()) == tied
    assert (theirs_out.data_ptr() == theirs_embed.data_ptr()) == tied
    assert torch.equal(ours_out, theirs_out)
    if not tied:
        assert not torch.equal(ours_out, ours_embed)
