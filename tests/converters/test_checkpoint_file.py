"""Checkpoint files load with weights_only and exactly the objects fairseq writes; errors name the file.

The oracle is the unrestricted ``torch.load`` of the same file (what ``--trust-checkpoint`` does):
the safe loading must give the same content for every fixture the ORIGINAL code wrote
(tests/fixtures/original_mega: its args Namespace and numpy scalars in extra_state).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from _support.original_fixtures import FIXTURE_ROOT
from mega_plugin.cli import main
from mega_plugin.converters.checkpoint_file import load_checkpoint

FIXTURE_FILES = sorted(FIXTURE_ROOT.glob("*/*.pt"))


def same_content(left: Any, right: Any) -> bool:
    if isinstance(left, torch.Tensor):
        return isinstance(right, torch.Tensor) and left.dtype == right.dtype and torch.equal(left, right)
    if isinstance(left, dict):
        return isinstance(right, dict) and left.keys() == right.keys() and all(same_content(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)):
        return type(left) is type(right) and len(left) == len(right) and all(map(same_content, left, right))
    if hasattr(left, "__dict__") and not isinstance(left, type):
        return type(left) is type(right) and same_content(vars(left), vars(right))
    return bool(left == right)


def test_every_fixture_is_found() -> None:
    assert len(FIXTURE_FILES) >= 40, FIXTURE_FILES  # 10 setups x (3 fp32 layouts + fp16 + bf16)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FIXTURE_FILES])
def test_fixtures_load_safely_with_the_content_of_an_unrestricted_load(path: Path) -> None:
    safe = load_checkpoint(path)
    assert same_content(safe, torch.load(path, map_location="cpu", weights_only=False))
    extra = safe.get("extra_state") if isinstance(safe, dict) else None
    if extra is not None:  # numpy scalars came back as numpy scalars
        assert any(type(value).__module__ == "numpy" for value in _leaves(extra)), extra


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_other_objects_are_refused_without_trust(tmp_path: Path) -> None:
    path = tmp_path / "dated.pt"
    torch.save({"model": {"w": torch.ones(2)}, "saved_on": datetime.date(2022, 9, 21)}, path)
    with pytest.raises(ValueError, match=r"dated\.pt: weights_only loading refused .*--trust-checkpoint"):
        load_checkpoint(path)
    assert load_checkpoint(path, trust=True)["saved_on"] == datetime.date(2022, 9, 21)


@pytest.mark.parametrize("damage", ["truncated", "not-a-checkpoint", "directory", "missing"])
def test_unreadable_files_are_named(damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ckpt.pt"
    if damage == "truncated":
        whole = FIXTURE_FILES[0].read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "not-a-checkpoint":
        path.write_text("model: not a pickle\n")
    elif damage == "directory":
        path.mkdir()
    with pytest.raises(ValueError, match=str(path).replace(".", r"\.")):
        load_checkpoint(path)
    assert main(["convert", "--from", "fairseq-mega", str(path), "--to", "hf", str(tmp_path / "out")]) == 1
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
