"""Safe, clearly failing checkpoint loading through the HF adapter (transformers 4.57 and 5.x).

Each bad checkpoint must give ONE error that names the file and, where there is one, the
config field: the expected file and field are derived from how the checkpoint was damaged.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

pytestmark = pytest.mark.hf

transformers = pytest.importorskip("transformers")

from _support.configs import TINY  # noqa: E402

import mega_plugin  # noqa: E402,F401  (registers the Auto classes)
from mega_plugin.adapters.hf import MegaConfig, MegaForMaskedLM, MegaModel  # noqa: E402
from mega_plugin.adapters.hf.loading import CheckpointError, ConfigFileError  # noqa: E402


def _saved(tmp_path: Path, name: str = "ckpt", **overrides: Any) -> tuple[Path, MegaModel]:
    model = MegaModel(MegaConfig(**{**TINY, **overrides})).eval()
    model.save_pretrained(tmp_path / name, safe_serialization=True)
    return tmp_path / name, model


def _as_pickle_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Replace the safetensors weights by a ``pytorch_model.bin`` (what older checkpoints hold)."""
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")


def _edit_config(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = directory / "config.json"
    values = json.loads(path.read_text())
    edit(values)
    path.write_text(json.dumps(values))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, left), right in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(left, right, rtol=0, atol=0, msg=key)


def test_safetensors_are_preferred_over_a_pickle(tmp_path: Path) -> None:
    directory, model = _saved(tmp_path)
    # A .bin beside the safetensors holding different weights: it must not be read.
    other = {key: torch.zeros_like(value) for key, value in model.state_dict().items()}
    torch.save(other, directory / "pytorch_model.bin")
    _same_weights(MegaModel.from_pretrained(directory), model)


def test_pickle_checkpoint_loads_with_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory, model = _saved(tmp_path)
    _as_pickle_checkpoint(directory, model.state_dict())
    calls: list[Any] = []
    original = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    loaded = transformers.AutoModel.from_pretrained(directory)
    assert calls and all(flag is True for flag in calls), f"torch.load weights_only flags: {calls}"
    _same_weights(loaded, model)


class _WritesMarker:
    """Unpickling this would create a file: the proof that a pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    directory, model = _saved(tmp_path)
    marker = tmp_path / "pwned"
    _as_pickle_checkpoint(directory, {**model.state_dict(), "payload": _WritesMarker(marker)})
    with pytest.raises(CheckpointError) as caught:
        transformers.AutoModel.from_pretrained(directory)
    assert not marker.exists(), "the checkpoint's pickle ran code"
    assert str(directory / "pytorch_model.bin") in str(caught.value)
    assert "refused to unpickle" in str(caught.value)
    assert caught.value.path == directory / "pytorch_model.bin"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("file_name", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_weights_name_the_file(tmp_path: Path, file_name: str, damage: str) -> None:
    directory, model = _saved(tmp_path)
    if file_name == "pytorch_model.bin":
        _as_pickle_checkpoint(directory, model.state_dict())
    path = directory / file_name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint" * 8)
    with pytest.raises(CheckpointError) as caught:
        transformers.AutoModel.from_pretrained(directory)
    assert caught.value.path == path
    assert str(path) in str(caught.value) and "corrupt" in str(caught.value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden_size", "abc"),
        ("normalization_type", 5),
        ("num_hidden_layers", None),
        ("bidirectional", "false"),
        ("dropout_prob", 3),
        ("attention_activation", "tanh"),
    ],
    ids=lambda v: str(v),
)
def test_config_json_with_a_wrong_value_names_file_and_field(tmp_path: Path, field: str, value: Any) -> None:
    directory, _ = _saved(tmp_path)
    _edit_config(directory, lambda values: values.__setitem__(field, value))
    for load in (transformers.AutoModel.from_pretrained, MegaModel.from_pretrained):
        with pytest.raises(ConfigFileError) as caught:
            load(directory)
        assert caught.value.field == field
        assert caught.value.path == directory / "config.json"
        assert str(directory / "config.json") in str(caught.value) and field in str(caught.value)


def test_a_bad_config_object_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    directory, _ = _saved(tmp_path)
    config = MegaConfig.from_pretrained(directory)
    config.activation = "swish"
    with pytest.raises(ConfigFileError, match="config passed to from_pretrained: activation") as caught:
        MegaModel.from_pretrained(directory, config=config)
    assert caught.value.path is None


@pytest.mark.parametrize("field", ["hidden_size", "vocab_size", "intermediate_size", "nffn_hidden_size"])
def test_missing_config_field_is_named(tmp_path: Path, field: str) -> None:
    directory, _ = _saved(tmp_path)
    _edit_config(directory, lambda values: values.pop(field))
    with pytest.raises(CheckpointError) as caught:
        transformers.AutoModel.from_pretrained(directory)
    assert caught.value.field == field
    message = str(caught.value)
    assert str(directory / "model.safetensors") in message
    assert f"config.json has no {field}" in message
    assert f"default {getattr(MegaConfig(), field)!r} was used" in message


@pytest.mark.parametrize(
    "field, saved_value, config_value",
    [
        ("intermediate_size", 24, 32),
        ("ema_projection_size", 4, 6),
        ("shared_representation_size", 8, 12),
        ("num_hidden_layers", 2, 3),
        ("num_hidden_layers", 2, 1),
    ],
)
@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_shapes_that_do_not_match_the_config(
    tmp_path: Path, field: str, saved_value: int, config_value: int, weights: str
) -> None:
    directory, model = _saved(tmp_path, **{field: saved_value})
    if weights == "bin":
        _as_pickle_checkpoint(directory, model.state_dict())
    _edit_config(directory, lambda values: values.__setitem__(field, config_value))
    expected_file = directory / ("model.safetensors" if weights == "safetensors" else "pytorch_model.bin")
    with pytest.raises(CheckpointError) as caught:
        MegaForMaskedLM.from_pretrained(directory)
    assert caught.value.field == field and caught.value.path == expected_file
    assert f"{field}: the checkpoint has {saved_value}" in str(caught.value)
    assert f"the config says {config_value}" in str(caught.value)


def test_good_checkpoints_still_load_through_every_path(tmp_path: Path) -> None:
    directory, model = _saved(tmp_path)
    _same_weights(transformers.AutoModel.from_pretrained(directory), model)
    _same_weights(MegaModel.from_pretrained(directory, config=MegaConfig.from_pretrained(directory)), model)
    assert os.path.exists(directory / "model.safetensors")
    shutil.rmtree(directory)
