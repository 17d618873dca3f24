"""The fixtures made by the ORIGINAL facebookresearch/mega code (tests/fixtures/original_mega).

This file checks the fixture directory itself: every README setup is there, every file the
manifests list exists and loads in its layout, and the whole is small; with MEGA_ORIGINAL_SNAPSHOT set,
the generator rebuilds the stored references exactly. Converter parity
against these fixtures is in ``test_original_conversion.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _support.original_fixtures import FIXTURE_ROOT, LAYOUTS, VARIANTS, load_checkpoint, load_fixture, setup_names

README_SETUPS = ("lm_wt103", "lm_enwik8", "lra_listops", "lra_text", "lra_retrieval", "lra_image",
                 "lra_pathfinder", "lra_pathx", "mt_wmt16", "sc_raw")
MAX_TOTAL_BYTES = 3 * 1024 * 1024


def test_every_readme_setup_has_a_fixture() -> None:
    assert setup_names() == tuple(sorted(README_SETUPS))


def test_the_fixtures_stay_small() -> None:
    total = sum(p.stat().st_size for p in FIXTURE_ROOT.rglob("*") if p.is_file())
    assert total < MAX_TOTAL_BYTES, f"{total} bytes"


@pytest.mark.parametrize("name", README_SETUPS)
def test_every_listed_file_exists_and_loads(name: str) -> None:
    fixture = load_fixture(name)
    assert fixture.manifest["setup"] == name and fixture.manifest["original"]["commit"].startswith("aeaa4b4")
    assert fixture.variants() == VARIANTS and fixture.layouts(variant="fp32") == LAYOUTS
    listed = {fixture.manifest["references"][v]["file"] for v in VARIANTS} | {"manifest.json"}
    for variant in VARIANTS:
        expected = {"fp32": LAYOUTS}.get(variant, ("save_state",))
        assert fixture.layouts(variant=variant) == expected
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[variant]
        for layout in expected:
            path = fixture.checkpoint_path(variant=variant, layout=layout)
            listed.add(path.name)
            checkpoint = load_checkpoint(path)
            args = checkpoint["args"] if layout != "cfg" else checkpoint["cfg"]["model"]
            assert isinstance(args, argparse.Namespace) and args.arch == fixture.manifest["original"]["arch"]
            assert {"model", "optimizer_history", "extra_state", "last_optimizer_state"} <= set(checkpoint)
            floats = [t for t in checkpoint["model"].values() if t.is_floating_point()]
            assert floats and all(t.dtype == dtype for t in floats)
        reference = fixture.reference(variant=variant)
        described = fixture.manifest["references"][variant]["tensors"]
        assert set(reference) == set(described)
        for key, tensor in reference.items():
            assert list(tensor.shape) == described[key]["shape"], key
            assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), key
    assert {p.name for p in fixture.directory.iterdir()} == listed


def test_low_precision_references_come_from_their_own_weights() -> None:
    # fp16 weights differ from fp32 ones, so the fresh model's outputs must differ too
    fixture = load_fixture("lm_enwik8")
    fp32, fp16 = fixture.reference(variant="fp32"), fixture.reference(variant="fp16")
    assert torch.equal(fp32["input.tokens"], fp16["input.tokens"])
    assert not torch.equal(fp32["log_probs"], fp16["log_probs"])


def test_unknown_variant_or_layout_is_refused() -> None:
    fixture = load_fixture("lra_text")
    with pytest.raises(ValueError, match="variant"):
        fixture.checkpoint_path(variant="fp8")
    with pytest.raises(ValueError, match="layouts"):
        fixture.checkpoint_path(variant="fp16", layout="legacy")
    with pytest.raises(ValueError, match="no original-MEGA fixture"):
        load_fixture("lm_nope")


ORIGINAL_SNAPSHOT = os.environ.get("MEGA_ORIGINAL_SNAPSHOT")
"""An extracted facebookresearch/mega snapshot (docs/original_checkpoints.md); absent in CI."""


@pytest.mark.skipif(not ORIGINAL_SNAPSHOT, reason="MEGA_ORIGINAL_SNAPSHOT (an extracted original snapshot) not set")
@pytest.mark.parametrize("name", ["lm_wt103", "mt_wmt16"])
def test_the_generator_rebuilds_the_stored_references(name: str, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "original_mega" / "build_fixtures.py"
    subprocess.run([sys.executable, str(script), "--original", str(ORIGINAL_SNAPSHOT), "--out", str(tmp_path),
                    "--only", name], check=True, capture_output=True)
    fixture = load_fixture(name)
    for variant in VARIANTS:
        rebuilt = torch.load(tmp_path / name / f"reference_{variant}.pt", weights_only=True)
        stored = fixture.reference(variant=variant)
        assert set(rebuilt) == set(stored)
        for key in stored:
            assert torch.equal(rebuilt[key], stored[key]), (variant, key)
